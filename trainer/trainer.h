// Trainer: learns the two towers on a Dataset with temperature-scaled InfoNCE over in-batch
// negatives, a MoCo queue of momentum-encoder keys and uniformly drawn global negatives (each
// optional, with logQ correction; trainer/negatives.h), selects the epoch on a validation
// split held out of train, evaluates with full ranking, and exports a model version.
//
// Not thread-safe: one Trainer is driven by one thread (LibTorch parallelizes inside ops).
#ifndef RECALL_TRAINER_TRAINER_H_
#define RECALL_TRAINER_TRAINER_H_

#include <torch/torch.h>

#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/encoder.h"
#include "model/train_config.h"
#include "recall/v1/model.pb.h"
#include "recall/v1/train_config.pb.h"
#include "trainer/dataset.h"
#include "trainer/evaluator.h"
#include "trainer/item_graph.h"
#include "trainer/negatives.h"
#include "trainer/towers.h"

namespace recall::trainer {

// Every training option: recall.v1.TrainConfig (proto/recall/v1/train_config.proto), resolved
// by model/train_config.h. The Trainer reads it and never changes it.
using TrainConfig = recall::v1::TrainConfig;
using recall::v1::TrainingEvent;

// What a run reports, which does not change the model.
struct RunOptions {
  int log_every_steps = 50;  // a STEP event every this many steps (and at an epoch's end)
  int eval_every_epochs = 0; // > 0: test figures in every this-many-th EPOCH event
};

using ProgressFn = std::function<void(const TrainingEvent&)>;

class Trainer {
 public:
  // `config` must pass CheckTrainConfig (InvalidArgument otherwise). Member k of an ensemble
  // (trainer/ensemble.h) varies the initialization and the example order (seeded by seed and
  // k), not the validation split or the evaluation audiences (seeded by seed alone).
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const Dataset& dataset,
                                                         const TrainConfig& config,
                                                         int ensemble_member = 0);
  void set_run_options(const RunOptions& options) { run_options_ = options; }

  // Runs config.epochs epochs. Deterministic for a seed and thread count.
  absl::Status Train(const ProgressFn& progress = nullptr);
  // One epoch; returns the mean loss. Exposed for tests.
  double TrainEpoch(int epoch, const ProgressFn& progress = nullptr);

  // Encodes users exactly as the server would for a request carrying user_id and the user's
  // last history_length train items (most recent last): the eval-time user input.
  UserBatch EvalUserBatch(const std::vector<int64_t>& users) const;
  // Items with their evaluation audience (the full train split's).
  ItemBatch ItemBatchFor(const std::vector<int64_t>& items) const;
  // [n, dim] embeddings in inference mode.
  torch::Tensor EmbedUsers(const std::vector<int64_t>& users);
  torch::Tensor EmbedItems(const std::vector<int64_t>& items);
  torch::Tensor EmbedAllUsers();
  torch::Tensor EmbedAllItems();

  // Exact full-ranking evaluation on the dataset's test split.
  RankingMetrics Evaluate(const EvalOptions& options = {});
  // Evaluate() plus the quality report of trainer/quality.h: slices, alignment/uniformity and,
  // if index_factory is not empty, ranking through that index (an index error is logged and
  // leaves those keys out).
  RankingMetrics EvaluateReport(const std::string& index_factory);

  // Writes <model_base>/<next version>/ atomically: towers, vocabularies, the item index built
  // with `index_factory`, and the manifest with `metrics` and the resolved config (started
  // from `preset`; its index_factory is the one built). Returns the version directory.
  absl::StatusOr<std::string> Export(const std::string& model_base,
                                     const std::string& index_factory,
                                     const RankingMetrics& metrics, const std::string& preset,
                                     int64_t version = 0);

  const FeatureEncoder& encoder() const { return *encoder_; }
  const recall::v1::FeatureSpec& spec() const { return encoder_->spec(); }
  Towers& towers() { return towers_; }
  const TrainConfig& config() const { return config_; }
  const Dataset& dataset() const { return dataset_; }
  // What training fits: the dataset less the validation pairs (the dataset itself without
  // validation).
  const Dataset& fit_split() const { return *fit_; }

