#include "trainer/ensemble.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "model/model_version.h"
#include "trainer/export.h"
#include "trainer/synthetic.h"

// Built as one unit with the other trainer suites (CMakeLists.txt), so its helpers live in a
// namespace of its own.
namespace recall::trainer::ensemble_tests {
namespace {

Dataset SmallSynthetic() {
  SyntheticConfig sc;
  sc.num_users = 400;
  sc.num_items = 250;
  sc.num_categories = 5;
  sc.seed = 3;
  return GenerateSynthetic(sc);
}

// With validation and an item audience, so both the held-out split and the audiences are
// shared state the members must agree on.
TrainConfig SmallConfig(int members = 1) {
  TrainConfig c = *LoadPreset("smoke");
  c.set_ensemble(members);
  c.set_epochs(3);
  c.set_batch_size(128);
  c.set_history_length(20);
  c.set_temperature(0.3);
  c.set_logq_correction(true);
  c.set_item_audience_length(10);
  c.set_validation_users(60);
  c.set_seed(9);
  c.mutable_tower()->set_dim(16);
  c.mutable_tower()->set_id_dim(16);
  return c;
}

std::vector<Trainer*> Pointers(const std::vector<std::unique_ptr<Trainer>>& v) {
  std::vector<Trainer*> out;
  for (const auto& t : v) out.push_back(t.get());
  return out;
}

bool SameParameters(Trainer& a, Trainer& b) {
  const auto pa = a.towers().parameters(), pb = b.towers().parameters();
  if (pa.size() != pb.size()) return false;
  for (size_t i = 0; i < pa.size(); ++i) {
    if (!torch::equal(pa[i], pb[i])) return false;
  }
  return true;
}

TEST(Ensemble, MemberZeroIsTheSingleModelAndTheOthersDrawDifferentlyOnTheSameSplit) {
  const Dataset d = SmallSynthetic();
  auto single = Trainer::Create(d, SmallConfig());
  ASSERT_TRUE(single.ok()) << single.status();
  auto members = CreateEnsemble(d, SmallConfig(3));
  ASSERT_TRUE(members.ok()) << members.status();
  ASSERT_EQ(members->size(), 3u);
  EXPECT_TRUE(SameParameters(**single, *(*members)[0]));
  EXPECT_FALSE(SameParameters(*(*members)[0], *(*members)[1]));
  EXPECT_FALSE(SameParameters(*(*members)[1], *(*members)[2]));
  std::vector<int64_t> all_items(d.num_items);
  std::iota(all_items.begin(), all_items.end(), 0);
  const ItemBatch a0 = (*members)[0]->batches().ItemBatchFor(all_items);
  for (int k = 1; k < 3; ++k) {
    const Trainer& m = *(*members)[k];
        // One validation split and one evaluation audience per item for all members.
    EXPECT_EQ(m.fit_split().train, (*members)[0]->fit_split().train) << "member " << k;
    EXPECT_NE(m.fit_split().train, d.train);
    EXPECT_TRUE(torch::equal(m.batches().ItemBatchFor(all_items).audience, a0.audience)) << "member " << k;
  }
  EXPECT_FALSE(CreateEnsemble(d, SmallConfig(0)).ok());
}

// Concurrent members are repeatable bit for bit; against a member trained alone on the calling
// thread they agree to float rounding (kernels round differently on another thread), not
// more: nothing is shared between members.
TEST(Ensemble, ConcurrentTrainingIsRepeatableAndMatchesEachMemberTrainedAlone) {
  const Dataset d = SmallSynthetic();
  auto together = CreateEnsemble(d, SmallConfig(2));
  auto again = CreateEnsemble(d, SmallConfig(2));
  auto alone = CreateEnsemble(d, SmallConfig(2));
  ASSERT_TRUE(together.ok() && again.ok() && alone.ok());
  std::vector<std::vector<int>> events(2);
  const int saved = torch::get_num_threads();
  ASSERT_TRUE(TrainConcurrently(Pointers(*together), 2, [&](int k, const TrainingEvent& e) {
                if (e.event() == TrainingEvent::EPOCH) events[k].push_back(e.epoch());
              }).ok());
  EXPECT_EQ(torch::get_num_threads(), saved);  // the caller's thread count is untouched
  EXPECT_EQ(events[0], (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(events[1], (std::vector<int>{1, 2, 3}));
  ASSERT_TRUE(TrainConcurrently(Pointers(*again), 2).ok());
  torch::set_num_threads(1);  // each member's share of 2 threads
  for (auto& m : *alone) ASSERT_TRUE(m->Train().ok());
  torch::set_num_threads(saved);
  for (int k = 0; k < 2; ++k) {
    EXPECT_TRUE(SameParameters(*(*together)[k], *(*again)[k])) << "member " << k;
    const auto a = (*together)[k]->towers().parameters(), b = (*alone)[k]->towers().parameters();
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_TRUE(torch::allclose(a[i], b[i], 1e-3, 1e-5)) << "member " << k << " parameter " << i;
    }
    EXPECT_EQ((*together)[k]->best_epoch(), (*alone)[k]->best_epoch());
  }
  EXPECT_FALSE(SameParameters(*(*together)[0], *(*together)[1]));
}

TEST(Ensemble, CombinedTowersScoreTheMembersMeanAndPublishAsOneServableModel) {
  const Dataset d = SmallSynthetic();
  auto members = CreateEnsemble(d, SmallConfig(2));
  ASSERT_TRUE(members.ok());
  std::vector<Trainer*> m = Pointers(*members);
  ASSERT_TRUE(TrainConcurrently(m, 2).ok());
  const torch::Tensor u0 = m[0]->EmbedAllUsers(), u1 = m[1]->EmbedAllUsers();
  const torch::Tensor v0 = m[0]->EmbedAllItems(), v1 = m[1]->EmbedAllItems();
  const double r0 = m[0]->Evaluate().values.at("recall@20");
  const double r1 = m[1]->Evaluate().values.at("recall@20");

  CombineInto(m);
  const torch::Tensor u = m[0]->EmbedAllUsers(), v = m[0]->EmbedAllItems();
  ASSERT_EQ(u.size(1), 32);
  EXPECT_TRUE(torch::allclose(u, torch::cat({u0, u1}, 1) / std::sqrt(2.0), 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(v, torch::cat({v0, v1}, 1) / std::sqrt(2.0), 1e-5, 1e-6));
  EXPECT_LT((u.norm(2, 1) - 1).abs().max().item<float>(), 1e-4);
  // Scores are the mean of the members' scores.
  EXPECT_TRUE(torch::allclose(u.mm(v.t()), (u0.mm(v0.t()) + u1.mm(v1.t())) / 2, 1e-4, 1e-5));
  const double ensemble = m[0]->Evaluate().values.at("recall@20");
  EXPECT_GT(ensemble, 0.9 * std::min(r0, r1)) << r0 << " " << r1 << " -> " << ensemble;

  // Published and loaded as the server does: the saved modules give the same embeddings,
  // including the item tower an online upsert runs.
  const std::string base = (std::filesystem::temp_directory_path() /
                            ("recall_ensemble_" + std::to_string(::getpid()))).string();
  std::filesystem::remove_all(base);
  auto dir = ExportVersion(*m[0], base, "Flat", m[0]->Evaluate(), {});
  ASSERT_TRUE(dir.ok()) << dir.status();
  auto model = ModelVersion::Load(*dir);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->dim(), 32);
  std::vector<int64_t> some = {0, 7, 99};
  auto served_users = (*model)->EmbedUsers(m[0]->batches().EvalUserBatch(some));
  ASSERT_TRUE(served_users.ok()) << served_users.status();
  EXPECT_TRUE(torch::allclose(*served_users, m[0]->EmbedUsers(some), 1e-5, 1e-6));
  auto served_items = (*model)->EmbedItems(m[0]->batches().ItemBatchFor(some));
  ASSERT_TRUE(served_items.ok()) << served_items.status();
  EXPECT_TRUE(torch::allclose(*served_items, m[0]->EmbedItems(some), 1e-5, 1e-6));
  std::filesystem::remove_all(base);
}

}  // namespace
}  // namespace recall::trainer::ensemble_tests
