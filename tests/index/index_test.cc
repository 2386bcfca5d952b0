#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "faiss/IndexFlat.h"
#include "faiss/IndexIDMap.h"
#include "faiss/IndexIVFFlat.h"
#include "faiss/index_io.h"
#include "gtest/gtest.h"
#include "index/blas_ivf_scan.h"
#include "index/embedding_index.h"
#include "index/index_tuner.h"

namespace recall {
namespace {

// n x dim random unit vectors.
std::vector<float> RandomUnit(int64_t n, int dim, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> v(n * dim);
  for (int64_t i = 0; i < n; ++i) {
    float* row = v.data() + i * dim;
    double norm = 0;
    for (int j = 0; j < dim; ++j) {
      row[j] = normal(rng);
      norm += double(row[j]) * row[j];
    }
    const float inv = 1.0f / static_cast<float>(std::sqrt(norm));
    for (int j = 0; j < dim; ++j) row[j] *= inv;
  }
  return v;
}

float Dot(const float* a, const float* b, int dim) {
  float s = 0;
  for (int j = 0; j < dim; ++j) s += a[j] * b[j];
  return s;
}

// Exact top-k by inner product over (ids, base), skipping `exclude`.
SearchHits BruteForce(const std::vector<int64_t>& ids, const std::vector<float>& base,
                      const float* q, int dim, int k,
                      const absl::flat_hash_set<int64_t>& exclude = {}) {
  std::vector<std::pair<float, int64_t>> all;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (exclude.contains(ids[i])) continue;
    all.emplace_back(Dot(q, base.data() + i * dim, dim), ids[i]);
  }
  const size_t kk = std::min<size_t>(k, all.size());
  std::partial_sort(all.begin(), all.begin() + kk, all.end(),
                    [](const auto& a, const auto& b) { return a.first > b.first; });
  SearchHits h;
  for (size_t i = 0; i < kk; ++i) {
    h.ids.push_back(all[i].second);
    h.scores.push_back(all[i].first);
  }
  return h;
}

std::vector<int64_t> SparseIds(int64_t n) {  // non-sequential external ids
  std::vector<int64_t> ids(n);
  for (int64_t i = 0; i < n; ++i) ids[i] = 1000 + 7 * i;
  return ids;
}

std::vector<int64_t> SequentialIds(int64_t n) {  // external ids 0..n-1
  std::vector<int64_t> ids(n);
  std::iota(ids.begin(), ids.end(), 0);
  return ids;
}

std::string TempPath(const std::string& name) {
  return absl::StrCat(::testing::TempDir(), "/index_test_", name, "_", ::getpid(), ".faiss");
}

std::unique_ptr<EmbeddingIndex> MustBuild(const std::string& factory, int dim,
                                          const std::vector<int64_t>& ids,
                                          const std::vector<float>& vectors) {
  auto index = EmbeddingIndex::Create(dim, factory);
  EXPECT_TRUE(index.ok()) << index.status();
  if (!index.ok()) return nullptr;
  absl::Status s = (*index)->Build(ids, vectors.data());
  EXPECT_TRUE(s.ok()) << s;
  return std::move(*index);
}

void ExpectSorted(const SearchHits& h) {
  ASSERT_EQ(h.ids.size(), h.scores.size());
  for (size_t i = 1; i < h.scores.size(); ++i) EXPECT_GE(h.scores[i - 1], h.scores[i]);
}

double RecallAt(const std::vector<SearchHits>& got, const std::vector<SearchHits>& truth) {
  int64_t hit = 0, total = 0;
  for (size_t q = 0; q < got.size(); ++q) {
    absl::flat_hash_set<int64_t> t(truth[q].ids.begin(), truth[q].ids.end());
    for (int64_t id : got[q].ids) hit += t.contains(id);
    total += truth[q].ids.size();
  }
  return double(hit) / double(total);
}

class AllKinds : public ::testing::TestWithParam<std::string> {};

INSTANTIATE_TEST_SUITE_P(
    // Every kind the tuner can pick, at this suite's sizes (2,000-5,000 items): the same
    // DefaultCandidates list the tuner tries, so a new candidate cannot skip the suite.
    Factories, AllKinds, ::testing::ValuesIn(DefaultCandidates(5000, 32)),
    [](const auto& info) {
      std::string s = info.param;
      s.erase(std::remove_if(s.begin(), s.end(), [](char c) { return !std::isalnum(c); }), s.end());
      return s;
    });

constexpr int kDim = 32;

// Graph kinds: a rebuilt graph may answer slightly differently.
bool IsGraph(const std::string& factory) { return factory.rfind("HNSW", 0) == 0; }

// 1. Build, search, save/load round trip (identical ids and scores), plain FAISS readable.
TEST_P(AllKinds, BuildSearchSaveLoadRoundTrip) {
  const int n = 5000;
  const auto ids = SparseIds(n);
  const auto base = RandomUnit(n, kDim, 1);
  auto index = MustBuild(GetParam(), kDim, ids, base);
  ASSERT_NE(index, nullptr);
  EXPECT_EQ(index->size(), n);
  EXPECT_EQ(index->dim(), kDim);
  EXPECT_EQ(index->factory(), GetParam());
  EXPECT_EQ(index->generation(), 1u);

  // Self queries: each base vector finds itself first with score ~1.
  const int nq = 40;
  std::vector<float> self(base.begin(), base.begin() + nq * kDim);
  auto hits = index->Search(self.data(), nq, 10);
  ASSERT_TRUE(hits.ok()) << hits.status();
  ASSERT_EQ(hits->size(), size_t(nq));
  for (int q = 0; q < nq; ++q) {
    ASSERT_EQ((*hits)[q].ids.size(), 10u);
    ExpectSorted((*hits)[q]);
    EXPECT_EQ((*hits)[q].ids[0], ids[q]);
    EXPECT_NEAR((*hits)[q].scores[0], 1.0f, 1e-4);
  }

  // Some hidden entries, so the file carries -1s.
  const std::vector<int64_t> removed = {ids[1], ids[2]};
  ASSERT_TRUE(index->Remove(removed).ok());
  const auto replacement = RandomUnit(1, kDim, 99);
  ASSERT_TRUE(index->Upsert({ids[3]}, replacement.data()).ok());
  ASSERT_EQ(index->num_hidden(), 3);

  const auto queries = RandomUnit(50, kDim, 2);
  std::vector<std::vector<int64_t>> excl(50);
  excl[0] = {ids[10], ids[11]};
  auto before = index->Search(queries.data(), 50, 10);
  auto before_excl = index->Search(queries.data(), 50, 10, excl);
  ASSERT_TRUE(before.ok() && before_excl.ok());

  const std::string path = TempPath(std::string("rt_") + index->factory().substr(0, 3));
  absl::Status saved = index->Save(path);
  ASSERT_TRUE(saved.ok()) << saved;
  auto loaded = EmbeddingIndex::Load(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->factory(), GetParam());
  EXPECT_EQ((*loaded)->dim(), kDim);
  EXPECT_EQ((*loaded)->size(), index->size());
  EXPECT_EQ((*loaded)->num_hidden(), 3);
  EXPECT_FALSE((*loaded)->Contains(ids[1]));
  EXPECT_TRUE((*loaded)->Contains(ids[3]));
  for (const char* p : {"efSearch", "nprobe", "k_factor"}) {
    auto a = index->GetSearchParameter(p);
    auto b = (*loaded)->GetSearchParameter(p);
    EXPECT_EQ(a.ok(), b.ok());
    if (a.ok() && b.ok()) {
      EXPECT_EQ(*a, *b);
    }
  }
  auto after = (*loaded)->Search(queries.data(), 50, 10);
  auto after_excl = (*loaded)->Search(queries.data(), 50, 10, excl);
  ASSERT_TRUE(after.ok() && after_excl.ok());
  for (int q = 0; q < 50; ++q) {
    EXPECT_EQ((*before)[q].ids, (*after)[q].ids);
    EXPECT_EQ((*before)[q].scores, (*after)[q].scores);
    EXPECT_EQ((*before_excl)[q].ids, (*after_excl)[q].ids);
    EXPECT_EQ((*before_excl)[q].scores, (*after_excl)[q].scores);
  }
  auto rec = (*loaded)->Reconstruct(ids[3]);
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ(*rec, std::vector<float>(replacement.begin(), replacement.end()));

  // Plain FAISS reads the file: an IndexIDMap2 whose id_map holds external ids (-1 = hidden).
  std::unique_ptr<faiss::Index> plain(faiss::read_index(path.c_str()));
  auto* map = dynamic_cast<faiss::IndexIDMap2*>(plain.get());
  ASSERT_NE(map, nullptr);
  EXPECT_EQ(map->ntotal, n + 1);
  EXPECT_EQ(map->id_map[0], ids[0]);
  EXPECT_EQ(map->id_map[1], -1);
  EXPECT_EQ(map->id_map[n], ids[3]);
  std::remove(path.c_str());

  // The loaded index keeps working for writes.
  const auto more = RandomUnit(5, kDim, 3);
  ASSERT_TRUE((*loaded)->Upsert({1, 2, 3, 4, 5}, more.data()).ok());
  EXPECT_EQ((*loaded)->size(), index->size() + 5);
  ASSERT_TRUE((*loaded)->Compact().ok());
  EXPECT_EQ((*loaded)->num_hidden(), 0);
  auto self_hit = (*loaded)->Search(more.data() + 2 * kDim, 1, 1);
  ASSERT_TRUE(self_hit.ok());
  ASSERT_EQ((*self_hit)[0].ids.size(), 1u);
  EXPECT_EQ((*self_hit)[0].ids[0], 3);
}

// 2. Flat equals brute force, ids and scores, for single queries and a BLAS-sized batch.
TEST(EmbeddingIndexTest, FlatMatchesBruteForce) {
  const int n = 3000, dim = 24, nq = 64, k = 20;
  const auto ids = SparseIds(n);
  const auto base = RandomUnit(n, dim, 4);
  auto index = MustBuild("Flat", dim, ids, base);
  ASSERT_NE(index, nullptr);
  const auto queries = RandomUnit(nq, dim, 5);
  auto batch = index->Search(queries.data(), nq, k);
  ASSERT_TRUE(batch.ok());
  for (int q = 0; q < nq; ++q) {
    const SearchHits truth = BruteForce(ids, base, queries.data() + q * dim, dim, k);
    auto single = index->Search(queries.data() + q * dim, 1, k);
    ASSERT_TRUE(single.ok());
    for (const SearchHits* got : {&(*batch)[q], &(*single)[0]}) {
      EXPECT_EQ(got->ids, truth.ids) << "query " << q;
      ASSERT_EQ(got->scores.size(), truth.scores.size());
      for (int j = 0; j < k; ++j) EXPECT_NEAR(got->scores[j], truth.scores[j], 1e-5);
    }
  }
  // k larger than the index: every item, once.
  auto all = index->Search(queries.data(), 1, n + 100);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ((*all)[0].ids.size(), size_t(n));
}

// 3. Approximate kinds reach good recall@10 against brute force.
TEST(EmbeddingIndexTest, ApproximateRecall) {
  const int n = 20000, nq = 300, k = 10;
  const std::vector<int64_t> ids = SequentialIds(n);
  const auto base = RandomUnit(n, kDim, 6);
  const auto queries = RandomUnit(nq, kDim, 7);
  std::vector<SearchHits> truth;
  for (int q = 0; q < nq; ++q) {
    truth.push_back(BruteForce(ids, base, queries.data() + q * kDim, kDim, k));
  }

  auto hnsw = MustBuild("HNSW32", kDim, ids, base);
  ASSERT_NE(hnsw, nullptr);
  auto got = hnsw->Search(queries.data(), nq, k);
  ASSERT_TRUE(got.ok());
  const double hnsw_recall = RecallAt(*got, truth);
  std::printf("HNSW32 efSearch=%d recall@10 = %.3f\n", EmbeddingIndex::kDefaultEfSearch,
              hnsw_recall);
  EXPECT_GE(hnsw_recall, 0.9);
  // Exclusions route through one FAISS call per query; recall must not suffer.
  std::vector<std::vector<int64_t>> excl(nq, std::vector<int64_t>{n + 1});
  auto got_excl = hnsw->Search(queries.data(), nq, k, excl);
  ASSERT_TRUE(got_excl.ok());
  for (int q = 0; q < nq; ++q) EXPECT_EQ((*got_excl)[q].ids, (*got)[q].ids);

  auto ivf = MustBuild("IVF64,Flat", kDim, ids, base);
  ASSERT_NE(ivf, nullptr);
  ASSERT_TRUE(ivf->SetSearchParameter("nprobe", 32).ok());
  got = ivf->Search(queries.data(), nq, k);
  ASSERT_TRUE(got.ok());
  const double ivf_recall = RecallAt(*got, truth);
  std::printf("IVF64,Flat nprobe=32 recall@10 = %.3f\n", ivf_recall);
  EXPECT_GE(ivf_recall, 0.9);
  ASSERT_TRUE(ivf->SetSearchParameter("nprobe", 64).ok());  // every list: exact
  got = ivf->Search(queries.data(), nq, k);
  ASSERT_TRUE(got.ok());
  EXPECT_GE(RecallAt(*got, truth), 0.999);
}

// 4. Exclusions are applied inside the search: excluded ids never come back and each query
// still gets k results.
TEST_P(AllKinds, ExclusionsInsideSearch) {
  const int n = 4000, k = 10, nq = 16;
  const auto ids = SparseIds(n);
  const auto base = RandomUnit(n, kDim, 8);
  auto index = MustBuild(GetParam(), kDim, ids, base);
  ASSERT_NE(index, nullptr);
  const auto queries = RandomUnit(nq, kDim, 9);
  std::vector<std::vector<int64_t>> excludes(nq);
  std::vector<absl::flat_hash_set<int64_t>> sets(nq);
  for (int q = 0; q < nq; ++q) {
    // Each query excludes its own exact top 2k (so over-fetching k would return nothing
    // useful), plus ids that do not exist; query 3 excludes nothing.
    if (q == 3) continue;
    SearchHits top = BruteForce(ids, base, queries.data() + q * kDim, kDim, 2 * k);
    excludes[q] = top.ids;
    excludes[q].push_back(-5);
    excludes[q].push_back(123456789);
    sets[q].insert(excludes[q].begin(), excludes[q].end());
  }
  auto hits = index->Search(queries.data(), nq, k, excludes);
  ASSERT_TRUE(hits.ok()) << hits.status();
  for (int q = 0; q < nq; ++q) {
    const SearchHits& h = (*hits)[q];
    EXPECT_EQ(h.ids.size(), size_t(k)) << "query " << q;
    ExpectSorted(h);
    for (int64_t id : h.ids) EXPECT_FALSE(sets[q].contains(id)) << "query " << q << " id " << id;
    if (std::string(GetParam()) == "Flat") {
      EXPECT_EQ(h.ids, BruteForce(ids, base, queries.data() + q * kDim, kDim, k, sets[q]).ids);
    }
  }
  // Single-query path agrees with the batched one.
  for (int q = 0; q < nq; ++q) {
    auto one = index->Search(queries.data() + q * kDim, 1, k, {&excludes[q], 1});
    ASSERT_TRUE(one.ok());
    EXPECT_EQ((*one)[0].ids, (*hits)[q].ids);
  }
  // Excluding all but 3 items leaves exactly 3 results.
  std::vector<std::vector<int64_t>> almost_all(1, std::vector<int64_t>(ids.begin() + 3, ids.end()));
  auto few = index->Search(queries.data(), 1, k, almost_all);
  ASSERT_TRUE(few.ok());
  // Flat finds all 3. HNSW collects results only from the nodes its efSearch-bounded walk
  // visits and IVF only from nprobe lists, so with a filter this selective they may find fewer.
  if (std::string(GetParam()) == "Flat") {
    auto got = (*few)[0].ids;
    std::sort(got.begin(), got.end());
    EXPECT_EQ(got, std::vector<int64_t>(ids.begin(), ids.begin() + 3));
  }
  for (int64_t id : (*few)[0].ids) EXPECT_LT(id, ids[3]);
}

// 5. Upsert replaces, Remove hides, num_hidden counts, Compact drops hidden entries.
TEST_P(AllKinds, UpsertRemoveCompact) {
  const int n = 3000, k = 10;
  const auto ids = SparseIds(n);
  const auto base = RandomUnit(n, kDim, 10);
  auto index = MustBuild(GetParam(), kDim, ids, base);
  ASSERT_NE(index, nullptr);
  uint64_t gen = index->generation();

  const int64_t x = ids[17];
  const float* v_old = base.data() + 17 * kDim;
  const auto v_new = RandomUnit(1, kDim, 11);
  ASSERT_TRUE(index->Upsert({x}, v_new.data()).ok());
  EXPECT_EQ(index->generation(), ++gen);
  EXPECT_EQ(index->size(), n);
  EXPECT_EQ(index->num_hidden(), 1);
  auto rec = index->Reconstruct(x);
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ(*rec, std::vector<float>(v_new.begin(), v_new.end()));

  auto old_hits = index->Search(v_old, 1, k);
  ASSERT_TRUE(old_hits.ok());
  const float cross = Dot(v_old, v_new.data(), kDim);
  for (size_t j = 0; j < (*old_hits)[0].ids.size(); ++j) {
    if ((*old_hits)[0].ids[j] == x) {
      EXPECT_NEAR((*old_hits)[0].scores[j], cross, 1e-4);
    }
  }
  EXPECT_LT((*old_hits)[0].scores[0], 0.999f);  // nothing left with the old vector
  auto new_hits = index->Search(v_new.data(), 1, k);
  ASSERT_TRUE(new_hits.ok());
  ASSERT_FALSE((*new_hits)[0].ids.empty());
  EXPECT_EQ((*new_hits)[0].ids[0], x);
  EXPECT_NEAR((*new_hits)[0].scores[0], 1.0f, 1e-4);

  // A brand-new id is added.
  const auto v_add = RandomUnit(1, kDim, 12);
  ASSERT_TRUE(index->Upsert({42}, v_add.data()).ok());
  EXPECT_EQ(index->size(), n + 1);
  EXPECT_TRUE(index->Contains(42));

  // Remove: counted once each, unknown ids ignored, never returned again.
  auto removed = index->Remove({ids[5], ids[6], ids[5], 987654321});
  ASSERT_TRUE(removed.ok());
  EXPECT_EQ(*removed, 2);
  EXPECT_EQ(index->generation(), gen + 2);
  EXPECT_EQ(index->size(), n - 1);
  EXPECT_EQ(index->num_hidden(), 3);
  EXPECT_FALSE(index->Contains(ids[5]));
  EXPECT_EQ(index->Reconstruct(ids[5]).status().code(), absl::StatusCode::kNotFound);
  {
    // Bulk read-back skips absent ids and matches Reconstruct.
    const std::vector<int64_t> want = {ids[4], ids[5], x, 987654321, 42};
    std::vector<float> got(want.size() * kDim);
    std::vector<int64_t> present;
    auto n = index->ReconstructMany(want, got.data(), &present);
    ASSERT_TRUE(n.ok()) << n.status();
    EXPECT_EQ(*n, 3);
    EXPECT_EQ(present, (std::vector<int64_t>{ids[4], x, 42}));
    for (size_t r = 0; r < present.size(); ++r) {
      auto one = index->Reconstruct(present[r]);
      ASSERT_TRUE(one.ok());
      EXPECT_EQ(std::vector<float>(got.begin() + r * kDim, got.begin() + (r + 1) * kDim), *one);
    }
  }
  {
    const std::vector<int64_t> live = index->Ids();
    EXPECT_EQ(static_cast<int64_t>(live.size()), index->size());
    EXPECT_TRUE(std::is_sorted(live.begin(), live.end()));
    EXPECT_TRUE(std::binary_search(live.begin(), live.end(), int64_t{42}));
    EXPECT_FALSE(std::binary_search(live.begin(), live.end(), ids[5]));
    EXPECT_FALSE(std::binary_search(live.begin(), live.end(), ids[6]));
  }
  std::vector<float> qs(base.begin() + 5 * kDim, base.begin() + 7 * kDim);
  auto gone = index->Search(qs.data(), 2, k);
  ASSERT_TRUE(gone.ok());
  for (const auto& h : *gone) {
    EXPECT_EQ(h.ids.size(), size_t(k));
    for (int64_t id : h.ids) {
      EXPECT_NE(id, ids[5]);
      EXPECT_NE(id, ids[6]);
    }
  }

  // Compact: hidden entries dropped, ids and results kept.
  const auto queries = RandomUnit(30, kDim, 13);
  auto before = index->Search(queries.data(), 30, k);
  ASSERT_TRUE(before.ok());
  gen = index->generation();
  ASSERT_TRUE(index->Compact().ok());
  EXPECT_EQ(index->generation(), gen + 1);
  EXPECT_EQ(index->num_hidden(), 0);
  EXPECT_EQ(index->size(), n - 1);
  EXPECT_TRUE(index->Contains(42));
  EXPECT_FALSE(index->Contains(ids[5]));
  rec = index->Reconstruct(x);
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ(*rec, std::vector<float>(v_new.begin(), v_new.end()));
  auto after = index->Search(queries.data(), 30, k);
  ASSERT_TRUE(after.ok());
  if (IsGraph(GetParam())) {
    // A rebuilt graph may differ slightly.
    std::vector<SearchHits> b(*before), a(*after);
    EXPECT_GE(RecallAt(a, b), 0.95);
  } else {
    for (int q = 0; q < 30; ++q) {
      EXPECT_EQ((*before)[q].ids, (*after)[q].ids);
      for (int j = 0; j < k; ++j) {
        EXPECT_NEAR((*before)[q].scores[j], (*after)[q].scores[j], 1e-5);
      }
    }
  }
  auto self = index->Search(v_new.data(), 1, 1);
  ASSERT_TRUE(self.ok());
  EXPECT_EQ((*self)[0].ids, std::vector<int64_t>{x});
  // Compact with nothing hidden is a cheap no-op that still counts.
  ASSERT_TRUE(index->Compact().ok());
  EXPECT_EQ(index->generation(), gen + 2);
  // Everything removed: searches return nothing.
  std::vector<int64_t> everything(ids.begin(), ids.end());
  everything.push_back(42);
  auto all_removed = index->Remove(everything);
  ASSERT_TRUE(all_removed.ok());
  EXPECT_EQ(*all_removed, n - 1);
  auto empty = index->Search(queries.data(), 2, k);
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE((*empty)[0].ids.empty() && (*empty)[1].ids.empty());
  ASSERT_TRUE(index->Compact().ok());
  EXPECT_EQ(index->size(), 0);
  EXPECT_EQ(index->num_hidden(), 0);
  ASSERT_TRUE(index->Upsert({7}, v_add.data()).ok());
  auto back = index->Search(v_add.data(), 1, k);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ((*back)[0].ids, std::vector<int64_t>{7});
}

// 6. Searches run concurrently with upserts, replacements, removals and compactions.
// Every returned id is live or was live during the call; removed ids never come back.
TEST_P(AllKinds, ConcurrentSearchAndWrites) {
  const int stable = 2000, k = 10;
  const int64_t churn_base = 1'000'000;
  const double seconds = IsGraph(GetParam()) ? 1.0 : 0.4;
  const std::vector<int64_t> ids = SequentialIds(stable);
  const auto base = RandomUnit(stable, kDim, 14);
  auto index = MustBuild(GetParam(), kDim, ids, base);
  ASSERT_NE(index, nullptr);

  // Churn ids are added in increasing order and removed in the same (FIFO) order, so the set
  // of removed ids is [churn_base, removed_below) and the set of ever-added ids is
  // [churn_base, add_started_below).
  std::atomic<int64_t> add_started_below{churn_base};
  std::atomic<int64_t> removed_below{churn_base};
  std::atomic<bool> stop{false};
  std::atomic<int64_t> violations{0}, short_results{0}, errors{0}, searches{0};

  auto searcher = [&](int t) {
    std::mt19937_64 rng(100 + t);
    int iter = 0;
    while (!stop.load()) {
      const int nq = (iter++ % 3 == 0) ? 4 : 1;
      const auto queries = RandomUnit(nq, kDim, rng());
      std::vector<std::vector<int64_t>> excl;
      if (iter % 2 == 0) {
        excl.resize(nq);
        for (auto& e : excl) {
          for (int j = 0; j < 20; ++j) e.push_back(rng() % stable);
          e.push_back(removed_below.load() + 1);  // a churn id, maybe live
        }
      }
      const int64_t removed_floor = removed_below.load();
      auto hits = index->Search(queries.data(), nq, k, excl);
      const int64_t added_ceiling = add_started_below.load();
      searches.fetch_add(1);
      if (!hits.ok()) {
        errors.fetch_add(1);
        continue;
      }
      for (int q = 0; q < nq; ++q) {
        const SearchHits& h = (*hits)[q];
        if (h.ids.size() != size_t(k)) short_results.fetch_add(1);
        absl::flat_hash_set<int64_t> ex;
        if (!excl.empty()) ex.insert(excl[q].begin(), excl[q].end());
        absl::flat_hash_set<int64_t> seen;
        for (size_t j = 0; j < h.ids.size(); ++j) {
          const int64_t id = h.ids[j];
          bool ok = !ex.contains(id) && seen.insert(id).second;
          if (j > 0 && h.scores[j] > h.scores[j - 1]) ok = false;
          if (id >= stable)
            ok = ok && id >= removed_floor && id < added_ceiling;
          else
            ok = ok && id >= 0;
          if (!ok) violations.fetch_add(1);
        }
      }
    }
  };

  int64_t writes = 0, compactions = 0;
  auto writer = [&] {
    std::mt19937_64 rng(7);
    const auto start = std::chrono::steady_clock::now();
    int64_t next = churn_base;
    int iter = 0;
    // At least kMinRounds rounds (two compactions) however slow the machine, then until the
    // time is up: the checks below must not depend on how fast a loaded CI runner is.
    constexpr int kMinRounds = 120;
    while (iter < kMinRounds ||
           std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() <
               seconds) {
      ++iter;
      // Add a batch of new churn ids.
      const int batch = 8;
      std::vector<int64_t> add(batch);
      std::iota(add.begin(), add.end(), next);
      const auto vecs = RandomUnit(batch, kDim, next);
      add_started_below.store(next + batch);
      if (!index->Upsert(add, vecs.data()).ok()) errors.fetch_add(1);
      next += batch;
      // Replace a few stable ids and re-upsert a live churn id.
      std::vector<int64_t> rep = {int64_t(rng() % stable), int64_t(rng() % stable) + 0};
      if (rep[0] == rep[1]) rep.pop_back();
      const auto rv = RandomUnit(rep.size(), kDim, rng());
      if (!index->Upsert(rep, rv.data()).ok()) errors.fetch_add(1);
      // Remove the oldest churn ids, keeping about 200 live.
      const int64_t lo = removed_below.load();
      if (next - lo > 200) {
        std::vector<int64_t> rm(batch);
        std::iota(rm.begin(), rm.end(), lo);
        auto r = index->Remove(rm);
        if (!r.ok() || *r != batch) errors.fetch_add(1);
        removed_below.store(lo + batch);
      }
      ++writes;
      if (iter % 50 == 0) {
        if (!index->Compact().ok()) errors.fetch_add(1);
        ++compactions;
      }
    }
  };

  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) threads.emplace_back(searcher, t);
  std::thread w(writer);
  w.join();
  stop.store(true);
  for (auto& t : threads) t.join();
  std::printf("%s: %lld searches, %lld write rounds, %lld compactions in %.1fs\n", GetParam().c_str(),
              (long long)searches.load(), (long long)writes, (long long)compactions, seconds);

  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(violations.load(), 0);
  EXPECT_EQ(short_results.load(), 0);
  EXPECT_GT(searches.load(), 0);
  EXPECT_GE(compactions, 2);

