// BLAS kernels for the inner-product IVF search: the coarse assignment against a flat
// quantizer and the scan of IVF-Flat lists, each one GEMV/GEMM call into the machine's BLAS.
//
// Why: Debian's FAISS 1.7.3 is compiled for baseline x86-64 (no SSE3/AVX), so its distance
// loops (IndexFlat below 20 queries, IVFFlatScanner, every fvec_inner_product) are scalar,
// while OpenBLAS picks an AVX2/AVX-512 kernel at run time. On the 1M-item IVF4096,Flat version
// this made the in-process engine 1.7-2.4x faster (index/README.md, "Search kernels"). The
// results are FAISS's items up to float rounding (the sums run in another order).
//
// Thread-safety: pure functions over read-only inputs; callers hold the index's shared lock.
// Each call runs on the calling thread (BLAS's own threads only where the caller's OpenMP
// settings allow them). Memory: each thread keeps its largest score block (at most
// 64 x nlist floats for the coarse step, one list's length for the scan) for its next call.
#ifndef RECALL_INDEX_BLAS_IVF_SCAN_H_
#define RECALL_INDEX_BLAS_IVF_SCAN_H_

#include <cstdint>

#include "faiss/IndexIVF.h"
#include "faiss/impl/IDSelector.h"

namespace recall {

// For each of the n queries (row-major n x d), the `nprobe` rows of `centroids` (row-major
// nlist x d) with the largest inner products: keys[i*nprobe + j] and their scores in `dist`,
// best first; -1 / -inf past nlist. Throws std::bad_alloc only.
void BlasCoarseAssign(const float* centroids, int64_t nlist, int d, const float* queries, int n,
                      int nprobe, float* dist, int64_t* keys);

// The k best (largest inner product) entries of `lists` among the lists keys[0..nprobe) for
// one query, skipping labels `sel` rejects (null = none): labels and scores best first, -1 /
// -inf where fewer than k qualify. Every list holds raw float vectors (IndexIVFFlat's codes).
// Adds the lists visited and the distances computed to `stats` (nullable).
void BlasScanFlatLists(const faiss::InvertedLists& lists, int d, const float* query,
                       const int64_t* keys, int nprobe, int k, const faiss::IDSelector* sel,
                       float* dist, int64_t* labels, faiss::IndexIVFStats* stats);

}  // namespace recall

#endif  // RECALL_INDEX_BLAS_IVF_SCAN_H_
