// RecallEngine: the request logic of RecallService, free of gRPC so it can be tested and
// benchmarked in-process. Validation errors are InvalidArgument with a message that names the
// field (the checks are those of server/request_checks.h); a missing model is Unavailable.
//
// Thread-safety: all methods are thread-safe; each request pins the serving version for its
// whole duration.
#ifndef RECALL_SERVER_RECALL_ENGINE_H_
#define RECALL_SERVER_RECALL_ENGINE_H_

#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "recall/v1/recall.pb.h"
#include "server/metrics.h"
#include "server/online_writes.h"
#include "server/recall_probe.h"
#include "server/request_checks.h"  // EngineLimits, the request checks
#include "server/version_manager.h"

namespace recall::server {

// Per-stage latencies of one Recall (or of the batch it was part of), for metrics.
struct RecallTimings {
  double queue_sec = 0, encode_sec = 0, tower_sec = 0, search_sec = 0;
};

class RecallEngine {
 public:
  // `writes` (may be null: in-process use without durability) logs every upsert/delete before
  // it is applied and acknowledged.
  RecallEngine(VersionManager* versions, EngineLimits limits, OnlineWrites* writes = nullptr)
      : versions_(versions), limits_(limits), writes_(writes) {}

  absl::Status Recall(const recall::v1::RecallRequest& req, recall::v1::RecallResponse* resp,
                      RecallTimings* timings = nullptr) const;
  // n requests answered together: one pinned version, one encode, one user-tower forward and
  // one index search for all of them, each with its own k and exclusions. statuses[i] is the
  // outcome of request i alone (an invalid request fails by itself; the others are answered).
  // The index is searched with the largest k of the batch and each answer cut to its own k, so
  // an approximate index may answer a small-k request slightly better than alone, never worse.
  void RecallBatch(absl::Span<const recall::v1::RecallRequest* const> reqs,
                   absl::Span<recall::v1::RecallResponse* const> resps,
                   absl::Span<absl::Status> statuses, RecallTimings* timings = nullptr) const;
  // Online writes: validated against the serving model, then logged and applied through
  // `writes` (returns once applied here; `deadline` bounds the wait), or applied to the live
  // index directly when there is no write store.
  absl::Status UpsertItems(const recall::v1::UpsertItemsRequest& req,
                           recall::v1::UpsertItemsResponse* resp,
                           absl::Time deadline = absl::InfiniteFuture()) const;
  absl::Status DeleteItems(const recall::v1::DeleteItemsRequest& req,
                           recall::v1::DeleteItemsResponse* resp,
                           absl::Time deadline = absl::InfiniteFuture()) const;
  absl::Status GetIndexInfo(const recall::v1::GetIndexInfoRequest& req,
                            recall::v1::GetIndexInfoResponse* resp) const;
  absl::Status GetIndexInfo(recall::v1::GetIndexInfoResponse* resp) const {
    return GetIndexInfo(recall::v1::GetIndexInfoRequest(), resp);
  }

  // Read-your-writes: runs done(OK) once every online write up to `min_write_sequence` is
  // applied here (at once when it is, or when there is no write store), else done(Unavailable
  // naming both sequences) at `deadline`. done may run on another thread; keep it cheap.
  void WhenApplied(uint64_t min_write_sequence, absl::Time deadline,
                   std::function<void(absl::Status)> done) const;

  // Live items in the serving index (0 before the first load).
  int64_t LiveItems() const;
  // Sets the index size gauges (live and hidden items) from the serving version.
  void ReportIndexSize(Metrics* metrics) const;

  // The live recall probe (nullable; set before serving): every answered query is offered to
  // its sample, and GetIndexInfo reports its last result.
  void set_recall_probe(RecallProbe* probe) { probe_ = probe; }

  const EngineLimits& limits() const { return limits_; }

 private:
  absl::StatusOr<std::shared_ptr<Servable>> Pin() const;

  VersionManager* const versions_;
  const EngineLimits limits_;
  OnlineWrites* const writes_;
  RecallProbe* probe_ = nullptr;
};

}  // namespace recall::server

#endif  // RECALL_SERVER_RECALL_ENGINE_H_
