// fvecs: the texmex / FAISS benchmark format for float vectors. Each row is an int32 dimension
// d followed by d float32 values (little-endian, as written by x86). Versions carry their
// tuning queries in it (tune_queries.fvecs), and `recall-index tune --queries_from` reads it.
//
// Thread safety: free functions without shared state.
// Errors: NotFound (no file), DataLoss (truncated file, rows of differing dimension),
// InvalidArgument (bad arguments), errno statuses for write failures.

#ifndef TOWER_RECALL_INDEX_VECTOR_FILE_H_
#define TOWER_RECALL_INDEX_VECTOR_FILE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace recall {

struct VectorSet {
  int dim = 0;
  std::vector<float> values;  // rows() x dim, row-major
  int64_t rows() const { return dim > 0 ? static_cast<int64_t>(values.size()) / dim : 0; }
};

absl::Status WriteFvecs(const std::string& path, const float* values, int64_t rows, int dim);
absl::StatusOr<VectorSet> ReadFvecs(const std::string& path);

}  // namespace recall

#endif  // TOWER_RECALL_INDEX_VECTOR_FILE_H_
