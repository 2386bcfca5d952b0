// The bridge from a training run (or a published version) to index/'s tuner: which users'
// tower outputs tune a version's index, the tuner's options from a TrainConfig, and the
// manifest record of the result (recall.v1.IndexTuning). index/TUNING.md explains the method.
//
// Thread safety: free functions without shared state. Errors: none (pure conversions).

#ifndef RECALL_TRAINER_INDEX_TUNING_H_
#define RECALL_TRAINER_INDEX_TUNING_H_

#include <cstdint>
#include <string>
#include <vector>

#include "index/index_tuner.h"
#include "recall/v1/model.pb.h"
#include "recall/v1/train_config.pb.h"
#include "trainer/dataset.h"

namespace recall::trainer {

// The factory string that asks the export to tune the index.
inline constexpr char kAutoIndexFactory[] = "auto";
// The tuning queries a version carries (fvecs), so `recall-index tune` can re-tune it.
inline constexpr char kTuneQueriesFile[] = "tune_queries.fvecs";

// Up to `max_users` users whose tower outputs tune the index: the validation users when `fit`
// holds some out (users with validation items in fit.test), else users with a train item;
// a seeded sample, in ascending order.
std::vector<int64_t> TuningUsers(const Dataset& fit, bool has_validation, int max_users,
                                 uint64_t seed);

TuneOptions TuneOptionsFrom(const recall::v1::TrainConfig& config);

// The manifest record of a tuning over `num_items` items with `num_queries` queries taken
// from `queries` (a description: "validation users", a file name).
recall::v1::IndexTuning TuningRecord(const TuneResult& result, const TuneOptions& options,
                                     int64_t num_items, int num_queries,
                                     const std::string& queries);

}  // namespace recall::trainer

#endif  // RECALL_TRAINER_INDEX_TUNING_H_
