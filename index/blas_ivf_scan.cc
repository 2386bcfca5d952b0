#include "index/blas_ivf_scan.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "faiss/utils/Heap.h"

// The Fortran BLAS interface, declared as FAISS declares it (FAISS links the same library).
extern "C" {
int sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
           const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
           const float* beta, float* c, const int* ldc);
int sgemv_(const char* trans, const int* m, const int* n, const float* alpha, const float* a,
           const int* lda, const float* x, const int* incx, const float* beta, float* y,
           const int* incy);
}

namespace recall {
namespace {

// y[0..rows) = rows x d matrix `a` (row-major) times x.
void RowsDotQuery(const float* a, int64_t rows, int d, const float* x, float* y) {
  const char trans = 'T';  // row-major rows x d is column-major d x rows, transposed
  const int m = d, n = static_cast<int>(rows), lda = d, inc = 1;
  const float one = 1.0f, zero = 0.0f;
  sgemv_(&trans, &m, &n, &one, a, &lda, x, &inc, &zero, y, &inc);
}

// The first position of the largest of s[0..n), n > 0. Two passes: the maximum, 8 floats per
// step in two SSE registers (x86-64's baseline), then the first position holding it.
// std::max_element is one dependent compare chain per element. NaN scores are skipped (every
// comparison with them is false); an all-NaN row gives its last position.
int64_t ArgMax(const float* s, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  int64_t j = 0;
#if defined(__SSE2__)
  __m128 a = _mm_set1_ps(m);
  __m128 b = a;
  for (; j + 8 <= n; j += 8) {
    a = _mm_max_ps(_mm_loadu_ps(s + j), a);
    b = _mm_max_ps(_mm_loadu_ps(s + j + 4), b);
  }
  float lanes[4];
  _mm_storeu_ps(lanes, _mm_max_ps(a, b));
  for (float v : lanes) m = v > m ? v : m;
#endif
  for (; j < n; ++j) m = s[j] > m ? s[j] : m;
  int64_t i = 0;
  while (i + 1 < n && s[i] != m) ++i;  // bounded: a NaN score must not run past the end
  return i;
}

// The top `k` of scores[0..n) into (dist, keys), best first; -1 past n.
void TopK(const float* scores, int64_t n, int k, float* dist, int64_t* keys) {
  if (k == 1 && n > 0) {  // nprobe 1, e.g. an online write's list: a scan, not a heap
    *keys = ArgMax(scores, n);
    *dist = scores[*keys];
    return;
  }
  faiss::minheap_heapify(k, dist, keys);
  for (int64_t j = 0; j < n; ++j) {
    if (scores[j] > dist[0]) faiss::minheap_replace_top(k, dist, keys, scores[j], j);
  }
  faiss::minheap_reorder(k, dist, keys);
}

// Rows of queries a GEMM scores at once: bounds the n x nlist score block.
constexpr int kQueriesPerBlock = 64;

}  // namespace

void BlasCoarseAssign(const float* centroids, int64_t nlist, int d, const float* queries, int n,
                      int nprobe, float* dist, int64_t* keys) {
  if (n <= 0 || nprobe <= 0) return;
  // One score block per thread, reused across calls: allocating (and zeroing) it per call was
  // ~1/6 of an online write's CPU at 50 vectors x 4,096 lists (800 KB).
  thread_local std::vector<float> scores;
  const size_t block = static_cast<size_t>(std::min(n, kQueriesPerBlock)) * nlist;
  if (scores.size() < block) scores.resize(block);
  for (int q0 = 0; q0 < n; q0 += kQueriesPerBlock) {
    const int m = std::min(kQueriesPerBlock, n - q0);
    const float* x = queries + static_cast<size_t>(q0) * d;
    if (m == 1) {
      RowsDotQuery(centroids, nlist, d, x, scores.data());
    } else {
      // scores (m x nlist, row-major) = x (m x d) centroids^T: column-major, nlist x m =
      // centroids^T (nlist x d) x^T (d x m).
      const char ta = 'T', tb = 'N';
      const int rows = static_cast<int>(nlist), cols = m, inner = d, ld = d,
                ldc = static_cast<int>(nlist);
      const float one = 1.0f, zero = 0.0f;
      sgemm_(&ta, &tb, &rows, &cols, &inner, &one, centroids, &ld, x, &ld, &zero,
             scores.data(), &ldc);
    }
    for (int i = 0; i < m; ++i) {
      const size_t row = static_cast<size_t>(q0 + i) * nprobe;
      TopK(scores.data() + static_cast<size_t>(i) * nlist, nlist, nprobe, dist + row,
           keys + row);
    }
  }
}

void BlasScanFlatLists(const faiss::InvertedLists& lists, int d, const float* query,
                       const int64_t* keys, int nprobe, int k, const faiss::IDSelector* sel,
                       float* dist, int64_t* labels, faiss::IndexIVFStats* stats) {
  faiss::minheap_heapify(k, dist, labels);
  // One scratch row of scores per thread, reused across calls (lists are ~N/nlist long).
  thread_local std::vector<float> scores;
  size_t visited = 0, computed = 0, updates = 0;
  for (int p = 0; p < nprobe; ++p) {
    const int64_t list = keys[p];
    if (list < 0) continue;
    const size_t size = lists.list_size(list);
    if (size == 0) continue;
    faiss::InvertedLists::ScopedCodes codes(&lists, list);
    faiss::InvertedLists::ScopedIds ids(&lists, list);
    if (scores.size() < size) scores.resize(size);
    // The loop below reads the ids of the entries that beat the heap, which at the start of a
    // scan is most of them: a separate array that is cold in cache. Fetch its head while the
    // GEMV streams the codes; capped, so a long list's prefetches cannot evict one another.
    constexpr uintptr_t kLine = 64, kMaxPrefetchBytes = 4096;
    const uintptr_t first = reinterpret_cast<uintptr_t>(ids.get()) & ~(kLine - 1);
    const uintptr_t end = reinterpret_cast<uintptr_t>(ids.get() + size);
    for (uintptr_t a = first; a < end && a - first < kMaxPrefetchBytes; a += kLine) {
      __builtin_prefetch(reinterpret_cast<const void*>(a));
    }
    RowsDotQuery(reinterpret_cast<const float*>(codes.get()), static_cast<int64_t>(size), d,
                 query, scores.data());
    ++visited;
    computed += size;
    // The selector is asked only about an entry that would enter the heap.
    for (size_t j = 0; j < size; ++j) {
      if (scores[j] <= dist[0]) continue;
      if (sel != nullptr && !sel->is_member(ids[j])) continue;
      faiss::minheap_replace_top(k, dist, labels, scores[j], ids[j]);
      ++updates;
    }
  }
  faiss::minheap_reorder(k, dist, labels);
  if (stats != nullptr) {
    stats->nq += 1;
    stats->nlist += visited;
    stats->ndis += computed;
    stats->nheap_updates += updates;
  }
}

}  // namespace recall