  // After the writes: removed ids never appear, every result is live.
  const int64_t removed_end = removed_below.load();
  EXPECT_GT(removed_end, churn_base);
  for (int64_t id = churn_base; id < removed_end; ++id) EXPECT_FALSE(index->Contains(id));
  // Query with the vectors some removed batches had (every 10th batch, to stay fast).
  for (int64_t id = churn_base; id < removed_end; id += 80) {
    const auto vecs = RandomUnit(8, kDim, id);
    auto hits = index->Search(vecs.data(), 8, k);
    ASSERT_TRUE(hits.ok());
    for (const auto& h : *hits) {
      for (int64_t got : h.ids) {
        EXPECT_FALSE(got >= churn_base && got < removed_end) << got;
        EXPECT_TRUE(index->Contains(got)) << got;
      }
    }
  }
  EXPECT_EQ(index->size(), stable + (add_started_below.load() - removed_end));
}

// 6b. An HNSW Upsert inserts kHnswUpsertChunk items per exclusive hold: searches run between
// the chunks and see a prefix of the batch, every item whole (its replaced vector hidden in the
// step its new one appears); the generation counts chunks. Flat applies a batch in one hold.
TEST(EmbeddingIndexTest, HnswUpsertLetsSearchesInBetweenChunks) {
  const int stable = 3000, batch = 400;
  const std::vector<int64_t> ids = SequentialIds(stable);
  const auto base = RandomUnit(stable, kDim, 21);
  auto index = MustBuild("HNSW32", kDim, ids, base);
  ASSERT_NE(index, nullptr);
  auto flat = MustBuild("Flat", kDim, ids, base);
  ASSERT_NE(flat, nullptr);

  // The batch replaces ids [0, batch/2) and adds [stable, stable + batch/2).
  std::vector<int64_t> upsert_ids;
  for (int i = 0; i < batch / 2; ++i) upsert_ids.push_back(i);
  for (int i = 0; i < batch / 2; ++i) upsert_ids.push_back(stable + i);
  const auto vectors = RandomUnit(batch, kDim, 22);

  const uint64_t flat_before = flat->generation();
  ASSERT_TRUE(flat->Upsert(upsert_ids, vectors.data()).ok());
  EXPECT_EQ(flat->generation(), flat_before + 1);

  const uint64_t before = index->generation();
  const size_t chunk = EmbeddingIndex::kHnswUpsertChunk;
  const uint64_t chunks = (batch + chunk - 1) / chunk;
  std::atomic<bool> done{false}, searching{false};
  std::atomic<int64_t> in_between{0}, bad_results{0};
  std::thread reader([&] {
    const auto q = RandomUnit(1, kDim, 23);
    while (!done.load()) {
      uint64_t g = 0;
      auto hits = index->Search(q.data(), 1, 5, {}, &g);
      if (!hits.ok() || hits->size() != 1 || (*hits)[0].ids.size() != 5) ++bad_results;
      if (g > before && g < before + chunks) ++in_between;
      searching = true;
    }
  });
  while (!searching.load()) std::this_thread::yield();
  ASSERT_TRUE(index->Upsert(upsert_ids, vectors.data()).ok());
  done = true;
  reader.join();
  EXPECT_EQ(index->generation(), before + chunks);
  EXPECT_GT(in_between.load(), 0) << "no search ran between two chunks of a " << batch
                                  << "-item upsert";
  EXPECT_EQ(bad_results.load(), 0);
  EXPECT_EQ(index->size(), stable + batch / 2);
  EXPECT_EQ(index->num_hidden(), batch / 2);
  for (int i = 0; i < batch; ++i) {
    auto v = index->Reconstruct(upsert_ids[i]);
    ASSERT_TRUE(v.ok());
    EXPECT_EQ(*v, std::vector<float>(vectors.begin() + i * kDim, vectors.begin() + (i + 1) * kDim));
  }
}

