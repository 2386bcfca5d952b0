// RecallProbe: the live recall of the serving index. It keeps a uniform sample of the Recall
// queries of each interval (the user embedding, k and the exclusions), and every interval
// re-runs them through the serving index and through an exact search over the index's live
// items, and reports recall@k: the share of the exact top-k the index returns. An index's
// recall is measured offline when the version is tuned; online writes move it since (IVF lists
// drift from their centroids, HNSW insertions are greedier than the bulk build), and this shows
// by how much on the real queries.
//
// Sampling (RecallEngine calls Offer for every answered query): a reservoir of `capacity`
// queries per interval (Algorithm R, with a hash of the query's arrival number as the random
// draw), so the sample is uniform over the interval at any traffic. The hot path costs one
// atomic increment, a hash and a compare; a query is copied with probability capacity/n (the
// first `capacity` of each interval always). A probe takes the interval's sample; an interval
// without queries re-probes the previous sample (same model version only: the embeddings are
// the tower's).
//
// The exact search: the live ids (EmbeddingIndex::Ids), the vectors read back with
// ReconstructMany in chunks of `chunk_items` (one short shared hold of the index per chunk, so
// writes and searches interleave), scored against every sampled query with one matrix product
// per chunk (ATen, on the probe's thread), and a top-k per query honouring its exclusions (a
// score at or below the running k-th best costs one compare). Cost per probe at N items, Q
// queries, dim d: N Reconstructs + N*Q*d multiply-adds, plus the serving index's own search of
// the Q queries; measured at 1M items x 64 dims x 64 queries on 2 cores with one Reconstruct
// per item: 0.45 s of read-back (Ids included; ReconstructMany since, not re-measured), 0.1 s
// of matrix products. Memory: Q*chunk_items floats and the id list (8 bytes per item). The
// thread runs at the lowest CPU priority (SCHED_IDLE, else nice 19), and holds the probed
// version for the probe's duration. Indexes above max_items are not probed (a warning).
// "Exact" is over the stored vectors: for a lossy codec without ",RFlat" (HNSW32,SQ8,
// IVF..,PQ..) those are its reconstructions, so the probe measures what the search structure
// loses (graph, probing), not the codec's quantization.
//
// Recall counts ties: a returned item whose exact score reaches the k-th exact score counts as
// found. Writes that land during a probe (seconds at 1M items) may perturb it by the items they
// touch; Result::writes_during says whether any did.
//
// Thread-safety: all methods are thread-safe. Start/Stop from one thread.
#ifndef RECALL_SERVER_RECALL_PROBE_H_
#define RECALL_SERVER_RECALL_PROBE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "server/version_manager.h"

namespace recall::server {

class RecallProbe {
 public:
  struct Options {
    int capacity = 64;                            // queries sampled per interval
    absl::Duration interval = absl::Seconds(60);  // between probes of the Start() thread
    int chunk_items = 4096;                       // items read back and scored per step
    int64_t max_items = 20'000'000;               // larger indexes are not probed
  };
  struct Result {
    int64_t version = 0;     // the model version probed (0: none yet)
    double recall = -1;      // recall@k over every query's exact top-k; -1: none yet
    int64_t queries = 0;     // queries of the probe
    int64_t items = 0;       // live items scanned
    double seconds = 0;      // the probe's duration
    bool writes_during = false;  // the index changed while it ran
    absl::Time at = absl::InfinitePast();
  };

  explicit RecallProbe(const VersionManager* versions, Options options);
  RecallProbe(const VersionManager* versions) : RecallProbe(versions, Options()) {}
  ~RecallProbe();  // Stop()

  // One answered query of `version`: its user embedding, k and exclusions (any order, may
  // repeat). Cheap unless the query is taken into the sample.
  void Offer(int64_t version, absl::Span<const float> embedding, int k,
             absl::Span<const int64_t> excludes);

  // Probes the serving version now, on the calling thread (the Start() thread calls it every
  // interval; tests call it directly) and returns the result it published. With nothing to
  // probe (no sample of the serving version, or more than max_items items) nothing is
  // published and it returns last(), reset to "none yet" (recall -1) if that was another
  // version's. Unavailable before the first load; an index error as is.
  absl::StatusOr<Result> ProbeOnce();
  // The last published result (for GetIndexInfo; version 0 before the first probe).
  Result last() const;

  // Called with every published result (metrics). Set before Start.
  void set_on_probe(std::function<void(const Result&)> f) { on_probe_ = std::move(f); }

  // Starts the thread that probes every options.interval; Stop() joins it. Idempotent.
  void Start();
  void Stop();

  const Options& options() const { return options_; }

 private:
  struct Sample {
    int64_t version = 0;
    std::vector<float> embedding;
    int k = 0;
    std::vector<int64_t> excludes;  // sorted, unique
  };
  void Publish(const Result& r);

  const VersionManager* const versions_;
  const Options options_;
  std::function<void(const Result&)> on_probe_;

  // Queries offered since the last probe took the sample.
  std::atomic<uint64_t> offered_{0};
  mutable absl::Mutex mu_;
  std::vector<Sample> reservoir_ ABSL_GUARDED_BY(mu_);
  Result last_ ABSL_GUARDED_BY(mu_);

  absl::Mutex probe_mu_;  // one probe at a time
  std::vector<Sample> probed_ ABSL_GUARDED_BY(probe_mu_);  // the last probe's sample
  bool warned_too_big_ ABSL_GUARDED_BY(probe_mu_) = false;

  absl::Mutex thread_mu_;
  bool stop_ ABSL_GUARDED_BY(thread_mu_) = false;
  std::thread thread_;
};

}  // namespace recall::server

#endif  // RECALL_SERVER_RECALL_PROBE_H_
