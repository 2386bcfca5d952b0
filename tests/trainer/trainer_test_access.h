// Tests reach the Trainer's units through this friend (as TF Serving's ...TestAccess classes),
// so the Trainer's public API stays what callers need.
#ifndef RECALL_TESTS_TRAINER_TRAINER_TEST_ACCESS_H_
#define RECALL_TESTS_TRAINER_TRAINER_TEST_ACCESS_H_

#include <random>
#include <vector>

#include "trainer/trainer.h"

namespace recall::trainer {

class TrainerTestAccess {
 public:
  static double TrainEpoch(Trainer& t, int epoch, const ProgressFn& progress = nullptr) {
    return t.TrainEpoch(epoch, progress);
  }
  static torch::Tensor BatchLoss(Trainer& t, const std::vector<int64_t>& users,
                                 const std::vector<int64_t>& items, std::mt19937_64& rng) {
    return t.objective_->Loss(users, items, rng);
  }
  static Objective& objective(Trainer& t) { return *t.objective_; }
  static const Schedule::State& schedule(const Trainer& t) { return t.schedule_->state(); }
};

}  // namespace recall::trainer

#endif  // RECALL_TESTS_TRAINER_TRAINER_TEST_ACCESS_H_
