#include "trainer/evaluator.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <numeric>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace recall::trainer {
namespace {

const std::vector<int64_t> kEmpty;

const std::vector<int64_t>& ListOf(const std::vector<std::vector<int64_t>>& lists, int64_t u) {
  return u < static_cast<int64_t>(lists.size()) ? lists[u] : kEmpty;
}

// What every evaluation needs: the valid cutoffs, max K, and discount tables.
struct Plan {
  std::vector<int> ks;          // positive, distinct, ascending
  int kmax = 0;
  std::vector<double> disc;     // disc[r] = 1 / log2(r + 2), r < kmax
  std::vector<double> idcg;     // idcg[n] = sum_{r < n} disc[r], n <= kmax

  explicit Plan(const std::vector<int>& in) {
    for (int k : in) {
      if (k > 0) ks.push_back(k);
    }
    std::sort(ks.begin(), ks.end());
    ks.erase(std::unique(ks.begin(), ks.end()), ks.end());
    kmax = ks.empty() ? 0 : ks.back();
    disc.resize(kmax);
    idcg.assign(kmax + 1, 0.0);
    for (int r = 0; r < kmax; ++r) {
      disc[r] = 1.0 / std::log2(static_cast<double>(r) + 2.0);
      idcg[r + 1] = idcg[r] + disc[r];
    }
  }
  int width() const { return 2 * static_cast<int>(ks.size()); }

  // Writes recall@k, ndcg@k for each k (interleaved) for one user's ranked list.
  void UserMetrics(const int64_t* top, int64_t len, const std::vector<int64_t>& test,
                   double* out) const {
    len = std::min<int64_t>(len, kmax);
    const double num_test = static_cast<double>(test.size());
    double hits = 0.0, dcg = 0.0;
    size_t next = 0;
    for (int64_t r = 0; r < kmax && next < ks.size(); ++r) {
      if (r < len && std::binary_search(test.begin(), test.end(), top[r])) {
        hits += 1.0;
        dcg += disc[r];
      }
      while (next < ks.size() && ks[next] == r + 1) {
        const int k = ks[next];
        out[2 * next] = hits / num_test;
        out[2 * next + 1] = dcg / idcg[std::min<int64_t>(k, static_cast<int64_t>(test.size()))];
        ++next;
      }
    }
  }

