// Whole-file reads shared by the trainer (datasets) and the server (token and TLS files).
#ifndef RECALL_MODEL_WHOLE_FILE_H_
#define RECALL_MODEL_WHOLE_FILE_H_

#include <string>

#include "absl/status/statusor.h"

namespace recall {

// The file's bytes; NOT_FOUND (naming the path) when it is missing or cannot be opened,
// DATA_LOSS on a read error.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path);

}  // namespace recall

#endif  // RECALL_MODEL_WHOLE_FILE_H_
