// The towers' TorchScript forward: what the pooling divides by.
#include "trainer/towers.h"

#include <gtest/gtest.h>

#include "model/encoder.h"

// Built as one unit with the other trainer suites (CMakeLists.txt), so its helpers live in a
// namespace of its own.
namespace recall::trainer::towers_tests {
namespace {

std::shared_ptr<const FeatureEncoder> Encoder(int audience_length, int neighbor_length = 0) {
  recall::v1::FeatureSpec spec;
  spec.mutable_user_id()->set_name("user_id");
  spec.mutable_user_id()->set_num_buckets(50);
  spec.mutable_item_id()->set_name("item_id");
  spec.mutable_item_id()->set_num_buckets(50);
  spec.set_history_length(4);
  spec.set_item_audience_length(audience_length);
  spec.set_item_neighbor_length(neighbor_length);
  auto e = FeatureEncoder::Create(spec, {}, {});
  EXPECT_TRUE(e.ok()) << e.status();
  return *e;
}

// Runs `tower` on one example whose pooled input (history or audience: `ids`, `mask`) holds
// `rows`; the other inputs are as given.
torch::Tensor ForwardPooling(torch::jit::Module& tower, const std::vector<torch::jit::IValue>& in,
                             torch::Tensor ids, torch::Tensor mask,
                             const std::vector<int64_t>& rows) {
  for (size_t i = 0; i < rows.size(); ++i) {
    ids[0][i] = rows[i];
    mask[0][i] = 1.0f;
  }
  torch::NoGradGuard no_grad;
  return tower.forward(in).toTensor();
}

// User 3 with history rows `rows` (padded to the spec's 4).
torch::Tensor EmbedUser(torch::jit::Module& user, const std::vector<int64_t>& rows) {
  UserBatch b = UserBatch::Allocate(1, 4, 0, 0);
  b.user_id[0] = 3;
  return ForwardPooling(user, b.Inputs(), b.history, b.history_mask, rows);
}

// Item 5 with audience rows `rows`.
torch::Tensor EmbedItem(torch::jit::Module& item, const std::vector<int64_t>& rows) {
  ItemBatch b = ItemBatch::Allocate(1, 0, 0, 4);
  b.item_id[0] = 5;
  return ForwardPooling(item, b.Inputs(), b.audience, b.audience_mask, rows);
}

// Item 5 with audience rows {2, 3} and neighbour rows `rows` (a spec with both inputs).
torch::Tensor EmbedItemWithNeighbors(torch::jit::Module& item, const std::vector<int64_t>& rows) {
  ItemBatch b = ItemBatch::Allocate(1, 0, 0, 4, 4);
  b.item_id[0] = 5;
  b.audience[0][0] = 2;
  b.audience[0][1] = 3;
  b.audience_mask[0][0] = 1.0f;
  b.audience_mask[0][1] = 1.0f;
  return ForwardPooling(item, b.Inputs(), b.neighbors, b.neighbors_mask, rows);
}

TEST(Towers, MeanPoolingIgnoresRepetitionSqrtPoolingScalesWithTheDegree) {
  auto enc = Encoder(4);
  for (bool sqrt_pooling : {false, true}) {
    SCOPED_TRACE(sqrt_pooling ? "sqrt" : "mean");
    torch::manual_seed(1);
    TowerConfig c;
    c.set_dim(8);
    c.set_id_dim(8);
    c.set_l2_normalize(false);  // compare the raw projections
    c.set_pooling(sqrt_pooling ? TowerConfig::SQRT : TowerConfig::MEAN);
    Towers t = BuildTowers(*enc, c, 0.1f);
    // The projection is linear: f(u, pooled) = W_u u + W_p pooled + b. A history of one row
    // repeated 4 times pools to that row's vector (mean) or twice it (sqrt(4) = 2).
    const torch::Tensor one = EmbedUser(t.user, {7});
    const torch::Tensor four = EmbedUser(t.user, {7, 7, 7, 7});
    const torch::Tensor none = EmbedUser(t.user, {});  // W_u u + b
    const double scale = sqrt_pooling ? 2.0 : 1.0;
    EXPECT_TRUE(torch::allclose(four - none, (one - none) * scale, 1e-5, 1e-6))
        << (four - none) << (one - none);
    // The item tower pools its audience the same way.
    const torch::Tensor aud1 = EmbedItem(t.item, {9});
    const torch::Tensor aud4 = EmbedItem(t.item, {9, 9, 9, 9});
    const torch::Tensor aud0 = EmbedItem(t.item, {});
    EXPECT_TRUE(torch::allclose(aud4 - aud0, (aud1 - aud0) * scale, 1e-5, 1e-6));
    EXPECT_FALSE(torch::allclose(one, none));  // the history does reach the output
  }
}

TEST(Towers, NeighboursArePooledFromTheItemsOwnTableBesideTheAudience) {
  auto enc = Encoder(4, 4);
  torch::manual_seed(2);
  TowerConfig c;
  c.set_dim(8);
  c.set_id_dim(8);
  c.set_l2_normalize(false);
  Towers t = BuildTowers(*enc, c, 0.1f);
  // Arguments in the spec's order: item_id, audience, audience_mask, neighbors, neighbors_mask,
  // categorical, numeric; no new table (the neighbours are item rows).
  EXPECT_EQ(t.item.get_method("forward").function().getSchema().arguments().size(), 8u);
  EXPECT_FALSE(t.item.hasattr("nbr_emb"));
  const torch::Tensor one = EmbedItemWithNeighbors(t.item, {9});
  const torch::Tensor four = EmbedItemWithNeighbors(t.item, {9, 9, 9, 9});
  const torch::Tensor none = EmbedItemWithNeighbors(t.item, {});
  EXPECT_TRUE(torch::allclose(four, one, 1e-5, 1e-6)) << "mean pooling";
  EXPECT_FALSE(torch::allclose(one, none)) << "the neighbours reach the output";
  // Pooling neighbour row 9 moves the output along the projection of item row 9: with the
  // projection's neighbour block W_n, one - none = W_n item_emb[9].
  const torch::Tensor w = t.item.attr("w0").toTensor();  // [in, dim]: id | audience | neighbours
  const torch::Tensor row9 = t.item.attr("item_emb").toTensor()[9];
  torch::NoGradGuard no_grad;
  const torch::Tensor expected = torch::matmul(row9, w.slice(0, 16, 24));
  EXPECT_TRUE(torch::allclose((one - none).squeeze(0), expected, 1e-5, 1e-6))
      << (one - none) << expected;
  // The user tower is unchanged by the item side's inputs.
  EXPECT_EQ(t.user.get_method("forward").function().getSchema().arguments().size(), 6u);
}

TEST(Towers, ItemBiasIsOneMoreCoordinateBesideTheUnitVector) {
  auto enc = Encoder(4);
  torch::manual_seed(3);
  TowerConfig c;
  c.set_dim(8);
  c.set_id_dim(8);
  c.set_item_bias(true);
  Towers t = BuildTowers(*enc, c, 0.25f);
  {
    torch::NoGradGuard no_grad;
    t.item.attr("item_bias").toTensor()[5][0] = 2.0f;  // EmbedItem's item row
  }
  const torch::Tensor user = EmbedUser(t.user, {7, 8});
  const torch::Tensor item = EmbedItem(t.item, {9});
  ASSERT_EQ(user.size(1), 9);
  ASSERT_EQ(item.size(1), 9);
  EXPECT_NEAR(user.narrow(1, 0, 8).norm().item<float>(), 1.0f, 1e-5);
  EXPECT_NEAR(item.narrow(1, 0, 8).norm().item<float>(), 1.0f, 1e-5);
  EXPECT_EQ(user[0][8].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(item[0][8].item<float>(), 0.5f);  // scale * b[row 5]
  // <user, item> = cos + scale * b: the offset adds to the cosine exactly.
  const float cos = (user.narrow(1, 0, 8) * item.narrow(1, 0, 8)).sum().item<float>();
  EXPECT_NEAR((user * item).sum().item<float>(), cos + 0.5f, 1e-6);
  // Without the flag neither tower has the table or the coordinate.
  c.set_item_bias(false);
  Towers plain = BuildTowers(*enc, c, 0.1f);
  EXPECT_FALSE(plain.item.hasattr("item_bias"));
  EXPECT_EQ(EmbedItem(plain.item, {9}).size(1), 8);
}

}  // namespace
}  // namespace recall::trainer::towers_tests
