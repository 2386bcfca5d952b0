// Checkpoints: everything a run needs to continue bit for bit, gathered from the units that
// own it -- tower weights and Adam's moments (Trainer), key encoder and queue (Objective),
// validation history, learning rate and weight average (Schedule), the example order, the
// random engine and the epoch/step reached (the training loop). Nothing in it depends on the
// number of ranks: every rank holds the same state, rank 0 writes it, any world size resumes. One torch archive, written to
// PATH.tmp and renamed, so a reader never sees half of one.
//
// Thread-safety: not thread-safe; call between steps of the one training thread.
#ifndef RECALL_TRAINER_CHECKPOINT_H_
#define RECALL_TRAINER_CHECKPOINT_H_

#include <torch/torch.h>

#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "trainer/objective.h"
#include "trainer/schedule.h"
#include "trainer/towers.h"

namespace recall::trainer {

// Pointers into the owners of a run's state; all must be set.
struct RunState {
  Towers* towers = nullptr;
  torch::optim::Adam* optimizer = nullptr;
  Objective* objective = nullptr;
  Schedule* schedule = nullptr;
  std::vector<std::pair<int64_t, int64_t>>* examples = nullptr;  // in this epoch's order
  std::mt19937_64* rng = nullptr;
  int* next_epoch = nullptr;       // where training (re)starts
  int64_t* resume_step = nullptr;  // steps of next_epoch already done
};

// Internal on a write error.
absl::Status WriteCheckpoint(const std::string& path, const RunState& state);
// FailedPrecondition when the checkpoint belongs to another dataset, validation split, queue
// size or averaging setting; DataLoss when it cannot be read. `contents`: the file's bytes
// when they were read elsewhere (rank 0 reads, every rank loads); null: read `path`.
absl::Status ReadCheckpoint(const std::string& path, const RunState& state,
                            const std::string* contents = nullptr);

}  // namespace recall::trainer

#endif  // RECALL_TRAINER_CHECKPOINT_H_
