// EmbeddingIndex: an inner-product vector index over FAISS with int64 external ids, online
// upsert/remove, per-query exclusions applied inside the FAISS search, an optional exact
// re-rank of compressed kinds, and save/load.
//
// It knows nothing about towers, models or gRPC; it depends on FAISS and Abseil only.
// Design notes (internal labels, tombstones, file format, defaults): index/README.md.
//
// Thread safety: every method may be called concurrently with every other method on the same
// object. Readers (Search, Contains, Reconstruct, Save, size, num_hidden, dim, factory,
// generation) run in parallel with each other. Writers (Build, Upsert, Remove, Compact,
// SetSearchParameter) are serialized among themselves; a writer blocks readers only while it
// mutates the FAISS structure (Upsert, SetSearchParameter) or swaps in a rebuilt one (Build,
// Compact: the expensive part runs while searches continue). Waiting writers are not starved
// by a stream of readers (absl::Mutex).
//
// Errors: no method throws. FAISS exceptions and std::bad_alloc are converted to absl::Status.

#ifndef TOWER_RECALL_INDEX_EMBEDDING_INDEX_H_
#define TOWER_RECALL_INDEX_EMBEDDING_INDEX_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "index/faiss_kind.h"
#include "index/id_map.h"

namespace faiss {
struct Index;
}  // namespace faiss

namespace recall {

class HnswInserter;

// Results of one query: external ids and inner-product scores, by descending score.
// Size <= k; fewer when fewer live, non-excluded items exist (or the approximate index
// found fewer).
struct SearchHits {
  std::vector<int64_t> ids;
  std::vector<float> scores;
};

class EmbeddingIndex {
 public:
  // Default HNSW efSearch and IVF nprobe (capped at nlist) of a newly created index.
  static constexpr int kDefaultEfSearch = 64;
  static constexpr int kDefaultNprobe = 16;
  // Default re-rank depth of ",RFlat" kinds: k_factor * k candidates are re-scored exactly.
  static constexpr double kDefaultKFactor = 2;
  // HNSW efConstruction of bulk loads (Build, Compact); online Upserts use the structure's own
  // value (FAISS's 40), since each insertion costs about efConstruction distance evaluations.
  static constexpr int kBulkEfConstruction = 200;
  // Items an HNSW Upsert inserts per exclusive hold of the index (~0.25 ms each at 1M items).
  static constexpr size_t kHnswUpsertChunk = 4;
  // The reserved external id: FAISS uses -1 for "no result" and for hidden entries in the file.
  static constexpr int64_t kReservedId = IdMap::kHidden;

  // Creates an empty index of dimension `dim` from a FAISS factory string, metric inner
  // product. Supported kinds (those whose FAISS 1.7.3 search honors SearchParameters::sel):
  // "Flat", "HNSW<M>[,storage]", "IVF<n>[_quantizer],<codec>", "SQ<bits>". A trailing ",RFlat"
  // keeps every vector exactly as well and re-scores the k_factor * k best candidates of the
  // (compressed) search exactly: FAISS's own IndexRefine ignores the selector, so EmbeddingIndex
  // does the re-rank itself. Errors: InvalidArgument for dim <= 0, an invalid factory string
  // (the message names it) or an unsupported kind (e.g. "PQ16", "IDMap,Flat",
  // "IVF256,PQ16x4fs", "IVF256,PQ16,Refine(Flat)").
  static absl::StatusOr<std::unique_ptr<EmbeddingIndex>> Create(int dim, std::string_view factory);

  // Loads a file written by Save (or any FAISS file holding an inner-product index of a
  // supported kind, optionally wrapped in IndexIDMap/IndexIDMap2 and, for ",RFlat", an
  // IndexRefine over a Flat store; without an id map the external ids are the positions
  // 0..ntotal-1). factory() is derived from the structure for Flat, HNSW<M>[,SQ<b>],
  // IVF<n>,{Flat,SQ<b>,PQ<m>} (+ ",RFlat") and is empty for other kinds; the two-argument
  // overload records the given factory string instead (e.g. from a manifest).
  // Errors: NotFound (no such file), DataLoss (unreadable/corrupt file), InvalidArgument
  // (wrong metric, unsupported kind).
  static absl::StatusOr<std::unique_ptr<EmbeddingIndex>> Load(const std::string& path);
  static absl::StatusOr<std::unique_ptr<EmbeddingIndex>> Load(const std::string& path,
                                                              std::string_view factory);