// 6c. Online HNSW insertions (the index's own loop over FAISS's HNSW::add_with_locks) link the
// new nodes into the graph: every upserted vector, and every old one, is found as its own
// nearest neighbor, whatever the call sizes.
TEST(EmbeddingIndexTest, HnswOnlineInsertionsAreReachable) {
  const int stable = 2000, added = 1200;
  const std::vector<int64_t> ids = SequentialIds(stable);
  const auto base = RandomUnit(stable, kDim, 31);
  auto index = MustBuild("HNSW32", kDim, ids, base);
  ASSERT_NE(index, nullptr);
  const auto fresh = RandomUnit(added, kDim, 32);
  int done = 0;
  for (int size : {1, 7, 50, 142, 1000}) {
    const int m = std::min(size, added - done);
    std::vector<int64_t> batch_ids(m);
    std::iota(batch_ids.begin(), batch_ids.end(), 100000 + done);
    ASSERT_TRUE(index->Upsert(batch_ids, fresh.data() + static_cast<size_t>(done) * kDim).ok());
    done += m;
  }
  ASSERT_EQ(done, added);
  ASSERT_EQ(index->size(), stable + added);
  auto self_hits = [&](const std::vector<float>& vectors, int n, int64_t first_id) {
    auto hits = index->Search(vectors.data(), n, 1);
    EXPECT_TRUE(hits.ok());
    int found = 0;
    for (int i = 0; hits.ok() && i < n; ++i) {
      found += !(*hits)[i].ids.empty() && (*hits)[i].ids[0] == first_id + i;
    }
    return static_cast<double>(found) / n;
  };
  EXPECT_GE(self_hits(fresh, added, 100000), 0.99);
  EXPECT_GE(self_hits(base, stable, 0), 0.99);
}