  // The contrastive loss for one batch of (user, positive item) pairs, against in-batch,
  // queue and global negatives as configured. Also enqueues the batch's keys (MoCo).
  torch::Tensor BatchLoss(const std::vector<int64_t>& users, const std::vector<int64_t>& items,
                          std::mt19937_64& rng);
  // Items as training encodes them: a fresh uniform audience subset from the fit split, never
  // users[r] for the first users.size() items (their own example's user, which would give the
  // positive away; -1 excludes nobody). Exposed for tests.
  ItemBatch TrainItemBatch(const std::vector<int64_t>& items, const std::vector<int64_t>& users,
                           std::mt19937_64& rng) const;
  // After an optimizer step: the momentum update of the key encoder (no-op without a queue)
  // and the weight average's update (no-op without weight_average_decay).
  void AfterStep();
  // The averaged tower weights in towers().parameters() order (empty without
  // weight_average_decay) and the number of updates folded into them.
  const std::vector<torch::Tensor>& average_parameters() const { return average_params_; }
  int64_t average_updates() const { return average_updates_; }

  // Validation Recall@K / NDCG@K on the held-out split (empty without validation).
  RankingMetrics EvaluateValidation();
  // Best validation Recall@20 seen by Train() and its epoch (0 = none).
  double best_validation_recall() const { return best_val_recall_; }
  int best_epoch() const { return best_epoch_; }

  // Checkpoint of everything a run needs to continue bit-for-bit: tower and key-encoder
  // parameters, optimizer state, queue, example order, RNG state and the epoch/step reached.
  absl::Status SaveCheckpoint(const std::string& path) const;
  absl::Status LoadCheckpoint(const std::string& path);
  void set_checkpoint(const std::string& path, int every_steps) {
    checkpoint_path_ = path;
    checkpoint_every_steps_ = every_steps;
  }

  const KeyQueue& queue() const { return queue_; }
  torch::jit::Module& key_encoder() { return key_tower_; }
  const torch::Tensor& log_q() const { return log_q_; }
  // The co-occurrence graph of item_neighbor_weight (empty when off).
  const ItemNeighbors& item_neighbors() const { return item_neighbors_; }

 private:
  Trainer(const Dataset& d, const TrainConfig& c, int member)
      : dataset_(d), config_(c), ensemble_member_(member) {}
  // Encodes users (id, categorical) with the history items `pick_history(row, user, &items)`
  // chooses; the first history_length of them are used.
  UserBatch UserBatchWith(
      const std::vector<int64_t>& users,
      const std::function<void(int64_t, int64_t, std::vector<int64_t>*)>& pick_history) const;
  UserBatch TrainUserBatch(const std::vector<int64_t>& users, const std::vector<int64_t>& items,
                           std::mt19937_64& rng) const;
  // Users encoded with their train items in `source` as history (the last history_length).
  UserBatch HistoryUserBatch(const Dataset& source, const std::vector<int64_t>& users) const;
  torch::Tensor EmbedAllUsersFrom(const Dataset& source);
  // What the item tower pools besides an item's own features, from one split's train
  // interactions (dense ids). Each list is empty without its input.
  struct ItemGraph {
    // Per item, its train users in a seeded random order: the first audience length of them
    // are its evaluation audience.
    std::vector<std::vector<int64_t>> audience;
    // Per item, its item_neighbor_length strongest co-occurrence neighbours, strongest first.
    std::vector<std::vector<int64_t>> neighbors;
  };
  // Items with the fixed `audience` and `neighbors` lists (an ItemGraph's); an empty list
  // leaves that input as padding (training draws its audience itself).
  ItemBatch ItemBatchWith(const std::vector<int64_t>& items,
                          const std::vector<std::vector<int64_t>>& audience,
                          const std::vector<std::vector<int64_t>>& neighbors,
                          int64_t audience_length) const;
  // The audience width of evaluation, validation and export (TrainConfig::eval_audience_length).
  int64_t eval_audience_length() const;
  torch::Tensor EmbedAllItemsWith(const ItemGraph& graph);
  torch::Tensor EmbedUsersFrom(const Dataset& source, const std::vector<int64_t>& users);
  std::vector<torch::Tensor> SnapshotParameters() const;
  // A masked view for the SSL losses (see TrainConfig); draws from rng.
  UserBatch MaskedView(const UserBatch& b, std::mt19937_64& rng) const;
  ItemBatch MaskedView(const ItemBatch& b, std::mt19937_64& rng) const;
  // Every item of the dataset in dense id order, built on first use (loss=full_softmax).
  const ItemBatch& AllItemsBatch();
  void RestoreParameters(const std::vector<torch::Tensor>& snapshot);
  void SetLearningRate(double lr);

