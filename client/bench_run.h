// One load-generator run as recall-bench (gRPC) and recall-inprocess-bench (bench/, the engine
// without network) both do it, so their JSON reads the same:
//
//   sweep   a closed-loop concurrency sweep (the best error-free point is max_qps), then open
//           loop at load_fractions of max_qps (not for the stream target), then the recall check
//   closed  the closed-loop points only (+ recall check)
//   open    one open-loop run at `rate` (+ recall check)
//   recall  only the recall check: the first recall_queries requests one at a time, scored
//           against the exact top-K file (client/bench_files.h)
//
// The recall check is skipped when there is no top-K file, when recall_queries is 0, and when
// background writes were configured (the index changes under the check).
#ifndef RECALL_CLIENT_BENCH_RUN_H_
#define RECALL_CLIENT_BENCH_RUN_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/bench_load.h"
#include "recall/v1/recall.pb.h"

namespace recall::bench {

struct RunOptions {
  std::string tool = "recall-bench";  // names the progress lines on stderr
  std::string mode = "sweep";
  std::vector<int> concurrency;
  std::vector<double> load_fractions;
  double rate = 1000;
  double duration_s = 10;
  double warmup_s = 2;
  int max_outstanding = 20000;
  int recall_queries = 300;
  // Closed loops over RecallStream streams to stream_addr instead of calls of the target (the
  // target still answers the recall check).
  bool stream = false;
  std::string stream_addr;
  int stream_channels = 4;
  // Background writes during the open-loop runs: started before the first, stopped after the
  // last (empty = none).
  std::function<std::unique_ptr<UpsertLoad>()> start_writes;
};

// The JSON object's leading fields.
struct RunHeader {
  std::string target;  // "grpc", "stream", "inprocess"
  std::string addr;    // empty in-process
  int64_t model_version = 0;
  int64_t items = 0;
};

// The positive numbers of a comma-separated list (others are skipped).
std::vector<int> ParsePositiveInts(const std::string& list);
std::vector<double> ParsePositiveDoubles(const std::string& list);
// This process's CPUs (affinity), e.g. "0,1".
std::string AffinityString();

// Runs `options.mode` against `target` over `pool` and returns one JSON object (no newline):
// target, addr, model_version, items, k (of the first request), history ([shortest, longest]
// history of the pool), bench_cpus, closed_loop + max_qps + max_qps_concurrency (sweep,
// closed), open_loop (sweep, open), upserts_per_sec, upsert_failed_calls, writes_per_sec,
// upserted_items, replaced_items, deleted_ids, deleted_present, delete_failed_calls (when
// writes ran), recall_at_k + id_recall_at_k (when checked). `exact` may be null (no top-K
// file). Progress lines go to stderr. InvalidArgument for an unknown mode or an empty pool.
absl::StatusOr<std::string> RunBench(const RunOptions& options, const RunHeader& header,
                                     Target& target,
                                     const std::vector<recall::v1::RecallRequest>& pool,
                                     const std::vector<recall::v1::RecallResponse>* exact);

}  // namespace recall::bench

#endif  // RECALL_CLIENT_BENCH_RUN_H_
