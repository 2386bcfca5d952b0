// Schedule: when training stops and which weights it keeps. It owns the validation history
// (best Recall@20, its epoch and weights, epochs since), the learning rate and its decays on a
// plateau, and the Polyak average of the weights (TRAINING.md "Validation and early stopping").
//
// Thread-safety: not thread-safe; one training thread drives it.
#ifndef RECALL_TRAINER_SCHEDULE_H_
#define RECALL_TRAINER_SCHEDULE_H_

#include <torch/torch.h>

#include <vector>

#include "recall/v1/train_config.pb.h"
#include "trainer/towers.h"

namespace recall::trainer {

class Schedule {
 public:
  // What a checkpoint stores to continue bit for bit.
  struct State {
    double best_val_recall = -1;
    int best_epoch = 0;        // 0: none yet
    int stale_epochs = 0;      // epochs since the best validation Recall@20
    int lr_decays_done = 0;
    double learning_rate = 0;  // current: the config's, times lr_decay per plateau
    std::vector<torch::Tensor> best_params;
    std::vector<torch::Tensor> average_params;  // weight_average_decay > 0
    int64_t average_updates = 0;
  };
  enum class Next { kGoOn, kStop, kRestartFromBest };

  // `towers` and `optimizer` must outlive the Schedule, which sets the optimizer's rate.
  Schedule(const recall::v1::TrainConfig& config, Towers* towers, torch::optim::Adam* optimizer);

  // After an optimizer step: folds the live weights into the average (no-op without one).
  void AfterStep();
  // Puts the averaged weights in place for validation and returns the live ones (empty, and
  // nothing changes, without averaging).
  std::vector<torch::Tensor> SwapInAverage();
  // After an epoch's validation Recall@20 (with the weights it measured in place): records a
  // new best, or counts a stale epoch and on a plateau decays the rate (restoring the best
  // weights now, or, with averaging, asking the caller to RestartFromBest once the live weights
  // are back) or stops.
  Next OnValidation(int epoch, double recall);
  // Training and the average restart at the best (averaged) weights.
  void RestartFromBest();
  // At the end: the best validated weights, else the average, else the live ones stay.
  void KeepBest();

  const State& state() const { return state_; }
  void Restore(State state);  // from a checkpoint; sets the optimizer's rate

  static std::vector<torch::Tensor> Snapshot(const Towers& towers);
  static void Put(const std::vector<torch::Tensor>& snapshot, Towers& towers);

 private:
  void SetLearningRate(double lr);

  const recall::v1::TrainConfig& config_;
  Towers& towers_;
  torch::optim::Adam& optimizer_;
  State state_;
};

}  // namespace recall::trainer

#endif  // RECALL_TRAINER_SCHEDULE_H_
