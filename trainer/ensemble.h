// Ensembles (`recall-train --ensemble=N`): N models trained independently on the same data and
// config, differing only in their member index k (their initialization and example
// order), served as one two-tower model whose score is the mean of the members' scores
// (EnsembleTowers in trainer/towers.h). Averaging independently trained models cancels part of
// each one's noise; measured on Gowalla in README "Results".
//
// Every member validates on the same held-out pairs and pools the same evaluation audiences, so
// the ensemble's validation figures are clean and its exported item tower sees one audience.
#ifndef RECALL_TRAINER_ENSEMBLE_H_
#define RECALL_TRAINER_ENSEMBLE_H_

#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "trainer/dataset.h"
#include "trainer/trainer.h"

namespace recall::trainer {

// Creates members 0..config.ensemble()-1 (Trainer::Create(..., k)), one after the other
// (initialization draws from torch's global generator).
absl::StatusOr<std::vector<std::unique_ptr<Trainer>>> CreateEnsemble(const Dataset& dataset,
                                                                    const TrainConfig& config);

// Trains every member to the end (Trainer::Train) concurrently, each on its own thread with
// max(1, threads / N) intra-op / OpenMP threads (ATen's OpenMP backend keeps the count per
// thread). `progress` is called from the member threads, one call at a time, with the member's
// index. Repeatable for a seed and thread count; a member's result equals the same member
// trained alone on threads / N threads up to float rounding (nothing is shared between
// members). One member trains on the calling thread with its settings untouched. Returns the first member's error, after
// all members have stopped.
absl::Status TrainConcurrently(
    const std::vector<Trainer*>& members, int threads,
    const std::function<void(int member, const TrainingEvent&)>& progress = nullptr);

// Makes members[0] evaluate and export the ensemble: its towers become EnsembleTowers over all
// members' towers (which stay owned by their trainers: keep every member alive while members[0]
// is used). members[0] must not train afterwards.
void CombineInto(const std::vector<Trainer*>& members);

}  // namespace recall::trainer

#endif  // RECALL_TRAINER_ENSEMBLE_H_
