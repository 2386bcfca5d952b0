// ExampleBatches: what training, validation and evaluation feed the towers, encoded by model/'s
// one FeatureEncoder (the layout the server sends). It owns the data side of a run: the
// validation split held out of train, the feature spec and encoder, every entity's
// precomputed encoder rows, and the item graphs (audiences, co-occurrence neighbours) of the
// full train split (evaluation, export) and of the fit split (training, validation).
//
// Random draws (history subsets, dropout, audience subsets, SSL masks) come from each row's
// own stream (trainer/row_draws.h), keyed by the caller: a row draws the same whatever batch or
// rank it is in.
//
// Thread-safety: const methods may be called concurrently; the object is immutable after Create.
#ifndef RECALL_TRAINER_EXAMPLE_BATCHES_H_
#define RECALL_TRAINER_EXAMPLE_BATCHES_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "model/encoder.h"
#include "recall/v1/model.pb.h"
#include "recall/v1/train_config.pb.h"
#include "trainer/dataset.h"
#include "trainer/row_draws.h"

namespace recall::trainer {

class ExampleBatches {
 public:
  // Holds validation out of `dataset` (config.validation_users), builds the spec and encoder
  // and precomputes rows and graphs. `dataset` must outlive the object. InvalidArgument for a
  // dataset without users, items or two train interactions.
  static absl::StatusOr<std::unique_ptr<ExampleBatches>> Create(
      const Dataset& dataset, const recall::v1::TrainConfig& config);

  const Dataset& dataset() const { return dataset_; }
  // What training fits: the dataset less the validation pairs (the dataset without validation).
  const Dataset& fit() const { return *fit_; }
  bool has_validation() const { return fit_split_ != nullptr; }
  const FeatureEncoder& encoder() const { return *encoder_; }
  const recall::v1::FeatureSpec& spec() const { return encoder_->spec(); }
  // The fit split's (user, item) train pairs, by user.
  std::vector<std::pair<int64_t, int64_t>> TrainExamples() const;

  // Training users: each with a uniform subset of its other fit-split train items as history
  // (never items[r], its own target), history and id dropout as configured.
  // row_keys: one per row.
  UserBatch TrainUserBatch(const std::vector<int64_t>& users, const std::vector<int64_t>& items,
                           const std::vector<uint64_t>& row_keys) const;
  // Users as the server encodes a request: id and the last history_length train items of the
  // full dataset.
  UserBatch EvalUserBatch(const std::vector<int64_t>& users) const;
  // The same with `source`'s train items (the fit split's for validation).
  UserBatch HistoryUserBatch(const Dataset& source, const std::vector<int64_t>& users) const;

  // Training items: a fresh uniform audience subset from the fit split, never users[r] for the
  // first users.size() items (their own example's user, which would give the positive away;
  // -1 excludes nobody), plus the fit split's neighbours.
  // row_keys: one per item row.
  ItemBatch TrainItemBatch(const std::vector<int64_t>& items, const std::vector<int64_t>& users,
                           const std::vector<uint64_t>& row_keys) const;
  // Items with their evaluation audience and neighbours (the full train split's): evaluation
  // and export.
  ItemBatch ItemBatchFor(const std::vector<int64_t>& items) const;
  // The same over the fit split's graph: validation.
  ItemBatch FitItemBatch(const std::vector<int64_t>& items) const;
  // Items with the fit split's fixed audience prefix of the training width: MoCo keys and the
  // full softmax's catalog.
  ItemBatch KeyItemBatch(const std::vector<int64_t>& items) const;
  // The audience width of evaluation, validation and export (FeatureSpec.item_audience_length).
  int64_t eval_audience_length() const { return spec().item_audience_length(); }

  // Masked views for the SSL losses: ids, categorical and numeric features, history (audience,
  // neighbours) masked with probability ssl_mask_prob; row r draws from (row_keys[r], view).
  UserBatch MaskedView(const UserBatch& b, const std::vector<uint64_t>& row_keys,
                       DrawPurpose view) const;
  ItemBatch MaskedView(const ItemBatch& b, const std::vector<uint64_t>& row_keys,
                       DrawPurpose view) const;

 private:
  // What the item tower pools besides an item's own features, from one split's train
  // interactions (dense ids). Each list is empty without its input.
  struct ItemGraph {
    // Per item, its train users in a seeded random order: the first audience length of them
    // are its evaluation audience.
    std::vector<std::vector<int64_t>> audience;
    // Per item, its item_neighbor_length strongest co-occurrence neighbours, strongest first.
    std::vector<std::vector<int64_t>> neighbors;
  };

  ExampleBatches(const Dataset& d, const recall::v1::TrainConfig& c) : dataset_(d), config_(c) {}
  void PrecomputeRows();
  void BuildGraphs();
  // Encodes users (id, categorical, numeric) with the history items `pick_history(row, user,
  // &items)` chooses; the first history_length of them are used.
  UserBatch UserBatchWith(
      const std::vector<int64_t>& users,
      const std::function<void(int64_t, int64_t, std::vector<int64_t>*)>& pick_history) const;
  // Items with the fixed `audience` and `neighbors` lists (an ItemGraph's); an empty list
  // leaves that input as padding.
  ItemBatch ItemBatchWith(const std::vector<int64_t>& items,
                          const std::vector<std::vector<int64_t>>& audience,
                          const std::vector<std::vector<int64_t>>& neighbors,
                          int64_t audience_length) const;
  // Items through the encoder with `audience_rows` (user rows per batch row; empty: none) and
  // the `neighbors` lists (dense ids per item; empty: none).
  ItemBatch EncodeItems(const std::vector<int64_t>& items,
                        const std::vector<std::vector<int64_t>>& audience_rows,
                        const std::vector<std::vector<int64_t>>& neighbors,
                        int64_t audience_length) const;

  const Dataset& dataset_;
  const recall::v1::TrainConfig config_;
  std::unique_ptr<Dataset> fit_split_;  // dataset_ with the validation items moved to test
  const Dataset* fit_ = nullptr;
  std::shared_ptr<const FeatureEncoder> encoder_;
  // Precomputed encoder rows, so the hot loop never re-hashes.
  std::vector<int64_t> user_row_, item_row_;
  std::vector<std::vector<int64_t>> user_cat_rows_, item_cat_rows_;  // [entity][feature]
  std::vector<std::vector<float>> user_num_rows_, item_num_rows_;    // standardized
  ItemGraph full_graph_, fit_graph_;
};

// The feature spec a dataset implies (vocabularies over all its user and item ids, or hashing
// into user_buckets / item_buckets rows when > 0).
recall::v1::FeatureSpec SpecForDataset(const Dataset& d, int history_length,
                                       int64_t user_buckets = 0, int64_t item_buckets = 0);
// The external ids of the dataset's dense users / items (the dense ids when it has none).
std::vector<int64_t> ExternalUserIds(const Dataset& d);
std::vector<int64_t> ExternalItemIds(const Dataset& d);

// A copy of d whose test lists are one train item moved out of train for each of num_users
// random users with >= 3 train items (fewer if fewer qualify), chosen by seed; every other
// user has an empty test list. With item_fraction > 0 each chosen user gives
// max(1, round(item_fraction * n)) of its n train items instead of one (never leaving fewer
// than two); item_fraction 0 draws exactly as before.
Dataset HoldOutValidation(const Dataset& d, int64_t num_users, uint64_t seed,
                          double item_fraction = 0);

}  // namespace recall::trainer

#endif  // RECALL_TRAINER_EXAMPLE_BATCHES_H_