// The exact re-rank: scores are exact inner products, answers are the exact top-k among the
// k_factor * k compressed candidates, and a large k_factor reaches exact search.
TEST(EmbeddingIndexTest, RerankScoresExactly) {
  const int n = 6000, nq = 100, k = 10;
  const auto ids = SparseIds(n);
  const auto base = RandomUnit(n, kDim, 31);
  const auto queries = RandomUnit(nq, kDim, 32);
  std::vector<SearchHits> truth;
  for (int q = 0; q < nq; ++q) {
    truth.push_back(BruteForce(ids, base, queries.data() + q * kDim, kDim, k));
  }
  for (const char* factory : {"IVF32,PQ8,RFlat", "HNSW16,SQ8,RFlat"}) {
    auto index = MustBuild(factory, kDim, ids, base);
    ASSERT_NE(index, nullptr);
    if (std::string(factory).rfind("IVF", 0) == 0) {
      ASSERT_TRUE(index->SetSearchParameter("nprobe", 32).ok());  // every list
    }
    double previous = 0;
    for (double kf : {1.0, 4.0, 50.0}) {
      ASSERT_TRUE(index->SetSearchParameter("k_factor", kf).ok());
      auto got = index->Search(queries.data(), nq, k);
      ASSERT_TRUE(got.ok()) << got.status();
      for (int q = 0; q < nq; ++q) {
        ExpectSorted((*got)[q]);
        for (size_t j = 0; j < (*got)[q].ids.size(); ++j) {
          const int64_t row = ((*got)[q].ids[j] - 1000) / 7;
          EXPECT_NEAR((*got)[q].scores[j],
                      Dot(queries.data() + q * kDim, base.data() + row * kDim, kDim), 1e-5);
        }
      }
      const double r = RecallAt(*got, truth);
      std::printf("%s k_factor %.0f: recall@10 %.3f\n", factory, kf, r);
      EXPECT_GE(r, previous - 0.01) << factory;
      previous = r;
    }
    EXPECT_GE(previous, 0.97) << factory;
  }
}

