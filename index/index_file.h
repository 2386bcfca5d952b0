// IndexFile: the index file of a version (items.faiss), in plain FAISS serialization that FAISS
// itself reads: IndexIDMap2(index) or, for ",RFlat" kinds, IndexIDMap2(IndexRefine(index,
// IndexFlat of exact vectors)) with the re-rank depth in IndexRefine's k_factor. The id map
// holds each internal label's external id (a hidden label's id is EmbeddingIndex::kReservedId).
// Format notes: index/README.md ("Exact re-rank", "File format (Save/Load)").
//
// Thread-safety: the writers only read their arguments (callers hold the index's shared lock).
// Errors: as stated per function.

#ifndef TOWER_RECALL_INDEX_INDEX_FILE_H_
#define TOWER_RECALL_INDEX_INDEX_FILE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace faiss {
struct Index;
struct IOWriter;
}  // namespace faiss

namespace recall {

// An index file, unwrapped.
struct IndexFileContents {
  std::unique_ptr<faiss::Index> index;  // its sequential positions are the internal labels
  std::unique_ptr<faiss::Index> exact;  // ",RFlat" files: the exact store; null otherwise
  std::vector<int64_t> label_to_id;     // index->ntotal entries
  float k_factor = 0;                   // ",RFlat" files: the stored re-rank depth (>= 1)
};

// Reads `path`. A file without an id map (plain FAISS) gets the ids 0..ntotal-1. NOT_FOUND: it
// cannot be opened; DATA_LOSS: FAISS cannot read it, or its parts disagree (id map size, the
// exact store's size, dimension or metric); otherwise as FaissGuard (out of memory, ...).
absl::StatusOr<IndexFileContents> ReadIndexFile(const std::string& path);

// Writes the file of `index` (+ `exact`, nullable) to `writer`, borrowing the structures (no
// copy of the vectors). Throws what FAISS throws.
void WriteIndexFile(const faiss::Index& index, const faiss::Index* exact, float k_factor,
                    const std::vector<int64_t>& label_to_id, faiss::IOWriter* writer);

// The bytes WriteIndexFile writes for these arguments, without writing them. Throws as it.
size_t IndexFileBytes(const faiss::Index& index, const faiss::Index* exact, float k_factor,
                      const std::vector<int64_t>& label_to_id);

}  // namespace recall

#endif  // TOWER_RECALL_INDEX_INDEX_FILE_H_
