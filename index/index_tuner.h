// IndexTuner: chooses an EmbeddingIndex kind and its search parameters for one catalog, against
// a recall target, by measuring candidates on real queries. The method, the candidates and why
// the pick is by counted work: index/TUNING.md.
//
// For each candidate factory string it builds the index over the items (IVF kinds on a sample
// of the items, sharing one clustering per nlist), sweeps the search parameters (efSearch;
// nprobe; k_factor for ",RFlat" kinds) and records per point: recall@k against exact top-k,
// the distances FAISS counts per query (plus the coarse quantizer's and the re-rank's),
// single-thread queries/s, build time, bytes and the cost of one online insertion. Each kind's
// setting is its point with the fewest counted distances among those meeting the recall target
// within the memory budget (deterministic); across kinds the least counted work wins unless
// another kind is measured decisively faster (PickPoint), since counted distances do not
// compare across kinds: a graph's distance is a cache miss, a list scan's is streamed.
//
// Thread safety: TuneIndex is a free function; concurrent calls share nothing but FAISS's
// global search statistics, so run one at a time (it reads them single-threaded).
// Errors: InvalidArgument for bad input; what EmbeddingIndex returns otherwise.

#ifndef TOWER_RECALL_INDEX_INDEX_TUNER_H_
#define TOWER_RECALL_INDEX_INDEX_TUNER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "index/embedding_index.h"

namespace recall {

struct TuneOptions {
  // recall@k is measured against the exact top-k. Default 100: a retrieval stage hands
  // about that many candidates to ranking.
  int k = 100;
  // The pick must reach this recall@k. Default 0.95.
  double recall_target = 0.95;
  // Candidates whose index (Save bytes) exceeds this are not picked. Default 0: no budget.
  int64_t memory_budget_bytes = 0;
  // Wall-clock budget for the whole tuning, ground truth included. Candidates whose
  // estimated build would overrun it are skipped (and listed as skipped). Default 1200 s.
  double budget_s = 1200;
  // Factory strings to try; empty = DefaultCandidates(n, dim).
  std::vector<std::string> candidates;
  // The last this-many items are inserted online after the bulk build, in batches of 50, to
  // time one insertion. Default 1000 (at most 1% of the items).
  int insert_probe = 1000;
  // Queries timed one per call (the serving path: each with its own exclusion list) for the
  // single-thread queries/s, best of three passes. Default 300 (at most the queries given).
  int qps_queries = 300;
  // A kind replaces the least-counted-work pick only when its measured single-thread QPS is
  // at least this many times the pick's. Default 1.5: far above timing noise (a few %), far
  // below the gaps that counting misses (20x between a graph and IVF lists at 1M items).
  double decisive_speedup = 1.5;
};

// One measured point: a kind at one setting of its search parameters.
struct TunePoint {
  std::string factory;
  std::vector<std::pair<std::string, double>> params;  // name -> value, as SetSearchParameter
  double recall = 0;               // recall@k against exact search
  double distances_per_query = 0;  // FAISS-counted + coarse quantizer + re-rank
  double qps = 0;                  // single thread, one query per call
  double build_s = 0;              // training + bulk add of the kind (shared clustering: 0)
  int64_t bytes = 0;               // EmbeddingIndex::ByteSize
  double insert_us = 0;            // one online insertion (batches of 50)
  bool meets_target = false;
  bool within_budget = true;
  std::string note;                // why a kind has no points (skipped, failed)
};

struct TuneResult {
  std::vector<TunePoint> points;  // every measured point, kinds in the order tried
  int chosen = -1;                // index into points; -1 when nothing was measured
  bool target_met = false;        // false: the chosen point is the best recall within budget
  double ground_truth_s = 0;
  double total_s = 0;
  // The chosen kind, built over every item, its search parameters set to the chosen point.
  std::unique_ptr<EmbeddingIndex> index;
};

// The pick among measured points (index into points, -1 if none was measured): per kind its
// cheapest point meeting the target within budget; across kinds the least counted work P,
// unless some kinds' QPS >= decisive_speedup x P's, then the least counted work among those.
// With no point meeting the target: the best recall (within budget when possible).
int PickPoint(const std::vector<TunePoint>& points, double decisive_speedup);

// The candidate factory strings for n items of dimension dim: IVF<n>,{Flat, SQ8,RFlat,
// PQ<m>,RFlat} at nlist ~ sqrt(n) and ~4 sqrt(n) (powers of two), then HNSW{16,32} and
// HNSW{16,32},SQ8,RFlat; for small catalogs (< 2,000 items) Flat alone.
std::vector<std::string> DefaultCandidates(int64_t n, int dim);

// ids: n unique item ids; vectors: n x dim; queries: nq x dim (tower outputs of held-out
// users). InvalidArgument for n < 1, nq < 1, k < 1 or a target outside (0, 1].
absl::StatusOr<TuneResult> TuneIndex(absl::Span<const int64_t> ids, const float* vectors,
                                     int dim, const float* queries, int nq,
                                     const TuneOptions& options);

}  // namespace recall

#endif  // TOWER_RECALL_INDEX_INDEX_TUNER_H_