  // Averages per-user rows (in user order, so the sum is independent of threading).
  RankingMetrics Aggregate(const std::vector<double>& rows, int64_t num_rows) const {
    RankingMetrics m;
    m.num_users = num_rows;
    std::vector<double> sum(width(), 0.0);
    for (int64_t r = 0; r < num_rows; ++r) {
      for (int j = 0; j < width(); ++j) sum[j] += rows[r * width() + j];
    }
    for (size_t i = 0; i < ks.size(); ++i) {
      const double denom = num_rows > 0 ? static_cast<double>(num_rows) : 1.0;
      m.values[absl::StrCat("recall@", ks[i])] = sum[2 * i] / denom;
      m.values[absl::StrCat("ndcg@", ks[i])] = sum[2 * i + 1] / denom;
    }
    return m;
  }
};

// Users with at least one test item, ascending; row[u] = their index in that list, or -1.
struct EvalUsers {
  std::vector<int64_t> users;
  std::vector<int64_t> row;
  explicit EvalUsers(const Dataset& d) : row(std::max<int64_t>(d.num_users, 0), -1) {
    for (int64_t u = 0; u < d.num_users; ++u) {
      if (!ListOf(d.test, u).empty()) {
        row[u] = static_cast<int64_t>(users.size());
        users.push_back(u);
      }
    }
  }
};

int NumThreads(int requested) { return requested > 0 ? requested : omp_get_max_threads(); }

struct Cand {
  float score;
  int64_t id;
};
// a ranks before b: higher score, then lower id.
inline bool Better(const Cand& a, const Cand& b) {
  return a.score > b.score || (a.score == b.score && a.id < b.id);
}

// Top-k of scores[0..n) minus the sorted `exclude` ids into out (best first); returns the count.
// Bounded heap whose front is the worst kept candidate. Items are visited in ascending id
// order, so a newcomer that ties the worst score never displaces it (the lower id wins).
int64_t SelectTopK(const float* scores, int64_t n, const std::vector<int64_t>& exclude, int k,
                   std::vector<Cand>* heap, int64_t* out) {
  heap->clear();
  if (k <= 0) return 0;
  float threshold = -std::numeric_limits<float>::infinity();
  bool full = false;
  int64_t start = 0;
  for (size_t t = 0; t <= exclude.size(); ++t) {
    int64_t end = n;
    if (t < exclude.size()) {
      if (exclude[t] < start) continue;  // duplicate or out-of-order id: already handled
      end = std::min(exclude[t], n);
    }
    for (int64_t i = start; i < end; ++i) {
      float s = scores[i];
      if (full) {
        if (!(s > threshold)) continue;  // also rejects NaN
        std::pop_heap(heap->begin(), heap->end(), Better);
        heap->back() = Cand{s, i};
        std::push_heap(heap->begin(), heap->end(), Better);
        threshold = heap->front().score;
      } else {
        if (std::isnan(s)) s = -std::numeric_limits<float>::infinity();
        heap->push_back(Cand{s, i});
        std::push_heap(heap->begin(), heap->end(), Better);
        if (static_cast<int64_t>(heap->size()) == k) {
          full = true;
          threshold = heap->front().score;
        }
      }
    }
    start = end + 1;
    if (start >= n) break;
  }
  std::sort_heap(heap->begin(), heap->end(), Better);
  for (size_t j = 0; j < heap->size(); ++j) out[j] = (*heap)[j].id;
  return static_cast<int64_t>(heap->size());
}

void PrepareTopLists(const Dataset& d, const EvalOptions& o) {
  if (o.top_lists == nullptr) return;
  o.top_lists->assign(std::max<int64_t>(d.num_users, 0), {});
}

}  // namespace

double RankingMetrics::Get(const std::string& key) const {
  auto it = values.find(key);
  return it == values.end() ? 0.0 : it->second;
}

std::string FormatMetrics(const RankingMetrics& m) {
  // Order: by K, then recall, ndcg, anything else by name.
  struct Entry {
    int k;
    int rank;
    std::string key;
    double value;
  };
  std::vector<Entry> entries;
  for (const auto& [key, v] : m.values) {
    const size_t at = key.find('@');
    const std::string metric = key.substr(0, at);
    const int k = at == std::string::npos ? 0 : std::atoi(key.c_str() + at + 1);
    entries.push_back({k, metric == "recall" ? 0 : metric == "ndcg" ? 1 : 2, key, v});
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.k, a.rank, a.key) < std::tie(b.k, b.rank, b.key);
  });
  std::string s;
  for (const Entry& e : entries) absl::StrAppend(&s, e.key, "=", absl::StrFormat("%.5f", e.value), " ");
  absl::StrAppend(&s, "users=", m.num_users);
  return s;
}

