#include "trainer/negatives.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <stdexcept>
#include <vector>

// Built as one unit with the other trainer suites (CMakeLists.txt), so its helpers live in a
// namespace of its own.
namespace recall::trainer::negatives_tests {
namespace {

torch::Tensor Ids(std::vector<int64_t> v) { return torch::tensor(v, torch::kInt64); }
std::vector<int64_t> Vec(const torch::Tensor& t) {
  torch::Tensor c = t.contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

TEST(KeyQueue, KeepsFifoOrderAndOverwritesTheOldest) {
  KeyQueue q(5, 2);
  EXPECT_EQ(q.size(), 0);
  q.Enqueue(torch::ones({3, 2}), Ids({1, 2, 3}));
  EXPECT_EQ(q.size(), 3);
  EXPECT_EQ(Vec(q.IdsOldestFirst()), (std::vector<int64_t>{1, 2, 3}));
  q.Enqueue(torch::ones({3, 2}) * 2, Ids({4, 5, 6}));  // wraps: 1 falls out
  EXPECT_EQ(q.size(), 5);
  EXPECT_EQ(Vec(q.IdsOldestFirst()), (std::vector<int64_t>{2, 3, 4, 5, 6}));
  q.Enqueue(torch::ones({7, 2}) * 3, Ids({7, 8, 9, 10, 11, 12, 13}));  // more than capacity
  EXPECT_EQ(Vec(q.IdsOldestFirst()), (std::vector<int64_t>{9, 10, 11, 12, 13}));
  EXPECT_TRUE(torch::allclose(q.keys(), torch::ones({5, 2}) * 3));
}

TEST(KeyQueue, KeysMatchTheirIdsAndAreCopies) {
  KeyQueue q(4, 3);
  torch::Tensor k = torch::arange(6, torch::kFloat32).reshape({2, 3});
  q.Enqueue(k, Ids({10, 11}));
  k.fill_(-1);  // the queue owns a copy
  EXPECT_EQ(q.keys()[1][2].item<float>(), 5.f);
  EXPECT_EQ(q.ids()[1].item<int64_t>(), 11);
}

TEST(KeyQueue, RestoreRoundTrips) {
  KeyQueue q(4, 2);
  q.Enqueue(torch::randn({6, 2}), Ids({1, 2, 3, 4, 5, 6}));
  KeyQueue r;
  r.Restore(q.state_keys(), q.state_ids(), q.state_cursor());
  EXPECT_EQ(Vec(r.IdsOldestFirst()), Vec(q.IdsOldestFirst()));
  r.Enqueue(torch::zeros({1, 2}), Ids({7}));
  q.Enqueue(torch::zeros({1, 2}), Ids({7}));
  EXPECT_EQ(Vec(r.IdsOldestFirst()), Vec(q.IdsOldestFirst()));
  EXPECT_TRUE(torch::equal(r.keys(), q.keys()));
}

TEST(MomentumUpdate, FollowsTheEmaRule) {
  torch::jit::Module online("M"), key("M");
  online.register_parameter("w", torch::full({2, 2}, 1.0), false);
  key.register_parameter("w", torch::full({2, 2}, 3.0), false);
  MomentumUpdate(online, key, 0.9);
  // k = 0.9 * 3 + 0.1 * 1 = 2.8
  EXPECT_TRUE(torch::allclose(key.attr("w").toTensor(), torch::full({2, 2}, 2.8)));
  EXPECT_TRUE(torch::allclose(online.attr("w").toTensor(), torch::full({2, 2}, 1.0)));
  MomentumUpdate(online, key, 0.5);  // 0.5 * 2.8 + 0.5 * 1 = 1.9
  EXPECT_TRUE(torch::allclose(key.attr("w").toTensor(), torch::full({2, 2}, 1.9)));
}

TEST(ContrastiveLogits, LogQSubtractsExactlyLogQ) {
  torch::manual_seed(1);
  torch::Tensor u = torch::randn({4, 3}), v = torch::randn({4, 3});
  torch::Tensor ids = Ids({0, 1, 2, 3});
  torch::Tensor q = torch::tensor({0.4, 0.3, 0.2, 0.1}, torch::kFloat32);
  ContrastiveOptions plain;
  plain.temperature = 0.5;
  ContrastiveOptions corrected = plain;
  corrected.log_q = q.log();
  torch::Tensor a = ContrastiveLogits(u, v, ids, {}, {}, plain);
  torch::Tensor b = ContrastiveLogits(u, v, ids, {}, {}, corrected);
  EXPECT_TRUE(torch::allclose(a, torch::matmul(u, v.t()) / 0.5));
  EXPECT_TRUE(torch::allclose(b - a, -q.log().unsqueeze(0).expand({4, 4}), 1e-6, 1e-6));
  // A partial correction subtracts exactly alpha * log q.
  ContrastiveOptions partial = corrected;
  partial.log_q_weight = 0.25;
  torch::Tensor c = ContrastiveLogits(u, v, ids, {}, {}, partial);
  EXPECT_TRUE(torch::allclose(c - a, -0.25 * q.log().unsqueeze(0).expand({4, 4}), 1e-6, 1e-6));
}

TEST(ContrastiveLogits, MixtureCorrectionWithGlobalNegatives) {
  // B = 2, no queue, M = 2 global over N = 4 items: correction log(q + M / (N * B)).
  torch::Tensor u = torch::eye(2), v = torch::eye(2);
  torch::Tensor q = torch::tensor({0.4, 0.3, 0.2, 0.1}, torch::kFloat32);
  NegativeSet global{torch::zeros({2, 2}), Ids({2, 3})};
  ContrastiveOptions o;
  o.temperature = 1.0;
  o.log_q = q.log();
  torch::Tensor l = ContrastiveLogits(u, v, Ids({0, 1}), {}, global, o);
  ASSERT_EQ(l.size(1), 4);
  EXPECT_NEAR(l[0][0].item<float>(), 1.0 - std::log(0.4 + 0.25), 1e-5);
  EXPECT_NEAR(l[0][3].item<float>(), 0.0 - std::log(0.1 + 0.25), 1e-5);
}

TEST(ContrastiveLogits, MasksAccidentalHitsEverywhereButTheTarget) {
  torch::Tensor u = torch::randn({3, 2}), v = torch::randn({3, 2});
  // Item 7 twice in the batch; the queue holds keys of 7 and 9 and an empty slot; global draws 9.
  torch::Tensor ids = Ids({7, 7, 9});
  NegativeSet queue{torch::randn({3, 2}), Ids({7, 9, -1})};
  NegativeSet global{torch::randn({1, 2}), Ids({9})};
  ContrastiveOptions o;
  torch::Tensor l = ContrastiveLogits(u, v, ids, queue, global, o);
  ASSERT_EQ(l.sizes(), (torch::IntArrayRef{3, 7}));
  auto masked = [&](int r, int c) { return l[r][c].item<float>() == kMaskedLogit; };
  for (int r = 0; r < 3; ++r) EXPECT_FALSE(masked(r, r)) << "target of row " << r;
  EXPECT_TRUE(masked(0, 1));   // the other 7 in the batch
  EXPECT_TRUE(masked(1, 0));
  EXPECT_FALSE(masked(0, 2));  // 9 is a real negative for a 7
  EXPECT_TRUE(masked(0, 3));   // queue key of 7
  EXPECT_FALSE(masked(0, 4));
  EXPECT_TRUE(masked(2, 4));   // queue key of 9 for the 9 row
  for (int r = 0; r < 3; ++r) EXPECT_TRUE(masked(r, 5)) << "empty slot, row " << r;
  EXPECT_TRUE(masked(2, 6));   // global draw of 9
  EXPECT_FALSE(masked(0, 6));
  EXPECT_TRUE(std::isfinite(InfoNceLoss(l).item<float>()));
}

TEST(ContrastiveLogits, MasksTheUsersOtherPositivesOnlyInTheirOwnRows) {
  torch::Tensor u = torch::randn({4, 2}), v = torch::randn({4, 2});
  // Rows: (user A, 7), (user B, 8), (user A, 9), (user C, 5). A's train items are 5, 7, 9;
  // B's are 8 and 9; C has no list (nullptr). The queue holds keys of 8 and 5.
  torch::Tensor ids = Ids({7, 8, 9, 5});
  NegativeSet queue{torch::randn({2, 2}), Ids({8, 5})};
  const std::vector<int64_t> a = {5, 7, 9}, b = {8, 9};
  ContrastiveOptions o;
  o.log_q = torch::log(torch::full({10}, 0.1));
  const torch::Tensor plain = ContrastiveLogits(u, v, ids, queue, {}, o);
  o.row_positives = {&a, &b, &a, nullptr};
  const torch::Tensor l = ContrastiveLogits(u, v, ids, queue, {}, o);
  const std::vector<std::vector<int>> expected_masked = {
      {2, 3, 5},  // A's 9, A's 5 in the batch and A's 5 in the queue
      {2, 4},     // B's 9 and B's own 8 in the queue (an accidental hit)
      {0, 3, 5},  // A's 7 and both 5s
      {5},        // C: only the queue key of its own positive
  };
  for (int r = 0; r < 4; ++r) {
    for (int c = 0; c < 6; ++c) {
      const bool want = std::count(expected_masked[r].begin(), expected_masked[r].end(), c) > 0;
      EXPECT_EQ(l[r][c].item<float>() == kMaskedLogit, want) << "row " << r << " column " << c;
      // Everything not masked is exactly the logit without the option.
      if (!want) {
        EXPECT_EQ(l[r][c].item<float>(), plain[r][c].item<float>());
      }
    }
  }
  o.row_positives = {&a};
  EXPECT_THROW(ContrastiveLogits(u, v, ids, queue, {}, o), std::invalid_argument);
}

TEST(InfoNceLoss, IsCrossEntropyOnTheDiagonal) {
  torch::Tensor l = torch::tensor({{2.0, 0.0}, {0.0, 2.0}});
  const double expected = -std::log(std::exp(2.0) / (std::exp(2.0) + 1.0));
  EXPECT_NEAR(InfoNceLoss(l).item<double>(), expected, 1e-6);
}

TEST(FullSoftmaxLoss, IsCrossEntropyOverEveryItemAtTemperature) {
  // Two users, three items; row r's positive is item pos[r] among all three.
  torch::Tensor user = torch::tensor({{1.0, 0.0}, {0.0, 1.0}});
  torch::Tensor items = torch::tensor({{0.5, 0.1}, {0.2, 0.9}, {-0.3, 0.4}});
  torch::Tensor pos = torch::tensor({0, 2}, torch::kInt64);
  const double tau = 0.5;
  double expected = 0;
  for (int r = 0; r < 2; ++r) {
    double denom = 0, target = 0;
    for (int j = 0; j < 3; ++j) {
      const double s = (user[r] * items[j]).sum().item<double>() / tau;
      denom += std::exp(s);
      if (j == pos[r].item<int64_t>()) target = s;
    }
    expected += -(target - std::log(denom)) / 2;
  }
  EXPECT_NEAR(FullSoftmaxLoss(user, items, pos, tau).item<double>(), expected, 1e-6);
}

TEST(CosineContrastiveLoss, HingeOverUniformNegativesWithoutTheRowsOwnPositive) {
  // Unit vectors in 2-D: user = (1, 0); cosines are the x coordinates.
  auto unit = [](double x) { return std::vector<float>{float(x), float(std::sqrt(1 - x * x))}; };
  auto rows = [](std::vector<std::vector<float>> v) {
    torch::Tensor t = torch::empty({static_cast<int64_t>(v.size()), 2});
    for (size_t i = 0; i < v.size(); ++i) {
      t[i][0] = v[i][0];
      t[i][1] = v[i][1];
    }
    return t;
  };
  torch::Tensor user = rows({{1, 0}});
  torch::Tensor pos = rows({unit(0.8)});
  torch::Tensor pos_ids = torch::tensor({5}, torch::kInt64);
  NegativeSet global;
  // cos 0.95 (above the margin 0.9 by 0.05), 0.5 (below), and 0.99 holding the positive's id 5:
  // an accidental hit, left out of the mean.
  global.embeddings = rows({unit(0.95), unit(0.5), unit(0.99)});
  global.ids = torch::tensor({1, 2, 5}, torch::kInt64);
  const double got =
      CosineContrastiveLoss(user, pos, pos_ids, NegativeSet{}, global, 0.9, 10).item<double>();
  EXPECT_NEAR(got, (1 - 0.8) + 10 * (0.05 + 0) / 2, 1e-5);
  // No negatives at all: only the positive term.
  EXPECT_NEAR(CosineContrastiveLoss(user, pos, pos_ids, {}, {}, 0.9, 10).item<double>(), 0.2, 1e-6);
}

}  // namespace
}  // namespace recall::trainer::negatives_tests
