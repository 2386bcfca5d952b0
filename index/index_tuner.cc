#include "index/index_tuner.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "faiss/IndexIVF.h"
#include "faiss/impl/HNSW.h"

namespace recall {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// 2^round(log2(x)).
int64_t PowerOfTwoNear(double x) {
  return int64_t{1} << std::max(0, static_cast<int>(std::lround(std::log2(std::max(1.0, x)))));
}

// nlist of an "IVF<n>,..." factory string; 0 for other kinds.
int64_t NlistOf(const std::string& factory) {
  if (!absl::StartsWith(factory, "IVF")) return 0;
  const size_t end = factory.find_first_of(",_");
  int64_t nlist = 0;
  if (!absl::SimpleAtoi(factory.substr(3, end - 3), &nlist)) return 0;
  return nlist;
}

// M of an "HNSW<M>..." factory string; 0 for other kinds.
int HnswMOf(const std::string& factory) {
  if (!absl::StartsWith(factory, "HNSW")) return 0;
  const size_t end = factory.find_first_of(",_");
  int m = 0;
  if (!absl::SimpleAtoi(factory.substr(4, end - 4), &m)) return 0;
  return m;
}

// Runs fn() with this thread's OpenMP regions limited to `threads` (restored afterwards).
template <typename Fn>
auto WithOmpThreads(int threads, Fn&& fn) {
  const int saved = omp_get_max_threads();
  omp_set_num_threads(threads);
  struct Restore {
    int n;
    ~Restore() { omp_set_num_threads(n); }
  } restore{saved};
  return fn();
}

double RecallAt(const std::vector<SearchHits>& got, const std::vector<SearchHits>& truth) {
  int64_t hit = 0, total = 0;
  for (size_t q = 0; q < got.size(); ++q) {
    absl::flat_hash_set<int64_t> t(truth[q].ids.begin(), truth[q].ids.end());
    for (int64_t id : got[q].ids) hit += t.contains(id);
    total += static_cast<int64_t>(truth[q].ids.size());
  }
  return total > 0 ? static_cast<double>(hit) / static_cast<double>(total) : 1.0;
}

// The search-parameter settings tried for a kind, cheapest first along the primary parameter.
// Each inner list is one primary value with increasing k_factor (one entry when the kind
// does not re-rank).
std::vector<std::vector<std::vector<std::pair<std::string, double>>>> SweepOf(
    const std::string& factory, bool reranks, int k) {
  std::vector<double> primary;
  std::string name;
  if (const int64_t nlist = NlistOf(factory); nlist > 0) {
    name = "nprobe";
    for (double p : {1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768,
                     1024}) {
      if (p < nlist) primary.push_back(p);
    }
    primary.push_back(static_cast<double>(nlist));  // every list: exact up to the codec
  } else if (HnswMOf(factory) > 0) {
    name = "efSearch";
    const double base = std::max(16, k);
    for (double f : {1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0}) {
      primary.push_back(std::round(base * f));
    }
  }
  std::vector<std::vector<std::vector<std::pair<std::string, double>>>> out;
  if (name.empty()) {  // Flat, SQ: nothing to tune
    out.push_back({{}});
    return out;
  }
  for (double p : primary) {
    std::vector<std::vector<std::pair<std::string, double>>> row;
    for (double kf : {1.0, 2.0, 4.0, 8.0}) {
      if (!reranks && kf > 1) break;
      // HNSW explores at least k_factor * k candidates anyway: efSearch below that repeats a
      // setting already tried.
      if (name == "efSearch" && kf * k > p && kf > 1) break;
      std::vector<std::pair<std::string, double>> setting = {{name, p}};
      if (reranks) setting.emplace_back("k_factor", kf);
      row.push_back(std::move(setting));
    }
    out.push_back(std::move(row));
  }
  return out;
}

// Distances one query costs beyond what FAISS's statistics count: the coarse quantizer's
// (a Flat quantizer scores every centroid) and the exact re-rank's.
double ExtraDistances(const std::string& factory, bool reranks,
                      const std::vector<std::pair<std::string, double>>& params, int k,
                      int64_t n) {
  double extra = static_cast<double>(NlistOf(factory));
  if (reranks) {
    double kf = EmbeddingIndex::kDefaultKFactor;
    for (const auto& [name, v] : params) {
      if (name == "k_factor") kf = v;
    }
    extra += std::min<double>(std::ceil(kf * k), static_cast<double>(n));
  }
  return extra;
}

struct Measured {
  double recall = 0;
  double distances_per_query = 0;
  double qps = 0;
};

// Recall and counted distances over all queries (one batch), then queries/s one query per
// call with an exclusion list (the serving path), on one thread.
absl::StatusOr<Measured> MeasurePoint(const EmbeddingIndex& index, const std::string& factory,
                                      const std::vector<std::pair<std::string, double>>& params,
                                      const float* queries, int nq, int k,
                                      const std::vector<SearchHits>& truth, int qps_queries,
                                      int64_t absent_id, int64_t n) {
  return WithOmpThreads(1, [&]() -> absl::StatusOr<Measured> {
    Measured m;
    faiss::hnsw_stats.reset();
    faiss::indexIVF_stats.reset();
    auto got = index.Search(queries, nq, k);
    if (!got.ok()) return got.status();
    // HNSW 1.7.3 counts the distances of its level-0 search in n3 (ndis: the other search
    // mode's), IVF in ndis.
    const double counted = static_cast<double>(faiss::hnsw_stats.n3) +
                           static_cast<double>(faiss::hnsw_stats.ndis) +
                           static_cast<double>(faiss::indexIVF_stats.ndis);
    const bool flat_scan = NlistOf(factory) == 0 && HnswMOf(factory) == 0;
    m.distances_per_query =
        (flat_scan ? static_cast<double>(n) : counted / nq) +
        ExtraDistances(factory, index.reranks(), params, k, n);
    m.recall = RecallAt(*got, truth);
    const int timed = std::max(1, std::min(qps_queries, nq));
    const std::vector<int64_t> exclude = {absent_id};
    // The best of three passes: interference from other work on a shared machine only ever
    // slows a pass down.
    for (int pass = 0; pass < 3; ++pass) {
      const auto t0 = Clock::now();
      for (int i = 0; i < timed; ++i) {
        auto one =
            index.Search(queries + static_cast<size_t>(i) * index.dim(), 1, k, {&exclude, 1});
        if (!one.ok()) return one.status();
      }
      m.qps = std::max(m.qps, timed / std::max(1e-9, SecondsSince(t0)));
    }
    return m;
  });
}

// Among the points of `kind` that meet the target within budget, the least counted work
// (ties: fewer bytes); -1 if none.
int CheapestEligible(const std::vector<TunePoint>& points, const std::string& kind) {
  int best = -1;
  for (size_t i = 0; i < points.size(); ++i) {
    const TunePoint& p = points[i];
    if (p.factory != kind || !p.note.empty() || !p.meets_target || !p.within_budget) continue;
    if (best < 0 || p.distances_per_query < points[best].distances_per_query ||
        (p.distances_per_query == points[best].distances_per_query &&
         p.bytes < points[best].bytes)) {
      best = static_cast<int>(i);
    }
  }
  return best;
}

}  // namespace

