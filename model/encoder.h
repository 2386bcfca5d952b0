// FeatureEncoder: the one place where raw user/item features become tower input tensors.
// Trainer and server both encode through it, so the two cannot drift.
//
// Tower signatures (TorchScript `forward`), fixed by the feature spec, not by the architecture:
//   user_tower.forward(user_id  int64[B], history int64[B,L], history_mask float32[B,L],
//                      categorical int64[B,Cu], numeric float32[B,Nu]) -> float32[B,dim]
//   item_tower.forward(item_id int64[B], categorical int64[B,Ci], numeric float32[B,Ni])
//                      -> float32[B,dim]
// Id rows: vocabulary rank + 1, or a stable hash bucket when the spec has no vocabulary; row 0
// is the OOV row. History pads with row 0 and mask 0; unknown history items are dropped (mask 0)
// rather than pooled as OOV. Categorical feature f with B_f buckets occupies rows
// [offset_f, offset_f + B_f] of one shared table (offset_f = sum over earlier features of
// B+1), its row offset_f meaning "missing". Numeric values are standardized; missing -> 0.
//
// Immutable after Create: thread-safe.
#ifndef RECALL_MODEL_ENCODER_H_
#define RECALL_MODEL_ENCODER_H_

// The tensor and IValue types only: the whole LibTorch front end (torch/torch.h) takes 15 s to
// parse, and most users of this header never build a tensor.
#include <ATen/core/Tensor.h>
#include <ATen/core/ivalue.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "model/vocabulary.h"
#include "recall/v1/model.pb.h"
#include "recall/v1/recall.pb.h"

namespace recall {

struct UserBatch {
  // Zero-filled tensors for b users (history rows 0 = padding, mask 0).
  static UserBatch Allocate(int64_t b, int64_t history_length, int64_t num_categorical,
                            int64_t num_numeric);
  at::Tensor user_id, history, history_mask, categorical, numeric;
  int64_t size() const { return user_id.size(0); }
  std::vector<c10::IValue> Inputs() const {
    return {user_id, history, history_mask, categorical, numeric};
  }
};

struct ItemBatch {
  // Zero-filled tensors for b items; audience_length > 0 adds the audience inputs (user rows,
  // 0 = padding, mask 0) of a spec with item_audience_length, neighbor_length > 0 the
  // neighbour inputs (item rows) of a spec with item_neighbor_length.
  static ItemBatch Allocate(int64_t b, int64_t num_categorical, int64_t num_numeric,
                            int64_t audience_length = 0, int64_t neighbor_length = 0);
  at::Tensor item_id, categorical, numeric;
  at::Tensor audience, audience_mask;    // undefined without an audience input
  at::Tensor neighbors, neighbors_mask;  // undefined without a neighbour input
  int64_t size() const { return item_id.size(0); }
  // In the item tower's argument order (FeatureSpec.item_neighbor_length).
  std::vector<c10::IValue> Inputs() const {
    std::vector<c10::IValue> in{item_id};
    if (audience.defined()) {
      in.emplace_back(audience);
      in.emplace_back(audience_mask);
    }
    if (neighbors.defined()) {
      in.emplace_back(neighbors);
      in.emplace_back(neighbors_mask);
    }
    in.emplace_back(categorical);
    in.emplace_back(numeric);
    return in;
  }
};

// One user resolved to table rows: what the trainer precomputes once per dataset and a request
// resolves from its features. EncodeUserRows writes UserBatch's layout from it, the one place
// that layout is written.
struct UserRows {
  int64_t id = 0;                         // row of the user id table
  absl::Span<const int64_t> history;      // item rows, most recent last; past the width: dropped
  absl::Span<const int64_t> categorical;  // one row per categorical feature of the spec
  absl::Span<const float> numeric;        // standardized, one per numeric feature (0 = missing)
};
// The same for an item; audience (user rows) and neighbours (item rows) past their widths are
// dropped.
struct ItemRows {
  int64_t id = 0;
  absl::Span<const int64_t> audience;
  absl::Span<const int64_t> neighbors;
  absl::Span<const int64_t> categorical;
  absl::Span<const float> numeric;
};

// Checks a spec for internal consistency (names unique, buckets >= 1, std > 0, ...).
absl::Status ValidateFeatureSpec(const recall::v1::FeatureSpec& spec);

class FeatureEncoder {
 public:
  // Vocabularies may be empty, in which case the spec's num_buckets hashing is used.
  static absl::StatusOr<std::shared_ptr<const FeatureEncoder>> Create(
      const recall::v1::FeatureSpec& spec, Vocabulary user_vocab, Vocabulary item_vocab);

  const recall::v1::FeatureSpec& spec() const { return spec_; }
  int history_length() const { return spec_.history_length(); }

  // --- Row-level primitives (used directly by the trainer's hot loop). ---
  int64_t UserRow(int64_t user_id) const;
  int64_t ItemRow(int64_t item_id) const;
  // Rows in the user/item id embedding tables, including the OOV row 0.
  int64_t num_user_rows() const;
  int64_t num_item_rows() const;
  // Row of value `value` of user/item categorical feature `f` (index into the spec's list);
  // "" (missing) maps to the feature's own row 0.
  int64_t UserCategoricalRow(int f, absl::string_view value) const;
  int64_t ItemCategoricalRow(int f, absl::string_view value) const;
  int64_t num_user_categorical_rows() const { return user_cat_total_; }
  int64_t num_item_categorical_rows() const { return item_cat_total_; }
  float NormalizeUserNumeric(int f, float x) const;
  float NormalizeItemNumeric(int f, float x) const;

  // --- Request-level validation and encoding (server). Messages name the offending field. ---
  // max_history: longer histories are rejected (those <= max_history but longer than the
  // spec's history_length keep their most recent history_length items).
  absl::Status ValidateUser(const recall::v1::UserFeatures& user, int max_history,
                            absl::string_view field_prefix = "user") const;
  absl::Status ValidateItem(const recall::v1::ItemFeatures& item,
                            absl::string_view field_prefix = "item") const;
  // Encodes already-validated features.
  UserBatch EncodeUsers(absl::Span<const recall::v1::UserFeatures* const> users) const;
  ItemBatch EncodeItems(absl::Span<const recall::v1::ItemFeatures* const> items) const;

  // --- Row-level encoding (both of the above, and the trainer's batches). ---
  // Users with history width spec().history_length().
  UserBatch EncodeUserRows(absl::Span<const UserRows> users) const;
  // Items with audience and neighbour inputs of these widths (0: none); training samples a
  // narrower audience than evaluation and export (spec().item_audience_length()).
  ItemBatch EncodeItemRows(absl::Span<const ItemRows> items, int64_t audience_length,
                           int64_t neighbor_length) const;

 private:
  FeatureEncoder() = default;
  static int64_t IdRow(const Vocabulary& vocab, const recall::v1::IdFeatureSpec& spec,
                       int64_t id);

  recall::v1::FeatureSpec spec_;
  Vocabulary user_vocab_, item_vocab_;
  std::vector<int64_t> user_cat_offset_, item_cat_offset_;
  int64_t user_cat_total_ = 0, item_cat_total_ = 0;
  absl::flat_hash_map<std::string, int> user_cat_index_, user_num_index_;
  absl::flat_hash_map<std::string, int> item_cat_index_, item_num_index_;
};

}  // namespace recall

#endif  // RECALL_MODEL_ENCODER_H_