  const Dataset& dataset_;
  // What training sees: dataset_ itself, or a copy with the validation items moved to test.
  std::unique_ptr<Dataset> fit_split_;
  const Dataset* fit_ = nullptr;
  TrainConfig config_;
  int ensemble_member_ = 0;
  RunOptions run_options_;
  std::shared_ptr<const FeatureEncoder> encoder_;
  Towers towers_;
  std::unique_ptr<torch::optim::Adam> optimizer_;
  std::vector<std::pair<int64_t, int64_t>> examples_;  // (user, item) train pairs
  // Precomputed encoder rows, so the hot loop never re-hashes.
  std::vector<int64_t> user_row_, item_row_;
  std::vector<std::vector<int64_t>> user_cat_rows_, item_cat_rows_;  // [entity][feature]
  std::vector<std::vector<float>> user_num_rows_, item_num_rows_;    // standardized, [entity][feature]
  // The full train split's graph (evaluation, export) and the fit split's (training,
  // validation; a copy of the full one when there is no validation split).
  ItemGraph full_graph_, fit_graph_;
  std::unique_ptr<ItemBatch> all_items_batch_;
  torch::Tensor log_q_;  // [num_items] log of each item's share of train interactions
  torch::Tensor log_q_users_;  // [num_users] the same for users (item_to_user_weight)
  ItemNeighbors item_neighbors_;    // item_neighbor_weight > 0
  torch::Tensor log_q_neighbors_;  // [num_items] log of each item's share of neighbour draws
  torch::jit::Module key_tower_;  // momentum copy of towers_.item (queue_size > 0)
  KeyQueue queue_;
  std::mt19937_64 rng_;
  int next_epoch_ = 1;       // where Train() (re)starts
  int64_t resume_step_ = 0;  // steps of next_epoch_ already done (after LoadCheckpoint)
  int64_t steps_done_ = 0;   // by this process (for max_steps)
  double best_val_recall_ = -1;
  int best_epoch_ = 0;
  int stale_epochs_ = 0;       // epochs since the best validation Recall@20
  int lr_decays_done_ = 0;
  double learning_rate_ = 0;   // current (config's, times lr_decay per plateau)
  std::vector<torch::Tensor> best_params_;
  std::vector<torch::Tensor> average_params_;  // weight_average_decay > 0
  int64_t average_updates_ = 0;
  std::string checkpoint_path_;
  int checkpoint_every_steps_ = 0;
};

// The feature spec a dataset implies (vocabularies over all its user and item ids).
recall::v1::FeatureSpec SpecForDataset(const Dataset& d, int history_length);

// A copy of d whose test lists are one train item moved out of train for each of num_users
// random users with >= 3 train items (fewer if fewer qualify), chosen by seed; every other
// user has an empty test list.
// With item_fraction > 0 each chosen user gives max(1, round(item_fraction * n)) of its n train
// items instead of one (never leaving fewer than two); item_fraction 0 draws exactly as before.
Dataset HoldOutValidation(const Dataset& d, int64_t num_users, uint64_t seed,
                          double item_fraction = 0);

}  // namespace recall::trainer

#endif  // RECALL_TRAINER_TRAINER_H_
