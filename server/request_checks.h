// Request checks: the validation RecallEngine applies to Recall / UpsertItems / DeleteItems
// requests that needs no index, no tower and no version manager, as pure functions. RecallEngine
// calls exactly these; the request fuzzer (tests/fuzz/request_fuzzer.cc) calls them too, so it
// exercises the server's real checks rather than a copy.
//
// Contract: every function returns OkStatus when the request passes, otherwise an
// InvalidArgument status whose message starts with the path of the first offending field
// ("k: ...", "items[2].vector.values: ...", "item_ids[3]: ..."); it is returned to the caller
// unchanged, so the messages are part of the API. Checks run in a fixed order and the first
// failure is returned. The functions read only their arguments (and write only the optional
// output argument): they never modify the request and keep no state.
//
// Thread-safety: all functions are thread-safe (pure; FeatureEncoder's const methods are
// thread-safe too), and may be called concurrently on the same request.
#ifndef RECALL_SERVER_REQUEST_CHECKS_H_
#define RECALL_SERVER_REQUEST_CHECKS_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "model/encoder.h"
#include "recall/v1/recall.pb.h"

namespace recall::server {

// Size limits of a request. recall-server sets max_k and max_history from its flags
// (--max_k, --max_history); the other two keep these defaults.
struct EngineLimits {
  int max_k = 1000;
  int max_history = 1000;        // longer histories are rejected (the spec's length is used)
  int max_excludes = 10000;
  int max_upsert_batch = 10000;  // items per UpsertItems / DeleteItems call
};

// The item id the index reserves (EmbeddingIndex::kReservedId, FAISS's "no result" label): it
// never names an item, so a request that carries it is refused wherever an item id appears.
inline constexpr int64_t kReservedItemId = -1;

// request_id is only echoed back; the bound keeps a caller from doubling a reply's size with it.
inline constexpr size_t kMaxRequestIdBytes = 1024;

// A raw vector's L2 norm may differ from 1 by this much. Float32 rounding of a normalized
// 64..1024-dim vector stays below 1e-5; 1e-3 accepts any honest normalization (also one done
// in half precision) while refusing a vector that was never normalized, whose inner products
// would not be comparable with the other items' scores.
inline constexpr double kRawVectorNormTolerance = 1e-3;

// The checks of a RecallRequest that do not depend on the model version, in this order:
// k in [1, limits.max_k]; at most limits.max_excludes exclude_item_ids; no kReservedItemId in
// exclude_item_ids, then in user.history_item_ids (repeats and unknown ids are allowed);
// request_id at most kMaxRequestIdBytes bytes.
absl::Status ValidateRecallRequest(const recall::v1::RecallRequest& req,
                                   const EngineLimits& limits);

// The checks of a RecallRequest's user features against the serving model's encoder
// (FeatureEncoder::ValidateUser with limits.max_history). Run after ValidateRecallRequest; a
// request that passes both may be encoded with enc.EncodeUsers.
absl::Status ValidateRecallUser(const recall::v1::RecallRequest& req, const EngineLimits& limits,
                                const FeatureEncoder& enc);

// The longest idempotency key an UpsertItems / DeleteItems request may carry (it becomes the
// write log's de-duplication id, e.g. JetStream's Nats-Msg-Id header).
inline constexpr size_t kMaxWriteRequestIdBytes = 256;

// The checks of an UpsertItemsRequest that need no model: items is non-empty and holds at most
// limits.max_upsert_batch entries; request_id is at most kMaxWriteRequestIdBytes bytes.
absl::Status ValidateUpsertBatch(const recall::v1::UpsertItemsRequest& req,
                                 const EngineLimits& limits);

// Every check of an UpsertItemsRequest against the serving model: ValidateUpsertBatch, then each
// item in order: it has a payload; features pass enc.ValidateItem; a raw vector has
// model_version == serving_version (checked first: another model usually has another dim too),
// exactly `dim` values, all finite, with an L2 norm within kRawVectorNormTolerance of 1 (score
// offset coordinates left out: every score_offset_stride-th when > 0, the manifest's field); its
// item_id is not kReservedItemId and appears only once in the request. Nothing is checked
// against the index (an upsert of an unknown id inserts it).
//
// On success, when feature_items is not null, it is set to the items sent as features, in
// request order, ready for enc.EncodeItems (pointers into `req`). On failure its contents are
// unspecified.
absl::Status ValidateUpsertRequest(
    const recall::v1::UpsertItemsRequest& req, const EngineLimits& limits,
    const FeatureEncoder& enc, int dim, int score_offset_stride, int64_t serving_version,
    std::vector<const recall::v1::ItemFeatures*>* feature_items = nullptr);

// Every check of a DeleteItemsRequest: item_ids is non-empty, holds at most
// limits.max_upsert_batch ids, none is kReservedItemId and none repeats (a repeat would make
// `deleted` ambiguous); request_id is at most kMaxWriteRequestIdBytes bytes. Unknown ids are
// allowed (they are simply not present).
absl::Status ValidateDeleteRequest(const recall::v1::DeleteItemsRequest& req,
                                   const EngineLimits& limits);

// A raw vector at request field `field`: model_version == serving_version, `dim` finite values,
// L2 norm within kRawVectorNormTolerance of 1 over the coordinates that are not score offsets
// (every score_offset_stride-th, when > 0). Part of ValidateUpsertRequest; the write applier
// uses it to decide whether a logged vector applies to the version it serves.
absl::Status ValidateRawVector(const recall::v1::RawVector& v, const std::string& field, int dim,
                               int score_offset_stride, int64_t serving_version);

// The checks of an upsert as the write log carries it that hold for every model version:
// ValidateUpsertBatch, then every item has a payload, its id is not kReservedItemId and appears
// once. A logged upsert that passes is folded; whether each item applies to the serving model
// (its features' names, a raw vector's version and dim) is decided when it is applied.
absl::Status ValidateLoggedUpsert(const recall::v1::UpsertItemsRequest& req,
                                  const EngineLimits& limits);

}  // namespace recall::server

#endif  // RECALL_SERVER_REQUEST_CHECKS_H_
