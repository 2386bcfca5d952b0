// Publishing a trained model as a version directory (DESIGN.md "The model version"): the
// towers as TorchScript, the vocabularies of external ids, the item index over every item's
// vector and the manifest, written into a staging directory and renamed into place.
//
// Thread-safety: call from the thread that drives `trainer`; concurrent publishers into one
// model base are safe (distinct staging directories; an existing version is never overwritten).
#ifndef RECALL_TRAINER_EXPORT_H_
#define RECALL_TRAINER_EXPORT_H_

#include <string>

#include "absl/status/statusor.h"
#include "trainer/evaluator.h"
#include "trainer/trainer.h"

namespace recall::trainer {

// Writes <model_base>/<version>/ (0: the next free number) atomically: towers, vocabularies,
// the item index built with `index_factory`, and the manifest with `metrics` and the resolved
// config (started from `preset`; its index_factory is the one built). Returns the version
// directory; an error from FAISS, LibTorch or the file system leaves no version behind.
absl::StatusOr<std::string> ExportVersion(Trainer& trainer, const std::string& model_base,
                                          const std::string& index_factory,
                                          const RankingMetrics& metrics,
                                          const std::string& preset, int64_t version = 0);

}  // namespace recall::trainer

#endif  // RECALL_TRAINER_EXPORT_H_