int PickPoint(const std::vector<TunePoint>& points, double decisive_speedup) {
  // Each kind's setting: its cheapest point meeting the target (counted work, deterministic).
  std::vector<int> settings;
  std::vector<std::string> kinds;
  for (const TunePoint& p : points) {
    if (std::find(kinds.begin(), kinds.end(), p.factory) != kinds.end()) continue;
    kinds.push_back(p.factory);
    if (const int i = CheapestEligible(points, p.factory); i >= 0) settings.push_back(i);
  }
  if (settings.empty()) {
    // Nothing meets the target: the best recall, within the memory budget if anything is.
    int best = -1;
    for (size_t i = 0; i < points.size(); ++i) {
      const TunePoint& p = points[i];
      if (!p.note.empty()) continue;
      if (best < 0 || (p.within_budget && !points[best].within_budget) ||
          (p.within_budget == points[best].within_budget && p.recall > points[best].recall)) {
        best = static_cast<int>(i);
      }
    }
    return best;
  }
  auto least_work = [&](const std::vector<int>& among) {
    int best = among.front();
    for (int i : among) {
      if (points[i].distances_per_query < points[best].distances_per_query) best = i;
    }
    return best;
  };
  // Counted work ranks settings within a kind faithfully, but not across kinds: at 1M items a
  // graph distance (a cache miss per neighbor) cost ~30 times a scanned IVF list entry. So a
  // kind measured decisively faster than the least-work setting replaces it; among those, the
  // least work again, so ordinary timing noise never changes the pick.
  const int p0 = least_work(settings);
  std::vector<int> faster;
  for (int i : settings) {
    if (points[i].qps >= decisive_speedup * points[p0].qps) faster.push_back(i);
  }
  return faster.empty() ? p0 : least_work(faster);
}