RankingMetrics EvaluateFullRanking(const Dataset& d, const ScoreBlockFn& score_block,
                                   const EvalOptions& o) {
  const Plan plan(o.ks);
  const EvalUsers eval(d);
  PrepareTopLists(d, o);
  const int64_t n = d.num_items;
  const int64_t num_rows = static_cast<int64_t>(eval.users.size());
  std::vector<double> rows(num_rows * plan.width(), 0.0);
  if (num_rows == 0 || plan.kmax == 0 || n <= 0) return plan.Aggregate(rows, num_rows);

  // Keep the score buffer under 2^28 floats (1 GiB) whatever block_users says.
  const int64_t max_block = std::max<int64_t>(1, (int64_t{1} << 28) / n);
  const int64_t block = std::clamp<int64_t>(o.block_users, 1, max_block);
  std::vector<float> scores;
  const int threads = NumThreads(o.threads);

  for (int64_t begin = 0; begin < d.num_users; begin += block) {
    const int64_t end = std::min(begin + block, d.num_users);
    bool any = false;
    for (int64_t u = begin; u < end && !any; ++u) any = eval.row[u] >= 0;
    if (!any) continue;
    scores.resize((end - begin) * n);
    score_block(begin, end, scores.data());

#pragma omp parallel num_threads(threads)
    {
      std::vector<Cand> heap;
      heap.reserve(plan.kmax);
      std::vector<int64_t> top(plan.kmax);
#pragma omp for schedule(dynamic, 16)
      for (int64_t u = begin; u < end; ++u) {
        const int64_t r = eval.row[u];
        if (r < 0) continue;
        const int64_t len = SelectTopK(scores.data() + (u - begin) * n, n, ListOf(d.train, u),
                                       plan.kmax, &heap, top.data());
        plan.UserMetrics(top.data(), len, d.test[u], rows.data() + r * plan.width());
        if (o.top_lists != nullptr) (*o.top_lists)[u].assign(top.begin(), top.begin() + len);
      }
    }
  }
  return plan.Aggregate(rows, num_rows);
}

RankingMetrics EvaluateTopLists(const Dataset& d, const std::vector<std::vector<int64_t>>& top,
                                const std::vector<int>& ks) {
  const Plan plan(ks);
  const EvalUsers eval(d);
  const int64_t num_rows = static_cast<int64_t>(eval.users.size());
  std::vector<double> rows(num_rows * plan.width(), 0.0);
  for (int64_t r = 0; r < num_rows; ++r) {
    const int64_t u = eval.users[r];
    const std::vector<int64_t>& list = ListOf(top, u);
    plan.UserMetrics(list.data(), static_cast<int64_t>(list.size()), d.test[u],
                     rows.data() + r * plan.width());
  }
  return plan.Aggregate(rows, num_rows);
}

RankingMetrics EvaluateEmbeddings(const Dataset& d, const float* user_emb, const float* item_emb,
                                  int dim, const EvalOptions& o) {
  const int64_t n = d.num_items;
  auto score = [&](int64_t begin, int64_t end, float* out) {
    const int64_t m = end - begin;
    if (dim <= 0) {
      std::fill(out, out + m * n, 0.0f);
      return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m),
                static_cast<int>(n), dim, 1.0f, user_emb + begin * dim, dim, item_emb, dim, 0.0f,
                out, static_cast<int>(n));
  };
  return EvaluateFullRanking(d, score, o);
}

RankingMetrics EvaluatePopularity(const Dataset& d, const EvalOptions& o) {
  const Plan plan(o.ks);
  const EvalUsers eval(d);
  PrepareTopLists(d, o);
  const int64_t num_rows = static_cast<int64_t>(eval.users.size());
  std::vector<double> rows(num_rows * plan.width(), 0.0);
  if (num_rows == 0 || plan.kmax == 0 || d.num_items <= 0) return plan.Aggregate(rows, num_rows);

  const std::vector<int64_t> pop = d.ItemPopularity();
  std::vector<int64_t> order(d.num_items);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return pop[a] > pop[b]; });  // ties: lower id

#pragma omp parallel num_threads(NumThreads(o.threads))
  {
    std::vector<int64_t> top(plan.kmax);
#pragma omp for schedule(dynamic, 64)
    for (int64_t r = 0; r < num_rows; ++r) {
      const int64_t u = eval.users[r];
      const std::vector<int64_t>& train = ListOf(d.train, u);
      int64_t len = 0;
      for (size_t j = 0; j < order.size() && len < plan.kmax; ++j) {
        if (!std::binary_search(train.begin(), train.end(), order[j])) top[len++] = order[j];
      }
      plan.UserMetrics(top.data(), len, d.test[u], rows.data() + r * plan.width());
      if (o.top_lists != nullptr) (*o.top_lists)[u].assign(top.begin(), top.begin() + len);
    }
  }
  return plan.Aggregate(rows, num_rows);
}

}  // namespace recall::trainer
