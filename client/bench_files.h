// The request file and the exact top-K file of the load generators: `bench-requests` (bench/)
// writes them from a model version; `recall-bench` (gRPC) and `recall-inprocess-bench` (bench/)
// read them, so every target answers the same requests and is scored against the same exact
// answers. Reading them needs only proto/ (recall.v1 messages) and protobuf.
//
// Format of both files: a sequence of protobuf messages, each preceded by its byte length as a
// base-128 varint (protobuf's "delimited" framing: google::protobuf::util::
// SerializeDelimitedToOstream / ParseDelimitedFromZeroCopyStream in C++, writeDelimitedTo /
// parseDelimitedFrom in Java; in Python read the varint with
// google.protobuf.internal.decoder._DecodeVarint32, then ParseFromString). No header, no
// trailer; an empty file is an empty list.
//
//   request file   recall.v1.RecallRequest, one per request of the pool, in pool order. The load
//                  generators cycle through the pool.
//   top-K file     recall.v1.RecallResponse: message i is the exact answer to request i, for the
//                  first N requests of the pool (N <= pool size). request_id = request i's;
//                  model_version = the version it was computed on; items = the exact top k
//                  (k = request i's k, fewer only when fewer items are eligible) by descending
//                  inner product of the user tower's output with every item vector of that
//                  version, with the request's exclusions applied as the server applies them
//                  (exclude_item_ids, plus user.history_item_ids when exclude_history); score =
//                  that inner product. After those k come the further items whose score is
//                  within kTieTolerance of the k-th (ties at the boundary), so items_size() >= k
//                  is possible. user_embedding = the user tower's output.
//
// Recall@k of a served answer against the exact one (ScoreAnswer), as ann-benchmarks counts it:
// a served item is a hit when its exact score reaches the exact k-th score within
// kTieTolerance, i.e. when it is among the exact top k or tied with the k-th; so near-identical
// vectors at the boundary count whichever of them is returned. id recall: the plain share of
// the exact top-k ids returned (lower under ties).
#ifndef RECALL_CLIENT_BENCH_FILES_H_
#define RECALL_CLIENT_BENCH_FILES_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/bench_load.h"
#include "recall/v1/recall.pb.h"

namespace recall::bench {

inline constexpr float kTieTolerance = 1e-4f;

// Write (truncate) or read a whole file. Read errors: NotFound/PermissionDenied for an
// unopenable file, DataLoss (naming the message index) for a truncated or malformed one.
absl::Status WriteRequestFile(const std::string& path,
                              const std::vector<recall::v1::RecallRequest>& requests);
absl::StatusOr<std::vector<recall::v1::RecallRequest>> ReadRequestFile(const std::string& path);
absl::Status WriteTopKFile(const std::string& path,
                           const std::vector<recall::v1::RecallResponse>& exact);
absl::StatusOr<std::vector<recall::v1::RecallResponse>> ReadTopKFile(const std::string& path);

// FailedPrecondition unless `exact` answers a prefix of `pool`: no more messages than
// requests, and message i carries request i's request_id.
absl::Status CheckTopKMatchesRequests(const std::vector<recall::v1::RecallRequest>& pool,
                                      const std::vector<recall::v1::RecallResponse>& exact);

// The request pool of `requests_file` and, when `topk_file` is not empty, its exact answers,
// checked to match (CheckTopKMatchesRequests). Errors name the flag of the file at fault.
struct BenchInputs {
  std::vector<recall::v1::RecallRequest> pool;
  std::vector<recall::v1::RecallResponse> exact;  // empty without a top-K file
};
absl::StatusOr<BenchInputs> ReadBenchInputs(const std::string& requests_file,
                                            const std::string& topk_file);

// Recall@k and id recall@k (both in [0, 1]) of `served` against `exact` for top `k`. When no
// item was eligible (exact has none) an empty answer scores 1, any other 0.
struct AnswerScore {
  double recall = 0;
  double id_recall = 0;
};
AnswerScore ScoreAnswer(const recall::v1::RecallResponse& served,
                        const recall::v1::RecallResponse& exact, int k);

// Sends the first min(n, exact.size()) requests of `pool` to `target` one at a time and
// averages ScoreAnswer over them. `exact` must match `pool` (CheckTopKMatchesRequests).
// Unavailable (naming the status) when a call fails.
struct RecallResult {
  double recall = 0;
  double id_recall = 0;
  int queries = 0;
};
absl::StatusOr<RecallResult> RecallAgainstTopK(Target& target,
                                               const std::vector<recall::v1::RecallRequest>& pool,
                                               const std::vector<recall::v1::RecallResponse>& exact,
                                               int n);

}  // namespace recall::bench

#endif  // RECALL_CLIENT_BENCH_FILES_H_