  // Writes the index to `path` (one plain FAISS file: an IndexIDMap2 over the inner index whose
  // id_map is internal label -> external id, -1 for hidden entries). Not atomic and not
  // fsynced: the caller publishes atomically. Runs concurrently with searches.
  absl::Status Save(const std::string& path) const;

  // Trains an empty, untrained index on `n` sample vectors (IVF: k-means coarse quantizer, then
  // the codec; SQ/PQ: the codec). If `coarse_from` is a trained IVF index with the same dim and
  // nlist, its coarse quantizer is copied instead of running k-means again (several codecs over
  // one clustering). FailedPrecondition if the index is not empty or already trained;
  // InvalidArgument for bad input or a training failure.
  absl::Status Train(const float* sample, int64_t n, const EmbeddingIndex* coarse_from = nullptr);
  bool is_trained() const;

  // Trains the index if it still needs training (IVF: k-means on the given vectors) and adds
  // them.
  // For an empty index only (FailedPrecondition otherwise). ids must be unique and != -1;
  // vectors: ids.size() x dim, row-major, finite. Training runs without blocking searches.
  absl::Status Build(absl::Span<const int64_t> ids, const float* vectors);

  // Adds new ids or replaces the vectors of existing ones (the old vector is hidden at once and
  // never returned again). Same input rules as Build. FailedPrecondition if the index needs
  // training and has not been built. Searches wait while vectors are added to FAISS: HNSW
  // inserts kHnswUpsertChunk items per exclusive hold and lets searches run in between, so a
  // search may see a prefix of the batch (each item atomically: its old vector hidden in the
  // step its new one appears), and generation() grows by one per chunk. A failure (out of
  // memory) leaves the chunks before it applied. Other kinds apply the batch in one hold; IVF
  // kinds assign the batch's lists before it, so the hold only appends codes.
  absl::Status Upsert(absl::Span<const int64_t> ids, const float* vectors);

  // Removes ids; returns how many of them were present. Removed ids are never returned by
  // Search again. Unknown ids are ignored.
  absl::StatusOr<int64_t> Remove(absl::Span<const int64_t> ids);

  // n queries (n x dim, row-major), top-k by inner product. `excludes`: empty = no exclusions,
  // else exactly n lists of external ids that query i must never get. Exclusions and hidden
  // entries are rejected inside the FAISS search through SearchParameters::sel, so each query
  // still gets k results when k eligible items exist. Queries run in parallel (OpenMP) when
  // n > 1; IVF kinds run the coarse quantizer once for the whole batch. ",RFlat" kinds return
  // exact scores (the k_factor * k best compressed candidates, re-scored). Errors: InvalidArgument (n < 0, k < 1, null queries with n > 0, non-finite values,
  // excludes.size() not in {0, n}).
  absl::StatusOr<std::vector<SearchHits>> Search(
      const float* queries, int n, int k,
      absl::Span<const std::vector<int64_t>> excludes = {}) const;
  // Same, and stores in *generation the generation() of the state that answered (nullable).
  absl::StatusOr<std::vector<SearchHits>> Search(const float* queries, int n, int k,
                                                 absl::Span<const std::vector<int64_t>> excludes,
                                                 uint64_t* generation) const;

  // Rebuilds the FAISS structure from the live vectors, dropping hidden (removed/replaced)
  // entries. Keeps external ids, IVF's trained coarse quantizer and the search parameters.
  // The rebuild runs while searches continue; only the final swap blocks them. Vectors are
  // copied exactly for Flat storage (HNSW<M>, IVF<n>,Flat, Flat); lossy codecs re-encode
  // their reconstructions.
  absl::Status Compact();

  bool Contains(int64_t id) const;
  // The live external ids, ascending.
  std::vector<int64_t> Ids() const;

  // The stored vector of `id` (NotFound if absent).
  absl::StatusOr<std::vector<float>> Reconstruct(int64_t id) const;
  // The stored vectors of the present ids among `ids`, under one shared hold: row r of `out`
  // (room for ids.size() x dim floats) is the vector of (*present)[r]; absent ids are skipped.
  // Returns how many were present. For bulk read-back (the live recall probe): one call per
  // chunk instead of a lock and an allocation per id.
  absl::StatusOr<int64_t> ReconstructMany(absl::Span<const int64_t> ids, float* out,
                                          std::vector<int64_t>* present) const;

