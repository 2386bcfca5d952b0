#include "trainer/schedule.h"

#include <algorithm>
#include <utility>

namespace recall::trainer {

Schedule::Schedule(const recall::v1::TrainConfig& config, Towers* towers,
                   torch::optim::Adam* optimizer)
    : config_(config), towers_(*towers), optimizer_(*optimizer) {
  state_.learning_rate = config.learning_rate();
  if (config.weight_average_decay() > 0) state_.average_params = Snapshot(towers_);
}

std::vector<torch::Tensor> Schedule::Snapshot(const Towers& towers) {
  std::vector<torch::Tensor> out;
  torch::NoGradGuard no_grad;
  for (const auto& p : towers.parameters()) out.push_back(p.detach().clone());
  return out;
}

void Schedule::Put(const std::vector<torch::Tensor>& snapshot, Towers& towers) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> params = towers.parameters();
  for (size_t i = 0; i < params.size() && i < snapshot.size(); ++i) params[i].copy_(snapshot[i]);
}

void Schedule::AfterStep() {
  if (state_.average_params.empty()) return;
  // d = min(decay, (1 + t) / (10 + t)) after t updates: the random initialization fades
  // within tens of steps (TensorFlow's ExponentialMovingAverage with num_updates).
  torch::NoGradGuard no_grad;
  ++state_.average_updates;
  const double t = static_cast<double>(state_.average_updates);
  const double d = std::min(config_.weight_average_decay(), (1 + t) / (10 + t));
  const std::vector<torch::Tensor> params = towers_.parameters();
  for (size_t i = 0; i < params.size(); ++i) state_.average_params[i].lerp_(params[i], 1.0 - d);
}

std::vector<torch::Tensor> Schedule::SwapInAverage() {
  if (state_.average_params.empty()) return {};
  std::vector<torch::Tensor> live = Snapshot(towers_);
  Put(state_.average_params, towers_);
  return live;
}

Schedule::Next Schedule::OnValidation(int epoch, double recall) {
  if (recall > state_.best_val_recall) {
    state_.best_val_recall = recall;
    state_.best_epoch = epoch;
    state_.best_params = Snapshot(towers_);
    state_.stale_epochs = 0;
    return Next::kGoOn;
  }
  if (config_.patience() <= 0 || ++state_.stale_epochs < config_.patience()) return Next::kGoOn;
  if (config_.lr_decay() > 0 && state_.lr_decays_done < config_.max_lr_decays()) {
    // Anneal from the best point rather than from where the plateau drifted to.
    Next next = Next::kGoOn;
    if (state_.average_params.empty()) {
      Put(state_.best_params, towers_);
    } else {
      next = Next::kRestartFromBest;  // after the live weights are back
    }
    SetLearningRate(state_.learning_rate * config_.lr_decay());
    ++state_.lr_decays_done;
    state_.stale_epochs = 0;
    return next;
  }
  return Next::kStop;
}

void Schedule::RestartFromBest() {
  // The best weights are averaged ones: training and the average restart there.
  Put(state_.best_params, towers_);
  state_.average_params = Snapshot(towers_);
}

void Schedule::KeepBest() {
  if (!state_.best_params.empty()) {
    Put(state_.best_params, towers_);
  } else if (!state_.average_params.empty()) {
    Put(state_.average_params, towers_);
  }
}

void Schedule::Restore(State state) {
  const double lr = state.learning_rate;
  state_ = std::move(state);
  SetLearningRate(lr);
}

void Schedule::SetLearningRate(double lr) {
  state_.learning_rate = lr;
  for (auto& group : optimizer_.param_groups()) {
    static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr);
  }
}

}  // namespace recall::trainer
