// Full-ranking evaluation (the protocol of the published tables; trainer/DATASETS.md):
// every user with at least one test item ranks ALL items except their train items (ties go to
// the lower item id); Recall@K = |topK ∩ test| / |test|; NDCG@K with binary relevance,
// DCG = Σ_{r=1..K} rel_r / log2(r + 1), ideal DCG over min(|test|, K) hits; both averaged over
// the evaluated users. Keys in RankingMetrics::values: "recall@K" and "ndcg@K" for each K.
//
// Results do not depend on the thread count or block size: per-user values are summed in user
// order.
#ifndef RECALL_TRAINER_EVALUATOR_H_
#define RECALL_TRAINER_EVALUATOR_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "trainer/dataset.h"

namespace recall::trainer {

struct RankingMetrics {
  std::map<std::string, double> values;  // "recall@20", "ndcg@20", "recall@50", "ndcg@50"
  int64_t num_users = 0;                 // users averaged over (those with >= 1 test item)

  // values[key], or 0 if absent.
  double Get(const std::string& key) const;
};

// "recall@20=0.16270 ndcg@20=0.13780 ... users=29858" (keys sorted by K, recall before ndcg).
std::string FormatMetrics(const RankingMetrics& m);

// score_block(begin, end, out) fills out[(u - begin) * num_items + i] with user u's score for
// item i, for users [begin, end). Called sequentially, one block at a time (it may use threads
// inside). NaN scores rank last.
using ScoreBlockFn = std::function<void(int64_t begin, int64_t end, float* out)>;

struct EvalOptions {
  std::vector<int> ks = {20, 50};
  int64_t block_users = 1024;  // users scored per score_block call
  int threads = 0;             // ranking threads; 0 = OpenMP default
  // If set, receives the top-max(ks) item ids of every evaluated user (empty for the others),
  // e.g. to compute slices (cold users, long-tail items) with EvaluateTopLists.
  std::vector<std::vector<int64_t>>* top_lists = nullptr;
};

// Ranks all items for every user with >= 1 test item, removing the user's train items; ties
// broken by lower item id. Blocks without an evaluated user are not scored.
RankingMetrics EvaluateFullRanking(const Dataset& d, const ScoreBlockFn& score_block,
                                   const EvalOptions& o = {});

// The same metrics from precomputed ranked lists (e.g. an ANN index search that already
// excluded train items): top[u] = ranked item ids for user u. Users without test items are
// ignored; an evaluated user missing from top (u >= top.size()) counts with zero hits. Lists
// are used as given (train items in them are NOT removed, duplicates are not collapsed).
RankingMetrics EvaluateTopLists(const Dataset& d, const std::vector<std::vector<int64_t>>& top,
                                const std::vector<int>& ks = {20, 50});

// Scores are dot products of row-major embeddings (num_users x dim, num_items x dim), one
// cblas_sgemm per block of users.
RankingMetrics EvaluateEmbeddings(const Dataset& d, const float* user_emb, const float* item_emb,
                                  int dim, const EvalOptions& o = {});

// Ranks items by train popularity (Dataset::ItemPopularity), ties by lower id; the ItemPop
// baseline. Walks one global order per user instead of scoring every item (same result as
// EvaluateFullRanking with popularity scores). Honors o.ks, o.threads and o.top_lists.
RankingMetrics EvaluatePopularity(const Dataset& d, const EvalOptions& o = {});

}  // namespace recall::trainer

#endif  // RECALL_TRAINER_EVALUATOR_H_
