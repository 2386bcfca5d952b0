// Vocabulary: the sorted set of ids known at training time. Row of a known id = 1 + its rank;
// unknown ids map to row 0 (OOV). Immutable after construction: thread-safe for readers.
#ifndef RECALL_MODEL_VOCABULARY_H_
#define RECALL_MODEL_VOCABULARY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace recall {

class Vocabulary {
 public:
  Vocabulary() = default;
  // Sorts and de-duplicates `ids`.
  explicit Vocabulary(std::vector<int64_t> ids);

  // 1 + rank for a known id, 0 for an unknown one.
  int64_t Row(int64_t id) const;
  int64_t size() const { return static_cast<int64_t>(ids_.size()); }
  const std::vector<int64_t>& ids() const { return ids_; }

  // File format: little-endian int64 ids, ascending, no header.
  absl::Status Save(const std::string& path) const;
  static absl::StatusOr<Vocabulary> Load(const std::string& path);

 private:
  std::vector<int64_t> ids_;
};

}  // namespace recall

#endif  // RECALL_MODEL_VOCABULARY_H_
