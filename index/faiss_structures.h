// FaissStructures: what EmbeddingIndex knows of FAISS 1.7.3's structures, kind by kind: which
// kinds can serve exclusions inside the search, the factory string a loaded structure stands
// for, an empty structure trained like another, headroom for online adds, the exact store of
// ",RFlat" kinds, and the flat quantizer the BLAS coarse step can replace.
// Why each rule holds for 1.7.3: index/README.md ("Supported factory strings", "Exact re-rank").
//
// Thread-safety: functions that take a const index only read it (safe beside searches); the
// others mutate their argument and need the caller's exclusive hold. Errors: as stated.

#ifndef TOWER_RECALL_INDEX_FAISS_STRUCTURES_H_
#define TOWER_RECALL_INDEX_FAISS_STRUCTURES_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "index/faiss_kind.h"

namespace faiss {
struct Index;
struct IndexFlat;
struct IndexIVF;
}  // namespace faiss

namespace recall {

// The kind of `index`, or INVALID_ARGUMENT naming why a structure cannot serve exclusions
// (its search ignores or refuses SearchParameters::sel).
absl::StatusOr<FaissKind> KindOf(const faiss::Index* index);

// True for an IndexFlat (any metric): brute force, whose codes are the vectors.
bool IsFlat(const faiss::Index* index);

// The suffix that asks for an exact re-rank (FAISS's own spelling for IndexRefineFlat).
inline constexpr absl::string_view kRerankSuffix = ",RFlat";

// The factory string of the kinds whose structure determines it (`reranks` appends
// kRerankSuffix); "" otherwise.
std::string DeriveFactory(const faiss::Index* index, bool reranks);

// True for the kinds whose codes are the exact vectors: a re-rank would only store them twice.
bool StoresExactVectors(const faiss::Index* index);

// An empty inner-product IndexFlat for the exact copies of a ",RFlat" kind.
std::unique_ptr<faiss::Index> NewExactStore(int dim);

// Drops the entries of an exact store past `n` (keeps it in step with the main structure after
// a partial failure).
void TruncateExact(faiss::Index* exact, int64_t n);

// A new, empty index with the configuration and training state of `old` (HNSW graph
// parameters, IVF coarse quantizer and codec training, direct map, search defaults).
// Only reads `old`. Throws what FAISS throws.
std::unique_ptr<faiss::Index> MakeEmptyLike(const faiss::Index& old);

// Items of online headroom reserved for an index of n items when it is loaded, and the
// reservation itself (flat codes; HNSW storage and graph). Why: faiss_structures.cc. Throws
// std::bad_alloc only.
int64_t OnlineAddHeadroom(int64_t n);
void ReserveForOnlineAdds(faiss::Index* index, int64_t extra);

// The quantizer of `ivf` when the BLAS coarse step (index/blas_ivf_scan.h) can replace it: a
// flat inner-product index holding exactly the nlist centroids; null otherwise.
const faiss::IndexFlat* BlasQuantizer(const faiss::IndexIVF& ivf);

}  // namespace recall

#endif  // TOWER_RECALL_INDEX_FAISS_STRUCTURES_H_
