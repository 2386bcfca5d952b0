#include "index/hnsw_inserter.h"

#include <algorithm>
#include <memory>
#include <numeric>

#include "faiss/IndexHNSW.h"
#include "faiss/impl/DistanceComputer.h"
#include "faiss/impl/FaissAssert.h"
#include "faiss/impl/HNSW.h"

namespace recall {
namespace {

using idx_t = faiss::Index::idx_t;

// HNSW minimizes; for inner product FAISS searches and links on the negated similarity.
struct NegatedDistance : faiss::DistanceComputer {
  explicit NegatedDistance(faiss::DistanceComputer* d) : base(d) {}
  void set_query(const float* x) override { base->set_query(x); }
  float operator()(idx_t i) override { return -(*base)(i); }
  float symmetric_dis(idx_t i, idx_t j) override { return -base->symmetric_dis(i, j); }
  faiss::DistanceComputer* base;
};

}  // namespace

HnswInserter::~HnswInserter() {
  for (omp_lock_t& l : locks_) omp_destroy_lock(&l);
}

void HnswInserter::Grow(size_t n) {
  if (locks_.size() < n) {
    // omp_lock_t may not be moved: destroy and make all anew (rare: capacity doubles).
    for (omp_lock_t& l : locks_) omp_destroy_lock(&l);
    std::vector<omp_lock_t> more(std::max(n, 2 * locks_.size()));
    for (omp_lock_t& l : more) omp_init_lock(&l);
    locks_.swap(more);
  }
  // New entries are 0, never a current mark (visno >= 1).
  if (visited_.visited.size() < n) {
    visited_.visited.resize(std::max(n, 2 * visited_.visited.size()));
  }
}

void HnswInserter::Insert(faiss::IndexHNSW& index, int64_t n, const float* x) {
  if (n == 0) return;
  FAISS_THROW_IF_NOT_MSG(index.storage != nullptr && index.is_trained,
                         "HNSW index without trained storage");
  const idx_t n0 = index.ntotal;
  index.storage->add(n, x);
  index.ntotal = index.storage->ntotal;
  faiss::HNSW& g = index.hnsw;
  g.prepare_level_tab(n, g.levels.size() == static_cast<size_t>(index.ntotal));
  Grow(static_cast<size_t>(index.ntotal));
  std::vector<idx_t> order(n);
  std::iota(order.begin(), order.end(), n0);
  std::stable_sort(order.begin(), order.end(),
                   [&](idx_t a, idx_t b) { return g.levels[a] > g.levels[b]; });
  std::unique_ptr<faiss::DistanceComputer> base(index.storage->get_distance_computer());
  NegatedDistance negated(base.get());
  faiss::DistanceComputer& dis = index.metric_type == faiss::METRIC_INNER_PRODUCT
                                     ? static_cast<faiss::DistanceComputer&>(negated)
                                     : *base;
  for (idx_t pt : order) {
    dis.set_query(x + (pt - n0) * index.d);
    g.add_with_locks(dis, g.levels[pt] - 1, static_cast<int>(pt), locks_, visited_);
  }
}

}  // namespace recall