// Train on a sample, a second codec over the first one's clustering, then Build adds without
// retraining.
TEST(EmbeddingIndexTest, TrainSharesTheCoarseQuantizer) {
  const int n = 4000;
  const auto ids = SequentialIds(n);
  const auto base = RandomUnit(n, kDim, 41);
  auto flat = EmbeddingIndex::Create(kDim, "IVF32,Flat");
  auto sq = EmbeddingIndex::Create(kDim, "IVF32,SQ8,RFlat");
  ASSERT_TRUE(flat.ok() && sq.ok());
  EXPECT_FALSE((*flat)->is_trained());
  ASSERT_TRUE((*flat)->Train(base.data(), 2000).ok());
  EXPECT_TRUE((*flat)->is_trained());
  EXPECT_EQ((*flat)->Train(base.data(), 2000).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE((*sq)->Train(base.data(), 2000, flat->get()).ok());
  ASSERT_TRUE((*flat)->Build(ids, base.data()).ok());
  ASSERT_TRUE((*sq)->Build(ids, base.data()).ok());
  // The same clustering: with nprobe 1 both scan the same list, so Flat's exact answers among
  // that list equal the re-ranked ones once k_factor covers the list.
  ASSERT_TRUE((*flat)->SetSearchParameter("nprobe", 1).ok());
  ASSERT_TRUE((*sq)->SetSearchParameter("nprobe", 1).ok());
  ASSERT_TRUE((*sq)->SetSearchParameter("k_factor", 1000).ok());
  const auto queries = RandomUnit(20, kDim, 42);
  auto a = (*flat)->Search(queries.data(), 20, 5);
  auto b = (*sq)->Search(queries.data(), 20, 5);
  ASSERT_TRUE(a.ok() && b.ok());
  for (int q = 0; q < 20; ++q) EXPECT_EQ((*a)[q].ids, (*b)[q].ids) << q;
}

// An online Upsert files a vector in the list the search's coarse step picks first for it:
// queried with its own vector at nprobe 1 (a query scans one list), every upserted item is found
// among that list's items, replacements included (their new list, not the old one).
TEST(EmbeddingIndexTest, IvfUpsertFilesInTheSearchesFirstList) {
  const int n = 2000, added = 300;
  auto index = EmbeddingIndex::Create(kDim, "IVF16,Flat");
  ASSERT_TRUE(index.ok());
  ASSERT_TRUE((*index)->Build(SequentialIds(n), RandomUnit(n, kDim, 61).data()).ok());
  ASSERT_TRUE((*index)->SetSearchParameter("nprobe", 1).ok());
  // New ids and replacements of built ones, in one batch as recall-server applies them.
  std::vector<int64_t> ids;
  for (int i = 0; i < added; ++i) ids.push_back(i % 3 == 0 ? i : n + i);
  const auto vectors = RandomUnit(added, kDim, 62);
  ASSERT_TRUE((*index)->Upsert(ids, vectors.data()).ok());
  auto hits = (*index)->Search(vectors.data(), added, n + added);  // k covers any list
  ASSERT_TRUE(hits.ok()) << hits.status();
  for (int i = 0; i < added; ++i) {
    const auto& found = (*hits)[i].ids;
    EXPECT_NE(std::find(found.begin(), found.end(), ids[i]), found.end()) << "item " << ids[i];
    EXPECT_LT(found.size(), static_cast<size_t>(n)) << "scanned more than one list";
  }
}

// The BLAS kernels of the inner-product IVF search answer what FAISS's own loops answer: the
// same lists, and the same top-k under a selector, up to float rounding.
TEST(BlasIvfScanTest, MatchesFaissIvfFlat) {
  const int n = 4000, nlist = 32, nq = 20;
  const auto base = RandomUnit(n, kDim, 51);
  const auto queries = RandomUnit(nq, kDim, 52);
  faiss::IndexFlatIP quantizer(kDim);
  faiss::IndexIVFFlat ivf(&quantizer, kDim, nlist, faiss::METRIC_INNER_PRODUCT);
  ivf.train(n, base.data());
  std::vector<faiss::Index::idx_t> labels(n);
  for (int i = 0; i < n; ++i) labels[i] = 3 * i + 7;
  ivf.add_with_ids(n, base.data(), labels.data());
  // Rejects every fifth label.
  struct EveryFifth : faiss::IDSelector {
    bool is_member(faiss::Index::idx_t id) const override { return id % 5 != 0; }
  } sel;
  for (const auto& [nprobe, k] : {std::pair{4, 10}, std::pair{1, 500}, std::pair{32, 1}}) {
    SCOPED_TRACE(absl::StrCat("nprobe ", nprobe, ", k ", k));
    std::vector<float> cd(nq * nprobe), ours_cd(nq * nprobe);
    std::vector<faiss::Index::idx_t> keys(nq * nprobe), ours_keys(nq * nprobe);
    quantizer.search(nq, queries.data(), nprobe, cd.data(), keys.data());
    BlasCoarseAssign(quantizer.get_xb(), nlist, kDim, queries.data(), nq, nprobe,
                     ours_cd.data(), ours_keys.data());
    EXPECT_EQ(ours_keys, keys);
    for (int j = 0; j < nq * nprobe; ++j) EXPECT_NEAR(ours_cd[j], cd[j], 1e-5) << j;
    BlasCoarseAssign(quantizer.get_xb(), nlist, kDim, queries.data(), 1, nprobe,
                     ours_cd.data(), ours_keys.data());  // the GEMV path of one query
    EXPECT_TRUE(std::equal(keys.begin(), keys.begin() + nprobe, ours_keys.begin()));
    faiss::SearchParametersIVF params;
    params.nprobe = nprobe;
    params.sel = &sel;
    for (int q = 0; q < nq; ++q) {
      const float* x = queries.data() + q * kDim;
      const faiss::Index::idx_t* lists = keys.data() + q * nprobe;
      std::vector<float> d(k), ours_d(k);
      std::vector<faiss::Index::idx_t> l(k), ours_l(k);
      faiss::IndexIVFStats stats;
      ivf.search_preassigned(1, x, k, lists, cd.data() + q * nprobe, d.data(), l.data(), false,
                             &params, nullptr);
      BlasScanFlatLists(*ivf.invlists, kDim, x, lists, nprobe, k, &sel, ours_d.data(),
                        ours_l.data(), &stats);
      EXPECT_EQ(ours_l, l) << q;
      for (int j = 0; j < k; ++j) {
        if (l[j] >= 0) {
          EXPECT_NEAR(ours_d[j], d[j], 1e-5) << q << " " << j;
        }
      }
      size_t scanned = 0;
      for (int p = 0; p < nprobe; ++p) scanned += ivf.invlists->list_size(lists[p]);
      EXPECT_EQ(stats.ndis, scanned);
      EXPECT_EQ(stats.nlist, static_cast<size_t>(nprobe));
    }
  }
}

// An online write's list (nprobe 1) is the first centroid with the largest product, wherever it
// sits: in the 8-wide part of the scan or in its tail, among exact ties, with one list.
TEST(BlasIvfScanTest, NearestListIsTheFirstLargest) {
  struct Case {
    int nlist;
    int query_axis;
    std::vector<int> raised;  // rows e_(query_axis) * 2: the largest products
    int64_t want;
  };
  // Row r is e_(r % 5) unless raised. Products are 0, 1 or 2, exact in any summation order, so
  // ties are exact too. Without raised rows the ties are the rows r % 5 == query_axis.
  for (const Case& c : {Case{1, 0, {}, 0}, Case{13, 2, {}, 2}, Case{13, 4, {}, 4},
                        Case{13, 0, {12}, 12}, Case{13, 0, {10, 12}, 10},
                        Case{16, 3, {}, 3}, Case{40, 3, {21}, 21}, Case{40, 3, {21, 37}, 21},
                        Case{4099, 1, {4098}, 4098}, Case{4099, 2, {}, 2}}) {
    SCOPED_TRACE(absl::StrCat("nlist ", c.nlist, ", query e_", c.query_axis, ", raised ",
                              absl::StrJoin(c.raised, ",")));
    std::vector<float> centroids(static_cast<size_t>(c.nlist) * kDim, 0.0f);
    for (int r = 0; r < c.nlist; ++r) {
      const bool raised = std::find(c.raised.begin(), c.raised.end(), r) != c.raised.end();
      centroids[static_cast<size_t>(r) * kDim + (raised ? c.query_axis : r % 5)] =
          raised ? 2.0f : 1.0f;
    }
    std::vector<float> q(kDim, 0.0f);
    q[c.query_axis] = 1.0f;
    const float want_dist = c.raised.empty() ? 1.0f : 2.0f;
    float dist = 0;
    int64_t key = -1;
    BlasCoarseAssign(centroids.data(), c.nlist, kDim, q.data(), 1, 1, &dist, &key);
    EXPECT_EQ(key, c.want);
    EXPECT_EQ(dist, want_dist);
    // The same vector in a batch of three goes through the GEMM path.
    std::vector<float> batch;
    for (int i = 0; i < 3; ++i) batch.insert(batch.end(), q.begin(), q.end());
    std::vector<float> dists(3);
    std::vector<int64_t> keys(3);
    BlasCoarseAssign(centroids.data(), c.nlist, kDim, batch.data(), 3, 1, dists.data(),
                     keys.data());
    EXPECT_EQ(keys, std::vector<int64_t>(3, c.want));
    EXPECT_EQ(dists, std::vector<float>(3, want_dist));
  }
}

// 7. Error cases map to the right status codes.
TEST(EmbeddingIndexTest, ErrorCodes) {
  using absl::StatusCode;
  EXPECT_EQ(EmbeddingIndex::Create(0, "Flat").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(EmbeddingIndex::Create(-3, "Flat").status().code(), StatusCode::kInvalidArgument);
  auto bad = EmbeddingIndex::Create(16, "Bogus42");
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("Bogus42"), std::string::npos) << bad.status();
  EXPECT_EQ(EmbeddingIndex::Create(16, "").status().code(), StatusCode::kInvalidArgument);
  // Kinds whose 1.7.3 search ignores/rejects SearchParameters::sel are refused up front.
  EXPECT_EQ(EmbeddingIndex::Create(16, "PQ4").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(EmbeddingIndex::Create(16, "IDMap,Flat").status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(EmbeddingIndex::Create(16, "HNSW16").ok());
  // FAISS 1.7.3 throws for SearchParameters in fast-scan and IndexRefine searches, and
  // IndexIVFPQR re-ranks blind to the selector; a re-rank of exact storage is pointless.
  for (const char* refused : {"IVF16,PQ8x4fs", "PQ8x4fs", "IVF16,PQ8,Refine(Flat)",
                              "IVF16,PQ8+8", "Flat,RFlat", "HNSW16,RFlat", "IVF16,Flat,RFlat"}) {
    auto r = EmbeddingIndex::Create(16, refused);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << refused << ": " << r.status();
  }
  for (const char* ok : {"HNSW16,SQ8", "HNSW16,SQ8,RFlat", "IVF16,SQ8,RFlat", "IVF16,PQ8,RFlat"}) {
    EXPECT_TRUE(EmbeddingIndex::Create(16, ok).ok()) << ok;
  }
  {
    auto rf = EmbeddingIndex::Create(16, "IVF16,SQ8,RFlat");
    ASSERT_TRUE(rf.ok());
    EXPECT_TRUE((*rf)->reranks());
    EXPECT_EQ(*(*rf)->GetSearchParameter("k_factor"), EmbeddingIndex::kDefaultKFactor);
    EXPECT_TRUE((*rf)->SetSearchParameter("k_factor", 3.5).ok());
    EXPECT_EQ((*rf)->SetSearchParameter("k_factor", 0.5).code(), StatusCode::kInvalidArgument);
    EXPECT_EQ((*rf)->SetSearchParameter("efSearch", 8).code(), StatusCode::kInvalidArgument);
    const auto params = (*rf)->SearchParameters();
    ASSERT_EQ(params.size(), 2u);
    EXPECT_EQ(params[0].first, "nprobe");
    EXPECT_EQ(params[1], (std::pair<std::string, double>("k_factor", 3.5)));
  }

  const int dim = 8;
  auto flat = EmbeddingIndex::Create(dim, "Flat");
  ASSERT_TRUE(flat.ok());
  EmbeddingIndex& idx = **flat;
  const auto v = RandomUnit(4, dim, 15);
  // Empty index: searches succeed with no hits.
  auto none = idx.Search(v.data(), 2, 5);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->size(), 2u);
  EXPECT_TRUE((*none)[0].ids.empty());

  EXPECT_EQ(idx.Build({1, 2, 1, 3}, v.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(idx.Build({1, -1, 2, 3}, v.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(idx.Build({1, 2, 3, 4}, nullptr).code(), StatusCode::kInvalidArgument);
  std::vector<float> nan = v;
  nan[5] = std::nanf("");
  EXPECT_EQ(idx.Build({1, 2, 3, 4}, nan.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(idx.generation(), 0u);  // failed calls do not count
  ASSERT_TRUE(idx.Build({1, 2, 3, 4}, v.data()).ok());
  EXPECT_EQ(idx.Build({5}, v.data()).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(idx.Upsert({7, 7}, v.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(idx.size(), 4);

  EXPECT_EQ(idx.Search(v.data(), 1, 0).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(idx.Search(v.data(), 1, -2).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(idx.Search(v.data(), -1, 5).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(idx.Search(nullptr, 1, 5).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(idx.Search(nan.data(), 2, 5).status().code(), StatusCode::kInvalidArgument);
  std::vector<std::vector<int64_t>> wrong(3);
  EXPECT_EQ(idx.Search(v.data(), 2, 5, wrong).status().code(), StatusCode::kInvalidArgument);
  auto zero = idx.Search(v.data(), 0, 5);
  ASSERT_TRUE(zero.ok());
  EXPECT_TRUE(zero->empty());

  EXPECT_EQ(idx.SetSearchParameter("efSearch", 32).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(idx.Reconstruct(99).status().code(), StatusCode::kNotFound);

  auto hnsw = EmbeddingIndex::Create(dim, "HNSW32");
  ASSERT_TRUE(hnsw.ok());
  EXPECT_TRUE((*hnsw)->SetSearchParameter("efSearch", 100).ok());
  EXPECT_EQ(*(*hnsw)->GetSearchParameter("efSearch"), 100);
  EXPECT_EQ((*hnsw)->SetSearchParameter("nprobe", 8).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*hnsw)->SetSearchParameter("efSearch", 0).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*hnsw)->SetSearchParameter("efSearch", 1.5).code(), StatusCode::kInvalidArgument);

  auto ivf = EmbeddingIndex::Create(dim, "IVF16,Flat");
  ASSERT_TRUE(ivf.ok());
  EXPECT_EQ((*ivf)->SetSearchParameter("efSearch", 8).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE((*ivf)->SetSearchParameter("nprobe", 1000).ok());  // capped at nlist
  EXPECT_EQ(*(*ivf)->GetSearchParameter("nprobe"), 16);
  EXPECT_EQ((*ivf)->Upsert({1}, v.data()).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ((*ivf)->Build({}, nullptr).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*ivf)->Build({1, 2, 3, 4}, v.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*ivf)->size(), 0);

  // Load errors.
  EXPECT_EQ(EmbeddingIndex::Load("/nonexistent/dir/items.faiss").status().code(),
            StatusCode::kNotFound);
  const std::string garbage = TempPath("garbage");
  { std::ofstream(garbage) << "this is not a faiss index"; }
  EXPECT_EQ(EmbeddingIndex::Load(garbage).status().code(), StatusCode::kDataLoss);
  std::remove(garbage.c_str());
  const std::string l2 = TempPath("l2");
  {
    faiss::IndexFlatL2 plain(dim);
    plain.add(4, v.data());
    faiss::write_index(&plain, l2.c_str());
  }
  EXPECT_EQ(EmbeddingIndex::Load(l2).status().code(), StatusCode::kInvalidArgument);
  std::remove(l2.c_str());
  EXPECT_FALSE(idx.Save("/nonexistent/dir/items.faiss").ok());
}

// Files written by plain FAISS load too: IndexIDMap (ids kept) and a bare index (ids are
// positions); the factory can be given explicitly.
TEST(EmbeddingIndexTest, LoadsPlainFaissFiles) {
  const int dim = 8;
  const auto v = RandomUnit(3, dim, 16);
  const std::string path = TempPath("plain");
  {
    faiss::IndexIDMap map(new faiss::IndexFlatIP(dim));
    map.own_fields = true;
    const faiss::Index::idx_t xids[] = {10, 20, 30};
    map.add_with_ids(3, v.data(), xids);
    faiss::write_index(&map, path.c_str());
  }
  auto loaded = EmbeddingIndex::Load(path, "Flat");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->factory(), "Flat");
  auto hits = (*loaded)->Search(v.data() + dim, 1, 1);
  ASSERT_TRUE(hits.ok());
  EXPECT_EQ((*hits)[0].ids, std::vector<int64_t>{20});
  {
    faiss::IndexFlatIP bare(dim);
    bare.add(3, v.data());
    faiss::write_index(&bare, path.c_str());
  }
  loaded = EmbeddingIndex::Load(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  hits = (*loaded)->Search(v.data() + 2 * dim, 1, 1);
  ASSERT_TRUE(hits.ok());
  EXPECT_EQ((*hits)[0].ids, std::vector<int64_t>{2});
  std::remove(path.c_str());
}

}  // namespace
}  // namespace recall
