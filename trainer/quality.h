// Quality report of trained embeddings beyond exact Recall/NDCG: ranking through the built
// FAISS index (what serving returns), alignment and uniformity (Wang & Isola 2020), and slices
// (cold users, long-tail exposure). Keys are added to RankingMetrics::values.
#ifndef RECALL_TRAINER_QUALITY_H_
#define RECALL_TRAINER_QUALITY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "index/embedding_index.h"
#include "trainer/dataset.h"
#include "trainer/evaluator.h"

namespace recall::trainer {

// Ranks through an index built with `factory` over item_emb (default search parameters),
// excluding each user's train items inside the search. Keys "ann_recall@K", "ann_ndcg@K" and
// "ann_recall_loss@K" = 1 - ann_recall@K / exact_recall@K when `exact` has recall@K.
absl::StatusOr<RankingMetrics> EvaluateThroughIndex(const Dataset& d, const float* user_emb,
                                                    const float* item_emb, int dim,
                                                    const std::string& factory,
                                                    const RankingMetrics& exact,
                                                    const std::vector<int>& ks = {20, 50});

// The same through an existing index whose ids are external: external_ids[i] is item row i's
// (evaluation and exclusions are in rows). The index's own search parameters apply.
absl::StatusOr<RankingMetrics> EvaluateThroughIndex(const Dataset& d, const float* user_emb,
                                                    int dim, const EmbeddingIndex& index,
                                                    absl::Span<const int64_t> external_ids,
                                                    const RankingMetrics& exact,
                                                    const std::vector<int>& ks = {20, 50});

// "alignment": mean ||u - v||^2 over test (user, item) pairs; "uniformity_users" and
// "uniformity_items": log mean exp(-2 ||x - y||^2) over all pairs of up to `sample` random
// rows (seeded). Lower is better for all three.
RankingMetrics AlignmentUniformity(const Dataset& d, const float* user_emb, const float* item_emb,
                                   int dim, int64_t sample = 4096, uint64_t seed = 1);

// From the exact top lists (EvalOptions::top_lists): "cold_recall@20" / "cold_ndcg@20" over
// evaluated users with <= 5 train items ("cold_users" = their count), and
// "longtail_share@20": the mean share of top-20 slots holding long-tail items (the bottom 80%
// of items by train popularity), beside "longtail_share_test", the share of long-tail items
// among the test interactions (what a perfectly calibrated ranker would show).
RankingMetrics SliceMetrics(const Dataset& d, const std::vector<std::vector<int64_t>>& top);

}  // namespace recall::trainer

#endif  // RECALL_TRAINER_QUALITY_H_
