#include "trainer/evaluator.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "trainer/dataset.h"
#include "trainer/synthetic.h"

namespace recall::trainer {
namespace {

double Disc(int rank1) { return 1.0 / std::log2(rank1 + 1.0); }  // 1-based rank

// Score function from a dense row-major [num_users x num_items] matrix.
ScoreBlockFn MatrixScores(const std::vector<float>* m, int64_t num_items) {
  return [m, num_items](int64_t begin, int64_t end, float* out) {
    std::copy(m->begin() + begin * num_items, m->begin() + end * num_items, out);
  };
}

// Four users, five items, hand-ranked.
//  u0: train {1}, test {0,3}; scores .5 .9 .1 .8 .3 -> ranking (1 removed) 3 0 4 2
//  u1: train {},  test {2};   scores .2 .2 .2 .9 .1 -> ranking 3 0 1 2 4 (ties by lower id)
//  u2: train {},  test {0,4}; scores .5 .9 0 0 .1  -> ranking 1 0 4 2 3
//  u3: train {0}, test {};    not evaluated
Dataset TinyDataset() {
  Dataset d;
  d.name = "tiny";
  d.num_users = 4;
  d.num_items = 5;
  d.train = {{1}, {}, {}, {0}};
  d.test = {{0, 3}, {2}, {0, 4}, {}};
  return d;
}
std::vector<float> TinyScores() {
  return {.5f, .9f, .1f, .8f, .3f,  //
          .2f, .2f, .2f, .9f, .1f,  //
          .5f, .9f, 0.f, 0.f, .1f,  //
          9.f, 9.f, 9.f, 9.f, 9.f};
}

TEST(EvaluatorTest, HandComputedRecallAndNdcg) {
  const Dataset d = TinyDataset();
  const std::vector<float> s = TinyScores();
  EvalOptions o;
  o.ks = {1, 2, 4};
  std::vector<std::vector<int64_t>> top;
  o.top_lists = &top;
  const RankingMetrics m = EvaluateFullRanking(d, MatrixScores(&s, 5), o);
  EXPECT_EQ(m.num_users, 3);

  EXPECT_EQ(top[0], (std::vector<int64_t>{3, 0, 4, 2}));
  EXPECT_EQ(top[1], (std::vector<int64_t>{3, 0, 1, 2}));
  EXPECT_EQ(top[2], (std::vector<int64_t>{1, 0, 4, 2}));
  EXPECT_TRUE(top[3].empty());

  // recall: u0 {1/2, 1, 1}, u1 {0, 0, 1}, u2 {0, 1/2, 1}
  EXPECT_DOUBLE_EQ(m.values.at("recall@1"), (0.5 + 0 + 0) / 3);
  EXPECT_DOUBLE_EQ(m.values.at("recall@2"), (1 + 0 + 0.5) / 3);
  EXPECT_DOUBLE_EQ(m.values.at("recall@4"), (1 + 1 + 1) / 3.0);
  // ndcg: u0 hits at ranks 1,2 (|test| 2): 1, 1, 1.
  //       u1 hit at rank 4 (|test| 1): 0, 0, Disc(4).
  //       u2 hits at ranks 2,3 (|test| 2): 0, Disc(2)/(1+Disc(2)), (Disc(2)+Disc(3))/(1+Disc(2)).
  const double idcg2 = 1 + Disc(2);
  EXPECT_DOUBLE_EQ(m.values.at("ndcg@1"), (1 + 0 + 0) / 3.0);
  EXPECT_DOUBLE_EQ(m.values.at("ndcg@2"), (1 + 0 + Disc(2) / idcg2) / 3);
  EXPECT_DOUBLE_EQ(m.values.at("ndcg@4"), (1 + Disc(4) + (Disc(2) + Disc(3)) / idcg2) / 3);
  EXPECT_NEAR(m.values.at("ndcg@4"), (1 + 0.4306766 + 0.6934264) / 3, 1e-6);
  EXPECT_EQ(m.values.size(), 6u);
}

TEST(EvaluatorTest, DefaultKsAndShortRankings) {
  // Fewer items than K: recall and ndcg use every item available.
  const Dataset d = TinyDataset();
  const std::vector<float> s = TinyScores();
  const RankingMetrics m = EvaluateFullRanking(d, MatrixScores(&s, 5));
  ASSERT_EQ(m.values.size(), 4u);
  EXPECT_DOUBLE_EQ(m.values.at("recall@20"), 1.0);
  EXPECT_DOUBLE_EQ(m.values.at("recall@50"), 1.0);
  EXPECT_DOUBLE_EQ(m.values.at("ndcg@20"), m.values.at("ndcg@50"));
  EXPECT_EQ(FormatMetrics(m).substr(0, 30), "recall@20=1.00000 ndcg@20=0.70");
}

TEST(EvaluatorTest, TrainItemsAreNeverRanked) {
  Dataset d;
  d.num_users = 1;
  d.num_items = 6;
  d.train = {{0, 1, 5}};
  d.test = {{0, 2}};  // item 0 is both train and test: removed, so it can never be a hit
  std::vector<float> s = {9, 8, 1, 2, 3, 7};
  std::vector<std::vector<int64_t>> top;
  EvalOptions o;
  o.ks = {3};
  o.top_lists = &top;
  const RankingMetrics m = EvaluateFullRanking(d, MatrixScores(&s, 6), o);
  EXPECT_EQ(top[0], (std::vector<int64_t>{4, 3, 2}));
  EXPECT_DOUBLE_EQ(m.values.at("recall@3"), 0.5);
  EXPECT_DOUBLE_EQ(m.values.at("ndcg@3"), Disc(3) / (1 + Disc(2)));
}

TEST(EvaluatorTest, TiesGoToLowerIdAndNanRanksLast) {
  Dataset d;
  d.num_users = 2;
  d.num_items = 10;
  d.train = {{0, 2}, {}};
  d.test = {{3}, {9}};
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> s(20, 0.0f);
  s[10 + 0] = nan;
  s[10 + 1] = nan;
  s[10 + 9] = -1.0f;
  std::vector<std::vector<int64_t>> top;
  EvalOptions o;
  o.ks = {1, 2, 9};
  o.top_lists = &top;
  const RankingMetrics m = EvaluateFullRanking(d, MatrixScores(&s, 10), o);
  EXPECT_EQ(top[0], (std::vector<int64_t>{1, 3, 4, 5, 6, 7, 8, 9}));
  EXPECT_EQ(top[1], (std::vector<int64_t>{2, 3, 4, 5, 6, 7, 8, 9, 0}));
  EXPECT_DOUBLE_EQ(m.values.at("recall@1"), 0.0);
  EXPECT_DOUBLE_EQ(m.values.at("recall@2"), 0.5);
  EXPECT_DOUBLE_EQ(m.values.at("recall@9"), 1.0);
}

TEST(EvaluatorTest, NoEvaluatedUsersGivesZeros) {
  Dataset d;
  d.num_users = 2;
  d.num_items = 3;
  d.train = {{0}, {1}};
  d.test = {{}, {}};
  bool called = false;
  const RankingMetrics m =
      EvaluateFullRanking(d, [&](int64_t, int64_t, float*) { called = true; });
  EXPECT_FALSE(called);
  EXPECT_EQ(m.num_users, 0);
  EXPECT_EQ(m.values.at("recall@20"), 0.0);
}

// A random instance used by the agreement tests.
struct RandomCase {
  Dataset d;
  std::vector<float> scores;
};
RandomCase MakeRandomCase(int64_t users, int64_t items, uint64_t seed, bool integer_scores) {
  RandomCase c;
  SyntheticConfig cfg;
  cfg.num_users = users;
  cfg.num_items = items;
  cfg.seed = seed;
  c.d = GenerateSynthetic(cfg);
  std::mt19937_64 g(seed);
  c.scores.resize(users * items);
  for (float& x : c.scores) {
    x = integer_scores ? static_cast<float>(g() % 7) : static_cast<float>(g() >> 40) * 0x1.0p-24f;
  }
  return c;
}

TEST(EvaluatorTest, TopListsAgreeWithFullRanking) {
  const RandomCase c = MakeRandomCase(300, 500, 7, /*integer_scores=*/true);
  std::vector<std::vector<int64_t>> top;
  EvalOptions o;
  o.ks = {5, 20, 50};
  o.top_lists = &top;
  const RankingMetrics full = EvaluateFullRanking(c.d, MatrixScores(&c.scores, 500), o);
  EXPECT_EQ(full.num_users, 300);
  for (int64_t u = 0; u < 300; ++u) ASSERT_EQ(top[u].size(), 50u) << u;
  const RankingMetrics lists = EvaluateTopLists(c.d, top, o.ks);
  EXPECT_EQ(lists.num_users, full.num_users);
  EXPECT_EQ(lists.values, full.values);

  // Block size and thread count do not change anything.
  EvalOptions o2 = o;
  o2.top_lists = nullptr;
  o2.block_users = 7;
  o2.threads = 1;
  EXPECT_EQ(EvaluateFullRanking(c.d, MatrixScores(&c.scores, 500), o2).values, full.values);

  // Users missing from `top` count with zero hits.
  std::vector<std::vector<int64_t>> partial(top.begin(), top.begin() + 150);
  const RankingMetrics half = EvaluateTopLists(c.d, partial, o.ks);
  EXPECT_EQ(half.num_users, 300);
  EXPECT_LT(half.values.at("recall@20"), full.values.at("recall@20"));
}

TEST(EvaluatorTest, EmbeddingsAgreeWithBruteForce) {
  // Small integer embeddings: dot products are exact in float, so sgemm and the brute force
  // agree bit for bit (plenty of ties too, exercising the tie-break in both).
  const int64_t users = 120, items = 333;
  const int dim = 8;
  SyntheticConfig cfg;
  cfg.num_users = users;
  cfg.num_items = items;
  const Dataset d = GenerateSynthetic(cfg);
  std::mt19937_64 g(3);
  std::vector<float> ue(users * dim), ie(items * dim);
  for (float& x : ue) x = static_cast<float>(static_cast<int>(g() % 5) - 2);
  for (float& x : ie) x = static_cast<float>(static_cast<int>(g() % 5) - 2);
  auto brute = [&](int64_t begin, int64_t end, float* out) {
    for (int64_t u = begin; u < end; ++u) {
      for (int64_t i = 0; i < items; ++i) {
        float s = 0;
        for (int k = 0; k < dim; ++k) s += ue[u * dim + k] * ie[i * dim + k];
        out[(u - begin) * items + i] = s;
      }
    }
  };
  std::vector<std::vector<int64_t>> top_a, top_b;
  EvalOptions o;
  o.block_users = 50;
  o.top_lists = &top_a;
  const RankingMetrics a = EvaluateEmbeddings(d, ue.data(), ie.data(), dim, o);
  o.top_lists = &top_b;
  const RankingMetrics b = EvaluateFullRanking(d, brute, o);
  EXPECT_EQ(top_a, top_b);
  EXPECT_EQ(a.values, b.values);
  EXPECT_EQ(a.num_users, users);
  EXPECT_GT(a.values.at("recall@50"), 0.0);
}

TEST(EvaluatorTest, PopularityMatchesFullRankingWithPopularityScores) {
  SyntheticConfig cfg;
  cfg.num_users = 500;
  cfg.num_items = 400;
  const Dataset d = GenerateSynthetic(cfg);
  const std::vector<int64_t> pop = d.ItemPopularity();
  std::vector<std::vector<int64_t>> top_a, top_b;
  EvalOptions o;
  o.top_lists = &top_a;
  const RankingMetrics a = EvaluatePopularity(d, o);
  o.top_lists = &top_b;
  const RankingMetrics b = EvaluateFullRanking(d, [&](int64_t begin, int64_t end, float* out) {
    for (int64_t u = begin; u < end; ++u) {
      for (int64_t i = 0; i < d.num_items; ++i) out[(u - begin) * d.num_items + i] = pop[i];
    }
  }, o);
  EXPECT_EQ(top_a, top_b);
  EXPECT_EQ(a.values, b.values);
}

// The published ItemPop numbers on the LightGCN Gowalla split (shared/data/gowalla/README.md).
std::string GowallaDir() {
  const char* env = std::getenv("RECALL_GOWALLA_DIR");
  if (env != nullptr && *env != '\0') return env;
  return RECALL_GOWALLA_DEFAULT_DIR;
}

TEST(GowallaTest, PopularityReproducesPublishedNumbers) {
  const std::string dir = GowallaDir();
  if (!std::filesystem::exists(std::filesystem::path(dir) / "train.txt") ||
      !std::filesystem::exists(std::filesystem::path(dir) / "test.txt")) {
    GTEST_SKIP() << "Gowalla split not found at " << dir << "; skipping";
  }
  const auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<Dataset> loaded = LoadLightGcn(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const Dataset& d = *loaded;
  const auto t1 = std::chrono::steady_clock::now();
  EXPECT_EQ(d.num_users, 29858);
  EXPECT_EQ(d.num_items, 40981);
  EXPECT_EQ(d.num_train_interactions(), 810128);
  EXPECT_EQ(d.num_test_interactions(), 217242);
  EXPECT_EQ(d.num_test_users(), 29858);
  EXPECT_TRUE(d.Validate().ok()) << d.Validate();

  const RankingMetrics m = EvaluatePopularity(d);
  const auto t2 = std::chrono::steady_clock::now();
  std::cout << "gowalla ItemPop: " << FormatMetrics(m) << " (load "
            << std::chrono::duration<double>(t1 - t0).count() << " s, eval "
            << std::chrono::duration<double>(t2 - t1).count() << " s)\n";
  EXPECT_EQ(m.num_users, 29858);
  EXPECT_EQ(std::llround(m.values.at("recall@20") * 1e5), 4163) << m.values.at("recall@20");
  EXPECT_EQ(std::llround(m.values.at("ndcg@20") * 1e5), 3169) << m.values.at("ndcg@20");

  // The generic full-ranking path agrees on a slice of users (the whole split would take a
  // few seconds of scoring).
  Dataset sub = d;
  sub.num_users = 2000;
  sub.train.resize(2000);
  sub.test.resize(2000);
  const std::vector<int64_t> pop = d.ItemPopularity();  // popularity of the FULL train set
  std::vector<std::vector<int64_t>> top_a, top_b;
  EvalOptions o;
  o.top_lists = &top_b;
  const RankingMetrics b = EvaluateFullRanking(sub, [&](int64_t begin, int64_t end, float* out) {
    for (int64_t u = begin; u < end; ++u) {
      std::copy(pop.begin(), pop.end(), out + (u - begin) * d.num_items);
    }
  }, o);
  std::vector<std::vector<int64_t>> top_full;
  o.top_lists = &top_full;
  EvaluatePopularity(d, o);
  top_a.assign(top_full.begin(), top_full.begin() + 2000);
  EXPECT_EQ(top_a, top_b);
}

}  // namespace
}  // namespace recall::trainer
