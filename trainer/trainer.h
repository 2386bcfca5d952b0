// Trainer: learns the two towers on a Dataset and evaluates them. It composes the units that
// own a run's data -- ExampleBatches (the encoded examples and the validation split),
// Objective (the loss of a batch, logQ tables, MoCo queue), Schedule (early stop, learning
// rate, weight average) -- and owns what ties them together: the towers, the optimizer, the
// example order, the random engine and the epoch/step reached. Checkpoints are
// trainer/checkpoint.h, publishing a version trainer/export.h, what a run prints
// trainer/run_report.h, the configuration model/train_config.h.
//
// Not thread-safe: one Trainer is driven by one thread (LibTorch parallelizes inside ops).
#ifndef RECALL_TRAINER_TRAINER_H_
#define RECALL_TRAINER_TRAINER_H_

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/encoder.h"
#include "model/train_config.h"
#include "recall/v1/model.pb.h"
#include "recall/v1/train_config.pb.h"
#include "trainer/checkpoint.h"
#include "trainer/collective.h"
#include "trainer/dataset.h"
#include "trainer/evaluator.h"
#include "trainer/example_batches.h"
#include "trainer/objective.h"
#include "trainer/schedule.h"
#include "trainer/towers.h"

namespace recall::trainer {

// Every training option: recall.v1.TrainConfig (proto/recall/v1/train_config.proto), resolved
// by model/train_config.h. The Trainer reads it and never changes it.
using TrainConfig = recall::v1::TrainConfig;
using recall::v1::TrainingEvent;

// What a run reports, which does not change the model.
struct RunOptions {
  int log_every_steps = 50;   // a STEP event every this many steps (and at an epoch's end)
  int eval_every_epochs = 0;  // > 0: test figures in every this-many-th EPOCH event
};

using ProgressFn = std::function<void(const TrainingEvent&)>;

class Trainer {
 public:
  // `config` must pass CheckTrainConfig (InvalidArgument otherwise); `dataset` must outlive the
  // Trainer. Member k of an ensemble (trainer/ensemble.h) varies the initialization and the
  // example order (seeded by seed and k), not the validation split or the evaluation
  // audiences (seeded by seed alone).
  // With a `collective` (it must outlive the Trainer) this process is one rank of a
  // data-parallel run: every rank trains on rows [rank * B, (rank + 1) * B) of each global
  // batch (B = batch_size / world_size; InvalidArgument unless it divides), gradients are
  // averaged over ranks every step, and every rank holds the same weights. Train, validation
  // and checkpoint loading are then collective: every rank calls them; only rank 0 writes
  // checkpoints. Ensembles are one process: InvalidArgument for a member with a collective.
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const Dataset& dataset,
                                                         const TrainConfig& config,
                                                         int ensemble_member = 0,
                                                         Collective* collective = nullptr);
  void set_run_options(const RunOptions& options) { run_options_ = options; }
  // Checkpoint to `path` after every epoch, and every `every_steps` steps within one (> 0).
  void set_checkpoint(const std::string& path, int every_steps) {
    checkpoint_path_ = path;
    checkpoint_every_steps_ = every_steps;
  }

  // Runs the remaining epochs; on return the kept weights (best validated, else averaged,
  // else live) are in place. Deterministic for a seed and thread count. Internal when the
  // loss diverges.
  absl::Status Train(const ProgressFn& progress = nullptr);

  // [n, dim] embeddings in inference mode, users encoded as a server request (id + the last
  // history_length train items), items with their evaluation audience.
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
  // Validation Recall@K / NDCG@K on the held-out split (empty without validation).
  RankingMetrics EvaluateValidation();
  // Best validation Recall@20 seen by Train() and its epoch (0 = none).
  double best_validation_recall() const { return schedule_->state().best_val_recall; }
  int best_epoch() const { return schedule_->state().best_epoch; }

  // Checkpoint of everything a run needs to continue bit for bit (trainer/checkpoint.h).
  // With a collective, Save writes on rank 0 only (a no-op elsewhere) and Load is collective:
  // rank 0 reads the file and every rank loads its bytes (NotFound on every rank when rank 0
  // has no file).
  absl::Status SaveCheckpoint(const std::string& path);
  absl::Status LoadCheckpoint(const std::string& path);
  // Wall seconds this rank spent in collectives (0 on one process).
  double seconds_in_collectives() const {
    return collective_ ? collective_->seconds_in_collectives() : 0.0;
  }

  const ExampleBatches& batches() const { return *batches_; }
  const FeatureEncoder& encoder() const { return batches_->encoder(); }
  const recall::v1::FeatureSpec& spec() const { return batches_->spec(); }
  Towers& towers() { return towers_; }
  const TrainConfig& config() const { return config_; }
  const Dataset& dataset() const { return batches_->dataset(); }
  const Dataset& fit_split() const { return batches_->fit(); }

 private:
  friend class TrainerTestAccess;  // tests/trainer/trainer_test_access.h

  Trainer(const TrainConfig& c, int member, Collective* collective)
      : config_(c), ensemble_member_(member), collective_(collective) {}
  // One epoch (or what remains of it after a resume); returns the mean loss.
  double TrainEpoch(int epoch, const ProgressFn& progress);
  // One optimizer step on this rank's rows of examples [s * batch, (s + 1) * batch); returns
  // the batch's loss (the mean over every rank's rows).
  double Step(int64_t s);
  // Averages the gradients (and `loss`, in place) over ranks.
  void AverageOverRanks(torch::Tensor& loss);
  RunState State();
  torch::Tensor EmbedAllItemsWith(bool fit_graph);
  torch::Tensor EmbedAllUsersFrom(const Dataset& source);
  torch::Tensor EmbedUsersFrom(const Dataset& source, const std::vector<int64_t>& users);

  const TrainConfig config_;
  const int ensemble_member_;
  Collective* const collective_;
  RunOptions run_options_;
  std::unique_ptr<ExampleBatches> batches_;
  Towers towers_;
  std::unique_ptr<torch::optim::Adam> optimizer_;
  std::unique_ptr<Objective> objective_;
  std::unique_ptr<Schedule> schedule_;
  std::vector<std::pair<int64_t, int64_t>> examples_;  // (user, item) train pairs, this epoch's order
  std::mt19937_64 rng_;     // the epoch shuffle (the same on every rank)
  uint64_t draw_seed_ = 0;  // the run's key for every row draw (trainer/row_draws.h)
  int epoch_ = 0;           // the epoch being trained
  int next_epoch_ = 1;       // where Train() (re)starts
  int64_t resume_step_ = 0;  // steps of next_epoch_ already done (after LoadCheckpoint)
  int64_t steps_done_ = 0;   // by this process (for max_steps)
  std::string checkpoint_path_;
  int checkpoint_every_steps_ = 0;
};

}  // namespace recall::trainer

#endif  // RECALL_TRAINER_TRAINER_H_