  // Search-time parameters: "efSearch" (HNSW kinds), "nprobe" (IVF kinds; values above nlist
  // act as nlist), integers >= 1; "k_factor" (",RFlat" kinds), a number >= 1. Any other name
  // for the kind (and any name for plain Flat/SQ) -> InvalidArgument. The value is also stored
  // in the FAISS structure, so a saved file carries it.
  absl::Status SetSearchParameter(std::string_view name, double value);
  // Current value of a search parameter (same names; NotFound for a name the kind lacks).
  absl::StatusOr<double> GetSearchParameter(std::string_view name) const;

  // The search parameters this kind has, with their current values (name -> value).
  std::vector<std::pair<std::string, double>> SearchParameters() const;

  // Bytes a Save() would write now (the FAISS structures, exact store included); computed
  // without writing anything.
  int64_t ByteSize() const;
  // True for ",RFlat" kinds (an exact copy of every vector and a re-rank).
  bool reranks() const { return reranks_; }

  int dim() const { return dim_; }
  const std::string& factory() const { return factory_; }
  // Live items (distinct external ids).
  int64_t size() const;
  // Entries hidden (removed/replaced) but still in the FAISS structure, awaiting Compact().
  int64_t num_hidden() const;
  // Increments on every successful Build/Upsert (per chunk)/Remove/Compact.
  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }

  ~EmbeddingIndex();
  EmbeddingIndex(const EmbeddingIndex&) = delete;
  EmbeddingIndex& operator=(const EmbeddingIndex&) = delete;

 private:
  using Kind = FaissKind;

  EmbeddingIndex(int dim, std::string factory, std::unique_ptr<faiss::Index> index,
                 std::unique_ptr<faiss::Index> exact, Kind kind);

  absl::Status ValidateVectors(absl::Span<const int64_t> ids, const float* vectors,
                               const char* what) const;
  // Adds vectors to index_ under the writer lock and assigns the new labels to ids.
  // `ivf_lists` (IVF kinds, nullable): each vector's list, assigned before the exclusive hold.
  absl::Status AddLocked(absl::Span<const int64_t> ids, const float* vectors,
                         const int64_t* ivf_lists = nullptr) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int dim_;
  const std::string factory_;
  const Kind kind_;
  const bool reranks_;

  // Lock order: write_mu_ before mu_. write_mu_ serializes writers so a writer can do its
  // expensive part holding only a shared lock on mu_ (the state cannot change under it).
  mutable absl::Mutex write_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  mutable absl::Mutex mu_;

  // The FAISS index; its sequential positions are the internal labels 0..ntotal-1.
  std::unique_ptr<faiss::Index> index_ ABSL_GUARDED_BY(mu_);
  // ",RFlat" kinds: an IndexFlat holding every entry's exact vector under the same internal
  // label as index_ (hidden ones too, until Compact). Null otherwise.
  std::unique_ptr<faiss::Index> exact_ ABSL_GUARDED_BY(mu_);
  // Internal label <-> external id; a hidden (tombstoned) label holds kReservedId.
  IdMap ids_ ABSL_GUARDED_BY(mu_);
  int ef_search_ ABSL_GUARDED_BY(mu_) = kDefaultEfSearch;
  int nprobe_ ABSL_GUARDED_BY(mu_) = kDefaultNprobe;
  double k_factor_ ABSL_GUARDED_BY(mu_) = kDefaultKFactor;

  // Online HNSW insertion state (per-node locks, visited table), made at the first Upsert and
  // kept (index/hnsw_inserter.h).
  std::unique_ptr<HnswInserter> hnsw_inserter_ ABSL_GUARDED_BY(mu_);

  // Written only while holding mu_ exclusively, so a reader holding mu_ sees a stable value.
  std::atomic<uint64_t> generation_{0};
  // Searches waiting for their shared hold of mu_; a chunked Upsert lets them in first.
  mutable std::atomic<int> searches_waiting_{0};
};

}  // namespace recall

#endif  // TOWER_RECALL_INDEX_EMBEDDING_INDEX_H_