std::vector<std::string> DefaultCandidates(int64_t n, int dim) {
  std::vector<std::string> out = {"Flat"};
  if (n < 2000) return out;
  int m = std::max(1, dim / 4);
  while (m > 1 && dim % m != 0) --m;
  std::vector<int64_t> nlists;
  for (double f : {1.0, 4.0}) {
    const int64_t nlist = PowerOfTwoNear(f * std::sqrt(static_cast<double>(n)));
    // FAISS's k-means wants >= 39 points per centroid.
    if (nlist >= 16 && n >= 39 * nlist &&
        std::find(nlists.begin(), nlists.end(), nlist) == nlists.end()) {
      nlists.push_back(nlist);
    }
  }
  for (int64_t nlist : nlists) {
    out.push_back(absl::StrCat("IVF", nlist, ",Flat"));
    out.push_back(absl::StrCat("IVF", nlist, ",SQ8,RFlat"));
    out.push_back(absl::StrCat("IVF", nlist, ",PQ", m, ",RFlat"));
  }
  for (const char* h : {"HNSW16", "HNSW32", "HNSW16,SQ8,RFlat", "HNSW32,SQ8,RFlat"}) {
    out.push_back(h);
  }
  return out;
}

absl::StatusOr<TuneResult> TuneIndex(absl::Span<const int64_t> ids, const float* vectors,
                                     int dim, const float* queries, int nq,
                                     const TuneOptions& options) {
  const int64_t n = static_cast<int64_t>(ids.size());
  if (n < 1 || vectors == nullptr) return absl::InvalidArgumentError("tuning needs items");
  if (nq < 1 || queries == nullptr) return absl::InvalidArgumentError("tuning needs queries");
  if (options.k < 1) return absl::InvalidArgumentError("k must be >= 1");
  if (!(options.recall_target > 0 && options.recall_target <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("recall target must be in (0, 1], got ", options.recall_target));
  }
  const auto t_start = Clock::now();
  const int k = static_cast<int>(std::min<int64_t>(options.k, n));
  TuneResult result;

  // Exact top-k: a Flat index (BLAS over the query batch). It is also the "Flat" candidate.
  std::unique_ptr<EmbeddingIndex> flat;
  std::vector<SearchHits> truth;
  double flat_build_s = 0;
  {
    const auto t0 = Clock::now();
    auto f = EmbeddingIndex::Create(dim, "Flat");
    if (!f.ok()) return f.status();
    if (auto s = (*f)->Build(ids, vectors); !s.ok()) return s;
    flat_build_s = SecondsSince(t0);
    auto t = (*f)->Search(queries, nq, k);
    if (!t.ok()) return t.status();
    truth = std::move(*t);
    flat = std::move(*f);
    result.ground_truth_s = SecondsSince(t0);
  }
  int64_t absent_id = std::numeric_limits<int64_t>::min();
  for (int64_t id : ids) absent_id = std::max(absent_id, id);
  absent_id = absent_id == std::numeric_limits<int64_t>::max() ? -2 : absent_id + 1;

  const std::vector<std::string> candidates =
      options.candidates.empty() ? DefaultCandidates(n, dim) : options.candidates;
  // Items inserted online after the bulk build (timed), at most 1%.
  const int64_t probe = std::min<int64_t>(options.insert_probe, n / 100);
  // One trained coarse quantizer per nlist, shared by the codecs over it.
  absl::flat_hash_map<int64_t, std::unique_ptr<EmbeddingIndex>> clusterings;
  absl::flat_hash_map<int64_t, double> clustering_s;
  // Seconds per item and per neighbor (M) of the graph builds so far: the next one's estimate.
  double hnsw_s_per_item_neighbor = 0;

  // Trains and fills `factory` over the items (all but the last `probe`, then those online,
  // timed): the same steps whether measuring a kind or rebuilding the pick.
  auto build = [&](const std::string& factory, double* build_s,
                   double* insert_us) -> absl::StatusOr<std::unique_ptr<EmbeddingIndex>> {
    auto created = EmbeddingIndex::Create(dim, factory);
    if (!created.ok()) return created.status();
    std::unique_ptr<EmbeddingIndex> index = std::move(*created);
    const int m = HnswMOf(factory);
    *build_s = 0;
    *insert_us = 0;
    const auto t0 = Clock::now();
    if (!index->is_trained()) {
      const int64_t nlist = NlistOf(factory);
      // k-means and PQ codebooks on an evenly strided sample: 40 points per centroid (FAISS
      // warns below 39), at least 256 * 39 for the 256-entry PQ/SQ codebooks.
      const int64_t want = nlist > 0 ? std::max<int64_t>(40 * nlist, 10000) : 10000;
      const int64_t s_n = std::min<int64_t>(n, want);
      std::vector<float> sample(static_cast<size_t>(s_n) * dim);
      for (int64_t i = 0; i < s_n; ++i) {
        const int64_t row = i * n / s_n;
        std::copy_n(vectors + row * dim, dim, sample.data() + i * dim);
      }
      EmbeddingIndex* donor = nullptr;
      double shared_s = 0;
      if (nlist > 0) {
        auto it = clusterings.find(nlist);
        if (it == clusterings.end()) {
          const auto tc = Clock::now();
          auto c = EmbeddingIndex::Create(dim, absl::StrCat("IVF", nlist, ",Flat"));
          if (!c.ok()) return c.status();
          if (auto s = (*c)->Train(sample.data(), s_n); !s.ok()) return s;
          clustering_s[nlist] = SecondsSince(tc);
          it = clusterings.emplace(nlist, std::move(*c)).first;
        }
        donor = it->second.get();
        shared_s = clustering_s[nlist];
      }
      if (auto s = index->Train(sample.data(), s_n, donor); !s.ok()) return s;
      *build_s += shared_s;  // what building this kind alone would cost
    }
    const int64_t bulk = n - probe;
    const auto tb = Clock::now();
    if (auto s = index->Build(ids.subspan(0, bulk), vectors); !s.ok()) return s;
    if (m > 0) {
      hnsw_s_per_item_neighbor = std::max(
          hnsw_s_per_item_neighbor, SecondsSince(tb) / (static_cast<double>(bulk) * m));
    }
    *build_s += SecondsSince(t0);
    if (probe > 0) {
      const auto ti = Clock::now();
      for (int64_t i = bulk; i < n; i += 50) {
        const int64_t b = std::min<int64_t>(50, n - i);
        if (auto s = index->Upsert(ids.subspan(i, b), vectors + i * dim); !s.ok()) return s;
      }
      *insert_us = SecondsSince(ti) * 1e6 / static_cast<double>(probe);
    }
    return index;
  };

  for (const std::string& factory : candidates) {
    const double elapsed = SecondsSince(t_start);
    TunePoint skipped;
    skipped.factory = factory;
    if (elapsed >= options.budget_s) {
      skipped.note = absl::StrFormat("skipped: tuning budget of %.0f s spent", options.budget_s);
      result.points.push_back(skipped);
      continue;
    }
    std::unique_ptr<EmbeddingIndex> index;
    double build_s = 0, insert_us = 0;
    if (factory == "Flat") {
      index = std::move(flat);
      build_s = flat_build_s;
      if (index == nullptr) continue;
    } else {
      auto created = EmbeddingIndex::Create(dim, factory);
      if (!created.ok()) {
        skipped.note = absl::StrCat("refused: ", created.status().message());
        result.points.push_back(skipped);
        continue;
      }
      const int m = HnswMOf(factory);
      if (m > 0 && n > 20000) {
        // Skip a graph whose build would overrun the budget. Once one graph was built here, its
        // seconds per item and neighbor scale to the others (exactly what the machine does);
        // before that, a 10,000-item pilot extrapolated n log n, times 3: at 1M items on 2
        // cores HNSW16 took 3.4x that estimate (cache misses grow with the graph).
        double estimate = 0;
        if (hnsw_s_per_item_neighbor > 0) {
          estimate = hnsw_s_per_item_neighbor * static_cast<double>(n) * m;
        } else {
          const int64_t pilot_n = 10000;
          auto pilot = EmbeddingIndex::Create(dim, factory);
          if (!pilot.ok()) return pilot.status();
          const auto t0 = Clock::now();
          if (auto s = (*pilot)->Build(ids.subspan(0, pilot_n), vectors); !s.ok()) return s;
          estimate = 3 * SecondsSince(t0) * (static_cast<double>(n) / pilot_n) *
                     std::log(static_cast<double>(n)) / std::log(double(pilot_n));
        }
        const double left = options.budget_s - SecondsSince(t_start);
        std::fprintf(stderr, "tune: %s: estimated build %.0f s, %.0f s of the budget left\n",
                     factory.c_str(), estimate, left);
        if (estimate > left) {
          skipped.note = absl::StrFormat(
              "skipped: estimated build %.0f s exceeds the %.0f s left of the tuning budget",
              estimate, left);
          result.points.push_back(skipped);
          continue;
        }
      }
      auto built = build(factory, &build_s, &insert_us);
      if (!built.ok()) return built.status();
      index = std::move(*built);
    }
    const int64_t bytes = index->ByteSize();
    const bool within_budget =
        options.memory_budget_bytes <= 0 || bytes <= options.memory_budget_bytes;

    const size_t first = result.points.size();
    // Work grows with the primary parameter at a fixed k_factor, so once a setting meets the
    // target at the j-th k_factor, later primary values are only tried with smaller ones.
    size_t kf_limit = std::numeric_limits<size_t>::max();
    for (const auto& row : SweepOf(factory, index->reranks(), k)) {
      for (size_t j = 0; j < row.size() && j < kf_limit; ++j) {
        if (SecondsSince(t_start) > options.budget_s) break;
        for (const auto& [name, v] : row[j]) {
          if (auto s = index->SetSearchParameter(name, v); !s.ok()) return s;
        }
        auto m = MeasurePoint(*index, factory, row[j], queries, nq, k, truth,
                              options.qps_queries, absent_id, n);
        if (!m.ok()) return m.status();
        TunePoint p;
        p.factory = factory;
        p.params = row[j];
        p.recall = m->recall;
        p.distances_per_query = m->distances_per_query;
        p.qps = m->qps;
        p.build_s = build_s;
        p.bytes = bytes;
        p.insert_us = insert_us;
        p.meets_target = m->recall >= options.recall_target;
        p.within_budget = within_budget;
        result.points.push_back(p);
        if (p.meets_target) {
          kf_limit = j;  // a larger k_factor at this setting only costs more
          break;
        }
        // The re-rank depth stopped adding recall: these lists hold no more of the top k.
        if (j > 0 && p.recall <= result.points[result.points.size() - 2].recall + 1e-3) break;
      }
      if (kf_limit == 0) break;
      if (SecondsSince(t_start) > options.budget_s) {
        if (result.points.size() == first) {
          skipped.note = absl::StrFormat("skipped: tuning budget of %.0f s spent",
                                         options.budget_s);
          result.points.push_back(skipped);
        }
        break;
      }
    }
    // Hold this kind's index while it is the pick of what was measured so far (one index of
    // the catalog's size in memory at a time; a pick dropped earlier is rebuilt at the end).
    if (const int pick = PickPoint(result.points, options.decisive_speedup);
        pick >= static_cast<int>(first) && result.points[pick].factory == factory) {
      result.index = std::move(index);
    }
    std::fprintf(stderr, "tune: %s done at %.0f s (%zu points)\n", factory.c_str(),
                 SecondsSince(t_start), result.points.size() - first);
  }
  result.chosen = PickPoint(result.points, options.decisive_speedup);
  if (result.chosen >= 0) {
    const TunePoint& c = result.points[result.chosen];
    if (result.index == nullptr || result.index->factory() != c.factory) {
      std::fprintf(stderr, "tune: rebuilding the pick, %s\n", c.factory.c_str());
      double build_s = 0, insert_us = 0;
      std::unique_ptr<EmbeddingIndex> rebuilt;
      if (c.factory == "Flat" && flat != nullptr) {
        rebuilt = std::move(flat);
      } else {
        result.index.reset();
        auto built = build(c.factory, &build_s, &insert_us);
        if (!built.ok()) return built.status();
        rebuilt = std::move(*built);
      }
      result.index = std::move(rebuilt);
      // A graph rebuilt in parallel is not bit-identical to the one measured: measure again.
      TunePoint& chosen = result.points[result.chosen];
      for (const auto& [name, v] : chosen.params) {
        if (auto s = result.index->SetSearchParameter(name, v); !s.ok()) return s;
      }
      auto m = MeasurePoint(*result.index, chosen.factory, chosen.params, queries, nq, k, truth,
                            options.qps_queries, absent_id, n);
      if (!m.ok()) return m.status();
      chosen.recall = m->recall;
      chosen.distances_per_query = m->distances_per_query;
      chosen.meets_target = m->recall >= options.recall_target;
    }
    for (const auto& [name, v] : c.params) {
      if (auto s = result.index->SetSearchParameter(name, v); !s.ok()) return s;
    }
    result.target_met = c.meets_target && c.within_budget;
  }
  result.total_s = SecondsSince(t_start);
  return result;
}

}  // namespace recall
