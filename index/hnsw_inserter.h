// HnswInserter: online insertion into a FAISS HNSW graph without IndexHNSW::add's per-call
// setup. FAISS 1.7.3's hnsw_add_vertices creates and initializes one OpenMP lock per node of the
// whole index, and a visited table as large, on every add call (~5.7 ms at 1.2M nodes, the cost
// of ~20 insertions: upserts in chunks of 4 fell from ~2,100 to 558 items/s). An inserter makes
// both once and grows them geometrically; each insertion is FAISS's own routine
// (HNSW::add_with_locks) with FAISS's negated inner product as the distance, in FAISS's level
// order (highest first), one point at a time (index.add shuffles each level and goes parallel).
//
// Thread-safety: none; one inserter per index, used under the index's exclusive hold.
// Errors: Insert throws what FAISS throws (the caller's FaissGuard turns it into a status).

#ifndef TOWER_RECALL_INDEX_HNSW_INSERTER_H_
#define TOWER_RECALL_INDEX_HNSW_INSERTER_H_

#include <omp.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "faiss/impl/AuxIndexStructures.h"

namespace faiss {
struct IndexHNSW;
}  // namespace faiss

namespace recall {

class HnswInserter {
 public:
  HnswInserter() = default;
  HnswInserter(const HnswInserter&) = delete;
  HnswInserter& operator=(const HnswInserter&) = delete;
  ~HnswInserter();

  // Adds the n vectors x to a trained index and links them into its graph.
  void Insert(faiss::IndexHNSW& index, int64_t n, const float* x);

 private:
  // Room for n nodes in the lock table and the visited table.
  void Grow(size_t n);

  std::vector<omp_lock_t> locks_;
  faiss::VisitedTable visited_{0};
};

}  // namespace recall

#endif  // TOWER_RECALL_INDEX_HNSW_INSERTER_H_
