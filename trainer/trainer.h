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
#include "recall/v1/model.pb.h"
#include "trainer/dataset.h"
#include "trainer/evaluator.h"
#include "trainer/item_graph.h"
#include "trainer/negatives.h"
#include "trainer/towers.h"

namespace recall::trainer {

struct TrainConfig {
  int epochs = 10;
  int batch_size = 1024;
  double learning_rate = 1e-3;
  double temperature = 0.1;  // tau in softmax(s / tau)
  // logQ correction (Yi et al. 2019): subtract log q_j, the in-batch sampling probability of
  // item j (its share of train interactions), from every logit, so the softmax estimates
  // p(item | user) instead of p(item | user) / q(item).
  bool logq_correction = false;
  double logq_weight = 1.0;  // alpha: subtract alpha * log q (1 = the full correction)
  // Softmax loss: mask, besides accidental hits, every negative column holding another of the
  // row's user's fit-split train items (a false negative: in-batch negatives are drawn by
  // popularity, so a user's own popular items turn up as its negatives several times a batch).
  bool mask_user_positives = false;
  // "softmax" (InfoNCE above) or "ccl": the cosine contrastive loss of SimpleX (Mao et al.
  // 2021), (1 - cos(u, pos)) + ccl_negative_weight * mean_j max(0, cos(u, neg_j) - ccl_margin)
  // over the uniform global negatives (and the queue, if any), not the popularity-drawn
  // in-batch ones; needs global_negatives > 0. temperature and logQ do not apply.
  // "full_softmax": the exact softmax over the whole catalog, every item tower output scored
  // against every user of the step (no sampling, so no logQ, queue or global negatives; costs
  // B x N x dim per step, affordable for catalogs of ~10^5 items).
  std::string loss = "softmax";
  // > 0 (softmax loss only): the symmetric InfoNCE of CLIP (Radford et al. 2021) — each batch
  // item also picks its own user among the batch's users, added with this weight. With logQ on,
  // the user columns get -log q(user) (users enter a batch in proportion to their train
  // interactions; the textbook alpha 1, not logq_weight). A column holding the row's own user
  // (the same user twice in a batch) is masked. 0 = off.
  double item_to_user_weight = 0;
  // > 0 (softmax loss only): UltraGCN's item-item constraint (Mao et al. 2021) as an auxiliary
  // InfoNCE term with this weight: each row's user must also pick one of its positive's
  // item_neighbors strongest co-occurrence neighbours (ItemNeighbors, drawn by weight, from
  // the fit split's train interactions) among the batch's drawn neighbours. With logQ on, each
  // neighbour column gets -logq_weight * log(its share of the neighbour draws). 0 = off.
  double item_neighbor_weight = 0;
  int item_neighbors = 10;
  double ccl_margin = 0.9;
  double ccl_negative_weight = 150;
  // MoCo (He et al. 2020): a momentum copy of the item tower encodes each batch's positives as
  // keys into a FIFO queue of queue_size keys, used as extra negatives. 0 = off.
  int64_t queue_size = 0;
  double momentum = 0.99;       // key encoder: k = m * k + (1 - m) * q after every step
  // Queue variant: keep only the queued item ids and re-encode them with the online item
  // tower every step (gradients reach the queued items; no momentum encoder is used).
  bool queue_reencode = false;
  // Mixed negative sampling (Yang et al. 2020): items drawn uniformly per step, shared by the
  // batch, encoded by the online item tower. 0 = off.
  int64_t global_negatives = 0;
  double weight_decay = 0;      // Adam L2 penalty on every parameter
  // > 0: Polyak averaging — an exponential moving average of the tower weights,
  // avg = d * avg + (1 - d) * w after every optimizer step, with d = min(weight_average_decay,
  // (1 + t) / (10 + t)) after t updates so the random initialization fades within tens of
  // steps (as TensorFlow's ExponentialMovingAverage with num_updates). Validation, the
  // best-epoch pick, eval_every_epochs and the weights Train() leaves (hence evaluation and
  // export) are the averaged ones; the optimizer keeps stepping the live weights. 0 = off.
  double weight_average_decay = 0;
  // Self-supervised auxiliary losses (Yao et al. 2021), added with these weights (0 = off):
  // item side, two views of each batch item with its id and each categorical feature masked
  // (replaced by the OOV / missing row) with probability ssl_mask_prob, contrasted by in-batch
  // InfoNCE; user side, two views of each user whose id and history items are masked the same
  // way. (Reordering a history is no view for a mean-pooling tower: it is order-invariant.)
  double user_id_dropout = 0;   // training: replace a user's id by the OOV row with this probability
  int64_t user_id_buckets = 0;  // > 0: hash user ids into this many rows instead of a vocabulary
  int64_t item_id_buckets = 0;  // > 0: the same for item ids (the item table and the history's)
  double history_dropout = 0;   // training: drop each history item of the main loss with this probability
  double item_ssl_weight = 0;
  double user_ssl_weight = 0;
  double ssl_mask_prob = 0.3;
  int history_length = 50;   // L: pooled history items per user
  // > 0: the item tower also mean-pools up to this many of the item's training users (its
  // audience; FeatureSpec.item_audience_length). Training draws a uniform subset each time, never
  // the example's own user (which would give its positive away); evaluation and export use a
  // fixed seeded subset of the train users (the fit split's for validation).
  int item_audience_length = 0;
  // > 0: evaluation, validation and export pool up to this many of each item's users instead
  // (FeatureSpec.item_audience_length then says this). Training samples item_audience_length of
  // them each time, noisy estimates of the item's mean user; with all of them the item vector
  // is that mean. 0: item_audience_length.
  int eval_audience_length = 0;
  double audience_dropout = 0;  // training: drop each audience user with this probability
  // > 0: the item tower also mean-pools the item's this-many strongest co-occurrence
  // neighbours (ItemNeighbors, UltraGCN's weights; FeatureSpec.item_neighbor_length) from its
  // own id table: LightGCN's second hop as an input. Training and validation use the fit
  // split's graph (a held-out item links nothing), evaluation and export the full train's.
  int item_neighbor_length = 0;
  // Validation: one train item of each of validation_users random users (with >= 3 train
  // items) is held out of training; after every epoch Recall@20 on it picks the best epoch,
  // whose weights are restored at the end. 0 = no validation (train all epochs, keep the last).
  int64_t validation_users = 0;
  // > 0: hold out this share of each validation user's train items (rounded, at least one,
  // leaving at least two) instead of one, so validation Recall/NDCG@K weigh a user's many
  // held-out items as the test protocol does (an 80/20 split per user). One item measures a
  // hit rate, which cannot see precision at the top of a heavy user's list.
  double validation_item_fraction = 0;
  int patience = 0;             // stop after this many epochs without a better validation
                                // Recall@20 (0 = never stop early)
  // Learning-rate decay on a validation plateau: when `patience` epochs pass without a better
  // validation Recall@20, restore the best weights, multiply the learning rate by lr_decay and
  // go on; only after max_lr_decays such decays does the plateau stop training. 0 = off.
  double lr_decay = 0;
  int max_lr_decays = 2;
  uint64_t seed = 42;
  // Member k of an ensemble (trainer/ensemble.h): varies the initialization and the example
  // order (seeded by seed and k), not the validation split or the evaluation audiences (seeded
  // by seed alone), so every member validates on the same held-out pairs.
  int ensemble_member = 0;
  int log_every_steps = 50;
  int64_t max_steps = 0;      // stop after this many steps in all (0: run every epoch)
  int eval_every_epochs = 0;  // 0 = only at the end
  TowerConfig tower;
};

// One progress event; the CLI renders it as a terminal progress line or a JSON line.
struct ProgressEvent {
  std::string kind;  // "step", "epoch", "eval"
  int epoch = 0, total_epochs = 0;
  int64_t step = 0, total_steps = 0;
  double loss = 0, examples_per_sec = 0, eta_sec = 0, elapsed_sec = 0;
  std::map<std::string, double> metrics;
};
using ProgressFn = std::function<void(const ProgressEvent&)>;

class Trainer {
 public:
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const Dataset& dataset,
                                                         const TrainConfig& config);

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
  // with `index_factory`, and the manifest with `metrics`. Returns the version directory.
  absl::StatusOr<std::string> Export(const std::string& model_base,
                                     const std::string& index_factory,
                                     const RankingMetrics& metrics,
                                     const std::map<std::string, std::string>& config_echo,
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
  Trainer(const Dataset& d, const TrainConfig& c) : dataset_(d), config_(c) {}
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
