#include "trainer/quality.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "index/embedding_index.h"

namespace recall::trainer {
namespace {

double SquaredDistance(const float* a, const float* b, int dim) {
  double s = 0;
  for (int j = 0; j < dim; ++j) {
    const double d = static_cast<double>(a[j]) - b[j];
    s += d * d;
  }
  return s;
}

// log mean exp(-2 ||x - y||^2) over the distinct pairs of a random sample of rows.
double Uniformity(const float* emb, int64_t n, int dim, int64_t sample, uint64_t seed) {
  std::vector<int64_t> rows(n);
  std::iota(rows.begin(), rows.end(), 0);
  std::mt19937_64 rng(seed);
  std::shuffle(rows.begin(), rows.end(), rng);
  rows.resize(std::min(n, sample));
  const int64_t m = static_cast<int64_t>(rows.size());
  if (m < 2) return 0;
  // log-sum-exp over pairs, stable for any spread of distances.
  std::vector<double> terms;
  terms.reserve(m * (m - 1) / 2);
  for (int64_t a = 0; a < m; ++a) {
    for (int64_t b = a + 1; b < m; ++b) {
      terms.push_back(-2.0 * SquaredDistance(emb + rows[a] * dim, emb + rows[b] * dim, dim));
    }
  }
  const double hi = *std::max_element(terms.begin(), terms.end());
  double s = 0;
  for (double t : terms) s += std::exp(t - hi);
  return hi + std::log(s / terms.size());
}

}  // namespace

absl::StatusOr<RankingMetrics> EvaluateThroughIndex(const Dataset& d, const float* user_emb,
                                                    const float* item_emb, int dim,
                                                    const std::string& factory,
                                                    const RankingMetrics& exact,
                                                    const std::vector<int>& ks) {
  auto index = EmbeddingIndex::Create(dim, factory);
  if (!index.ok()) return index.status();
  std::vector<int64_t> ids(d.num_items);
  std::iota(ids.begin(), ids.end(), 0);
  if (auto s = (*index)->Build(ids, item_emb); !s.ok()) return s;
  return EvaluateThroughIndex(d, user_emb, dim, **index, ids, exact, ks);
}

absl::StatusOr<RankingMetrics> EvaluateThroughIndex(const Dataset& d, const float* user_emb,
                                                    int dim, const EmbeddingIndex& index,
                                                    absl::Span<const int64_t> external_ids,
                                                    const RankingMetrics& exact,
                                                    const std::vector<int>& ks) {
  absl::flat_hash_map<int64_t, int64_t> row_of;
  row_of.reserve(external_ids.size());
  for (size_t i = 0; i < external_ids.size(); ++i) row_of.emplace(external_ids[i], i);
  const int k = *std::max_element(ks.begin(), ks.end());
  std::vector<std::vector<int64_t>> top(d.num_users);
  constexpr int64_t kBlock = 1024;
  for (int64_t begin = 0; begin < d.num_users; begin += kBlock) {
    const int64_t end = std::min(d.num_users, begin + kBlock);
    std::vector<std::vector<int64_t>> excludes(end - begin);
    for (int64_t u = begin; u < end; ++u) {
      for (int64_t i : d.train[u]) excludes[u - begin].push_back(external_ids[i]);
    }
    auto hits = index.Search(user_emb + begin * dim, static_cast<int>(end - begin), k, excludes);
    if (!hits.ok()) return hits.status();
    for (int64_t u = begin; u < end; ++u) {
      for (int64_t id : (*hits)[u - begin].ids) {
        auto it = row_of.find(id);
        if (it != row_of.end()) top[u].push_back(it->second);
      }
    }
  }
  const RankingMetrics ann = EvaluateTopLists(d, top, ks);
  RankingMetrics out;
  out.num_users = ann.num_users;
  for (const auto& [key, v] : ann.values) out.values["ann_" + key] = v;
  for (int kk : ks) {
    const std::string r = absl::StrCat("recall@", kk);
    const double e = exact.Get(r);
    if (e > 0) out.values["ann_recall_loss@" + std::to_string(kk)] = 1.0 - ann.Get(r) / e;
  }
  return out;
}

RankingMetrics AlignmentUniformity(const Dataset& d, const float* user_emb, const float* item_emb,
                                   int dim, int64_t sample, uint64_t seed) {
  RankingMetrics out;
  double align = 0;
  int64_t pairs = 0;
  for (int64_t u = 0; u < d.num_users; ++u) {
    for (int64_t i : d.test[u]) {
      align += SquaredDistance(user_emb + u * dim, item_emb + i * dim, dim);
      ++pairs;
    }
  }
  out.values["alignment"] = pairs ? align / pairs : 0;
  out.values["uniformity_users"] = Uniformity(user_emb, d.num_users, dim, sample, seed);
  out.values["uniformity_items"] = Uniformity(item_emb, d.num_items, dim, sample, seed + 1);
  out.num_users = d.num_test_users();
  return out;
}

RankingMetrics SliceMetrics(const Dataset& d, const std::vector<std::vector<int64_t>>& top) {
  RankingMetrics out;
  // Cold users: evaluate the same lists on a dataset restricted to them.
  Dataset cold = d;
  int64_t num_cold = 0;
  for (int64_t u = 0; u < d.num_users; ++u) {
    if (d.train[u].size() > 5) {
      cold.test[u].clear();
    } else if (!d.test[u].empty()) {
      ++num_cold;
    }
  }
  const RankingMetrics c = EvaluateTopLists(cold, top, {20});
  out.values["cold_users"] = static_cast<double>(num_cold);
  out.values["cold_recall@20"] = c.Get("recall@20");
  out.values["cold_ndcg@20"] = c.Get("ndcg@20");

  // Long tail: the bottom 80% of items by train popularity (ties by higher id count as tail).
  const std::vector<int64_t> pop = d.ItemPopularity();
  std::vector<int64_t> order(d.num_items);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return pop[a] > pop[b]; });
  std::vector<char> tail(d.num_items, 0);
  const int64_t head = static_cast<int64_t>(std::ceil(0.2 * d.num_items));
  for (int64_t r = head; r < d.num_items; ++r) tail[order[r]] = 1;
  double share = 0;
  int64_t users = 0, test_total = 0, test_tail = 0;
  for (int64_t u = 0; u < d.num_users; ++u) {
    if (d.test[u].empty()) continue;
    for (int64_t i : d.test[u]) {
      ++test_total;
      test_tail += tail[i];
    }
    if (u >= static_cast<int64_t>(top.size()) || top[u].empty()) continue;
    const size_t n = std::min<size_t>(20, top[u].size());
    int64_t t = 0;
    for (size_t r = 0; r < n; ++r) t += tail[top[u][r]];
    share += static_cast<double>(t) / n;
    ++users;
  }
  out.values["longtail_share@20"] = users ? share / users : 0;
  out.values["longtail_share_test"] = test_total ? static_cast<double>(test_tail) / test_total : 0;
  out.num_users = users;
  return out;
}

}  // namespace recall::trainer
