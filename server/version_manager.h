// VersionManager: owns the serving model version and swaps in newer ones.
//
// Policy ("aspired versions", like TF Serving): serve the newest valid version under
// model_base. A candidate is loaded and warmed on the manager's own thread, then swapped in
// atomically; requests hold a std::shared_ptr (the pin), so the old version is released when the
// last request using it ends. A directory that fails verification is logged with the file it
// names and skipped; the server keeps serving what it has.
//
// Thread-safety: all methods are thread-safe.
#ifndef RECALL_SERVER_VERSION_MANAGER_H_
#define RECALL_SERVER_VERSION_MANAGER_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
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

class VersionManager {
 public:
  struct Options {
    std::string model_base;
    int ef_search = 0;  // 0 = index default
  };
  explicit VersionManager(Options options);
  ~VersionManager();

  // Loads the newest valid version (trying older ones when newer ones fail verification).
  // NotFound if no valid version exists.
  absl::Status LoadNewest();

  // Starts a thread that calls LoadNewest-if-newer every `interval`; Stop() joins it.
  void StartPolling(absl::Duration interval);
  void Stop();

  // The pinned servable for one request (nullptr before the first successful load).
  std::shared_ptr<Servable> Current() const;

  // Called after every swap (for metrics, health); set before StartPolling.
  void set_on_swap(std::function<void(const Servable&)> f) { on_swap_ = std::move(f); }

  // Loads + warms one version directory. Exposed for tests and tools.
  static absl::StatusOr<std::shared_ptr<Servable>> LoadServable(const std::string& dir,
                                                                int ef_search);

 private:
  absl::Status LoadNewerThan(int64_t current);

  const Options options_;
  mutable absl::Mutex mu_;
  std::shared_ptr<Servable> current_ ABSL_GUARDED_BY(mu_);
  // Versions that failed to load, so polling does not retry (and re-log) them every interval.
  absl::flat_hash_map<int64_t, std::string> failed_ ABSL_GUARDED_BY(mu_);
  std::function<void(const Servable&)> on_swap_;
  absl::Mutex poll_mu_;
  bool stop_ ABSL_GUARDED_BY(poll_mu_) = false;
  std::thread poller_;
};

}  // namespace recall::server

#endif  // RECALL_SERVER_VERSION_MANAGER_H_
