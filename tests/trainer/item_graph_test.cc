#include "trainer/item_graph.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <numeric>

// Built as one unit with the other trainer suites (CMakeLists.txt), so its helpers live in a
// namespace of its own.
namespace recall::trainer::item_graph_tests {
namespace {

// u0 {0, 1, 2}, u1 {0, 1} (1 listed twice: counts once), u2 {1, 3}, u3 {4}.
// G_01 = 2, G_02 = 1, G_12 = 1, G_13 = 1; diagonal G_00 = 2, G_11 = 3, G_22 = G_33 = G_44 = 1.
// g = row sums = sum of the degrees of each item's users: g0 = 5, g1 = 7, g2 = 3, g3 = 2, g4 = 1.
std::vector<std::vector<int64_t>> Interactions() { return {{0, 1, 2}, {1, 0, 1}, {3, 1}, {4}}; }

TEST(ItemNeighbors, WeightsAreUltraGcnsAndStrongestFirst) {
  ItemNeighbors g = ItemNeighbors::Build(Interactions(), 5, 10);
  ASSERT_EQ(g.num_items(), 5);
  // w_ij = G_ij / (g_i - G_ii) * sqrt(g_i / g_j)
  const auto& n0 = g.of(0);
  ASSERT_EQ(n0.size(), 2u);
  EXPECT_EQ(n0[0].item, 1);
  EXPECT_NEAR(n0[0].weight, 2.0 / 3.0 * std::sqrt(5.0 / 7.0), 1e-12);
  EXPECT_EQ(n0[1].item, 2);
  EXPECT_NEAR(n0[1].weight, 1.0 / 3.0 * std::sqrt(5.0 / 3.0), 1e-12);
  const auto& n1 = g.of(1);  // g1 - G11 = 4; neighbours 0 (2), 2 (1), 3 (1)
  ASSERT_EQ(n1.size(), 3u);
  EXPECT_EQ(n1[0].item, 0);
  EXPECT_NEAR(n1[0].weight, 2.0 / 4.0 * std::sqrt(7.0 / 5.0), 1e-12);
  EXPECT_EQ(n1[1].item, 3);  // sqrt(7/2) > sqrt(7/3): the less connected item weighs more
  EXPECT_EQ(n1[2].item, 2);
  for (int64_t i = 0; i < 5; ++i) {
    for (const auto& n : g.of(i)) EXPECT_NE(n.item, i) << "an item is never its own neighbour";
  }
  EXPECT_TRUE(g.of(4).empty());  // its only user had nothing else
}

TEST(ItemNeighbors, KeepsOnlyTheKStrongest) {
  ItemNeighbors g = ItemNeighbors::Build(Interactions(), 5, 1);
  ASSERT_EQ(g.of(1).size(), 1u);
  EXPECT_EQ(g.of(1)[0].item, 0);
  ASSERT_EQ(g.of(0).size(), 1u);
  EXPECT_EQ(g.of(0)[0].item, 1);
}

TEST(ItemNeighbors, SamplesInProportionToTheWeights) {
  ItemNeighbors g = ItemNeighbors::Build(Interactions(), 5, 10);
  std::mt19937_64 rng(7);
  std::map<int64_t, int> hits;
  const int n = 40000;
  for (int s = 0; s < n; ++s) ++hits[g.Sample(1, rng())];
  double total = 0;
  for (const auto& nb : g.of(1)) total += nb.weight;
  ASSERT_EQ(hits.size(), 3u);
  for (const auto& nb : g.of(1)) {
    EXPECT_NEAR(hits[nb.item] / static_cast<double>(n), nb.weight / total, 0.01) << nb.item;
  }
  EXPECT_EQ(g.Sample(4, rng()), 4);  // no neighbour: the item itself
}

TEST(ItemNeighbors, DrawShareIsTheMixtureOfTheRowsNeighbourDistributions) {
  ItemNeighbors g = ItemNeighbors::Build(Interactions(), 5, 10);
  std::vector<double> share = {0.2, 0.3, 0.1, 0.1, 0.3};
  std::vector<double> drawn = g.DrawShare(share);
  EXPECT_NEAR(std::accumulate(drawn.begin(), drawn.end(), 0.0), 1.0, 1e-12);
  // Item 4 has no neighbours: its rows draw itself; nothing links to it.
  EXPECT_NEAR(drawn[4], 0.3, 1e-12);
  // Item 3 is a neighbour of item 1 only.
  double w1 = 0;
  for (const auto& nb : g.of(1)) w1 += nb.weight;
  EXPECT_NEAR(drawn[3], 0.3 * g.of(1)[1].weight / w1, 1e-12);
}

}  // namespace
}  // namespace recall::trainer::item_graph_tests
