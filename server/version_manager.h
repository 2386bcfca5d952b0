// VersionManager: owns the serving model version and swaps in others.
//
// Policy ("aspired versions", like TF Serving): serve the pinned version if one is pinned
// (SetServingVersion = rollback), else the newest valid version under model_base. A candidate
// is loaded and warmed (synthetic requests through both towers and the index) by the caller of
// Reconcile -- the polling thread or an admin RPC, never a request thread -- and only then
// installed. Requests hold a std::shared_ptr (the pin), so the old version is released when the
// last request using it ends; loading never takes a lock a request needs. A directory that fails
// verification is logged with the file it names, remembered as invalid and skipped; the server
// keeps serving what it has.
//
// Installation goes through an installer hook so the online-write store can re-apply every
// acknowledged write to the candidate and swap it in under its write barrier (no write lands
// on the old version only).
//
// Thread-safety: all methods are thread-safe. Loads are serialized (one at a time).
#ifndef RECALL_SERVER_VERSION_MANAGER_H_
#define RECALL_SERVER_VERSION_MANAGER_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "index/embedding_index.h"
#include "model/model_version.h"

namespace recall::server {

// One loaded version: towers + encoder + its live item index. The index is mutated in place by
// online writes (it is internally synchronized); everything else is immutable.
struct Servable {
  std::unique_ptr<ModelVersion> model;
  std::unique_ptr<EmbeddingIndex> index;
  int64_t version() const { return model->version(); }
};

// Search parameters of an index by name ("efSearch", "nprobe", "k_factor"), in the order given.
using IndexParams = std::vector<std::pair<std::string, double>>;

// Parses the operator's override, --index_params: "name=value[,name=value...]" (whitespace
// around elements ignored; "" -> none). Names are those EmbeddingIndex::SetSearchParameter
// knows: efSearch and nprobe take an integer >= 1, k_factor a number >= 1. InvalidArgument
// naming the element for a syntax error, an unknown or repeated name or a bad value.
absl::StatusOr<IndexParams> ParseIndexParams(absl::string_view text);
// "efSearch=128, nprobe=16" ("-" for none), values in shortest form.
std::string FormatIndexParams(const IndexParams& params);

// What ListVersions reports for one directory under model_base.
struct VersionStatus {
  int64_t version = 0;
  std::string state;  // "serving", "available", "invalid: <reason>"
  recall::v1::ModelManifest manifest;  // empty when the manifest cannot be read
};

class VersionManager {
 public:
  struct Options {
    std::string model_base;  // required
    // Deprecated alias of index_params {{"efSearch", ef_search}} (0 = none, the default); kept
    // so {model_base, ef_search, keep_versions} initializers still compile. Naming efSearch in
    // both is an error of the constructor's caller (ResolvedIndexParams refuses it).
    int ef_search = 0;
    int keep_versions = 0;  // newest N version dirs kept on disk after a swap (0 = keep all)
    // The operator's search parameters (--index_params; default none), set on every loaded
    // index after the manifest's index_search_params. A name the loaded kind does not have
    // (nprobe on an HNSW index) is logged as a warning and skipped: the override outlives
    // versions of other kinds.
    IndexParams index_params = {};
  };
  // options.index_params with the ef_search alias folded in; InvalidArgument if both name
  // efSearch or a value is out of range (the same checks as ParseIndexParams).
  static absl::StatusOr<IndexParams> ResolvedIndexParams(const Options& options);
  // Installs `candidate`: must call `swap()` exactly once to make it current (after whatever
  // preparation it needs), or return an error and not call it.
  using Installer =
      std::function<absl::Status(Servable& candidate, const std::function<void()>& swap)>;

  explicit VersionManager(Options options);
  ~VersionManager();

  // Brings the serving version in line with the policy: loads the pinned version, or the
  // newest valid one (trying older ones when newer ones fail verification; never going
  // backwards unless pinned). OK when already serving the target. NotFound if no valid
  // version exists; the status of the failed load for a pinned version.
  absl::Status Reconcile();
  absl::Status LoadNewest() { return Reconcile(); }

  // Pins `version` and loads it (0 = unpin and follow the newest). On failure the previous
  // pin and serving version stay. NotFound for a version not on disk.
  absl::Status SetServingVersion(int64_t version);
  int64_t pinned_version() const;

  // Every version directory on disk, ascending.
  std::vector<VersionStatus> List() const;

  // Starts a thread that calls Reconcile every `interval`; Stop() joins it.
  void StartPolling(absl::Duration interval);
  void Stop();

  // The pinned servable for one request (nullptr before the first successful load).
  std::shared_ptr<Servable> Current() const;
  int64_t serving_version() const;

  // Hooks; set before the first load.
  void set_installer(Installer f) { installer_ = std::move(f); }
  // After every swap (metrics, health).
  void set_on_swap(std::function<void(const Servable&)> f) { on_swap_ = std::move(f); }
  // After every load attempt: success or not, and its duration in seconds.
  void set_on_load(std::function<void(bool ok, double seconds)> f) { on_load_ = std::move(f); }
  // Pruning asks it which versions others still need (a replica set: the cluster pin and
  // every replica's serving version); those are never deleted, and an error skips pruning.
  using PruneGuard = std::function<absl::StatusOr<std::vector<int64_t>>()>;
  void set_prune_guard(PruneGuard f) { prune_guard_ = std::move(f); }

  // Loads + warms one version directory: the index gets the manifest's index_search_params
  // (an error in one refuses the version, naming it), then `overrides` (names the kind lacks
  // are skipped with a warning; see Options::index_params). Exposed for tests and tools.
  static absl::StatusOr<std::shared_ptr<Servable>> LoadServable(const std::string& dir,
                                                                const IndexParams& overrides);

  const Options& options() const { return options_; }

 private:
  // Loads, installs and swaps to `version`. Requires load_mu_.
  absl::Status LoadAndInstall(int64_t version) ABSL_EXCLUSIVE_LOCKS_REQUIRED(load_mu_);
  absl::Status ReconcileLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(load_mu_);
  // Deletes version dirs beyond the newest keep_versions (never the serving or pinned one, nor
  // one the prune guard names).
  void RemoveOldVersions();

  const Options options_;
  // ResolvedIndexParams(options_); if that failed, every load fails with its status.
  absl::StatusOr<IndexParams> index_params_;
  Installer installer_;
  std::function<void(const Servable&)> on_swap_;
  std::function<void(bool, double)> on_load_;
  PruneGuard prune_guard_;

  absl::Mutex load_mu_;  // serializes loads; never held by requests
  mutable absl::Mutex mu_;
  std::shared_ptr<Servable> current_ ABSL_GUARDED_BY(mu_);
  int64_t pinned_ ABSL_GUARDED_BY(mu_) = 0;
  // Versions that failed to load, so polling does not retry (and re-log) them every interval.
  absl::flat_hash_map<int64_t, std::string> failed_ ABSL_GUARDED_BY(mu_);

  absl::Mutex poll_mu_;
  bool stop_ ABSL_GUARDED_BY(poll_mu_) = false;
  std::thread poller_;
};

}  // namespace recall::server

#endif  // RECALL_SERVER_VERSION_MANAGER_H_
