// Tests reach the Trainer's units through this friend (as TF Serving's ...TestAccess classes),
// so the Trainer's public API stays what callers need.
#ifndef RECALL_TESTS_TRAINER_TRAINER_TEST_ACCESS_H_
#define RECALL_TESTS_TRAINER_TRAINER_TEST_ACCESS_H_

#include <vector>

#include "trainer/trainer.h"

namespace recall::trainer {

class TrainerTestAccess {
 public:
  static double TrainEpoch(Trainer& t, int epoch, const ProgressFn& progress = nullptr) {
    return t.TrainEpoch(epoch, progress);
  }
  // The loss of one batch whose rows draw from keys under `key` (trainer/row_draws.h).
  static torch::Tensor BatchLoss(Trainer& t, const std::vector<int64_t>& users,
                                 const std::vector<int64_t>& items, uint64_t key) {
    return t.objective_->Loss(users, items,
                              DrawKeys::ForRows(key, 0, 0, static_cast<int64_t>(users.size())));
  }
  static double Step(Trainer& t, int64_t s) { return t.Step(s); }
  static void set_epoch(Trainer& t, int epoch) { t.epoch_ = epoch; }
  static Objective& objective(Trainer& t) { return *t.objective_; }
  static const Schedule::State& schedule(const Trainer& t) { return t.schedule_->state(); }
};

}  // namespace recall::trainer

#endif  // RECALL_TESTS_TRAINER_TRAINER_TEST_ACCESS_H_
