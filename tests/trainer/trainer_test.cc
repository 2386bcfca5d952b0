#include "trainer/trainer.h"

#include <gtest/gtest.h>

#include "trainer/synthetic.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <string>

namespace recall::trainer {
namespace {

Dataset SmallSynthetic() {
  SyntheticConfig sc;
  sc.num_users = 500;
  sc.num_items = 300;
  sc.num_categories = 6;
  sc.seed = 11;
  return GenerateSynthetic(sc);
}

TrainConfig SmallConfig() {
  TrainConfig tc;
  tc.epochs = 4;
  tc.batch_size = 128;
  tc.history_length = 20;
  tc.temperature = 0.3;
  tc.seed = 5;
  return tc;
}

TEST(Trainer, EmbeddingsAreUnitNormAndLearnedModelBeatsPopularity) {
  Dataset d = SmallSynthetic();
  auto t = Trainer::Create(d, SmallConfig());
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE((*t)->Train().ok());
  torch::Tensor u = (*t)->EmbedAllUsers();
  torch::Tensor v = (*t)->EmbedAllItems();
  EXPECT_LT((u.norm(2, 1) - 1).abs().max().item<float>(), 1e-4);
  EXPECT_LT((v.norm(2, 1) - 1).abs().max().item<float>(), 1e-4);
  const double learned = (*t)->Evaluate().values.at("recall@20");
  const double pop = EvaluatePopularity(d).values.at("recall@20");
  EXPECT_GT(learned, 1.3 * pop) << "learned " << learned << " vs popularity " << pop;
}

TrainConfig FullMethodConfig() {
  TrainConfig tc = SmallConfig();
  tc.logq_correction = true;
  tc.queue_size = 300;
  tc.momentum = 0.9;
  tc.global_negatives = 32;
  return tc;
}

TEST(Trainer, SameSeedGivesIdenticalLossesAndQueue) {
  Dataset d = SmallSynthetic();
  for (const TrainConfig& c : {SmallConfig(), FullMethodConfig()}) {
    std::vector<double> losses[2];
    torch::Tensor queue_ids[2];
    for (int run = 0; run < 2; ++run) {
      auto t = Trainer::Create(d, c);
      ASSERT_TRUE(t.ok()) << t.status();
      for (int e = 1; e <= 2; ++e) losses[run].push_back((*t)->TrainEpoch(e));
      EXPECT_EQ((*t)->queue().size(), c.queue_size);
      queue_ids[run] = (*t)->queue().IdsOldestFirst();
    }
    EXPECT_EQ(losses[0], losses[1]) << "queue_size " << c.queue_size;
    EXPECT_TRUE(torch::equal(queue_ids[0], queue_ids[1]));
  }
}

TEST(Trainer, EveryNegativeSourceLearnsTheSyntheticStructure) {
  // MoCo keys, re-encoded queue ids, global negatives, SSL views, a shared item table, user id
  // dropout: each
  // trains to well above popularity on the synthetic data.
  Dataset d = SmallSynthetic();
  const double pop = EvaluatePopularity(d).values.at("recall@20");
  for (int variant = 0; variant < 5; ++variant) {
    TrainConfig c = FullMethodConfig();
    if (variant == 1) c.queue_reencode = true;
    if (variant == 2) {
      c.item_ssl_weight = 0.1;
      c.user_ssl_weight = 0.1;
    }
    if (variant == 3) c.tower.share_item_embeddings = true;
    if (variant == 4) c.user_id_dropout = 0.5;
    auto t = Trainer::Create(d, c);
    ASSERT_TRUE(t.ok());
    ASSERT_TRUE((*t)->Train().ok());
    const double learned = (*t)->Evaluate().values.at("recall@20");
    EXPECT_GT(learned, 1.3 * pop) << "variant " << variant << ": " << learned << " vs " << pop;
  }
}

TEST(Trainer, MomentumEncoderLagsTheOnlineTower) {
  Dataset d = SmallSynthetic();
  TrainConfig c = FullMethodConfig();
  c.momentum = 1.0;  // frozen key encoder: stays at its initial copy
  auto t = Trainer::Create(d, c);
  ASSERT_TRUE(t.ok());
  const torch::Tensor before = (*t)->key_encoder().attr("item_emb").toTensor().clone();
  (*t)->TrainEpoch(1);
  EXPECT_TRUE(torch::equal((*t)->key_encoder().attr("item_emb").toTensor(), before));
  EXPECT_FALSE(torch::equal((*t)->towers().item.attr("item_emb").toTensor(), before));
}

TEST(Trainer, ResumedRunContinuesWithTheSameQueueAndOptimizerState) {
  Dataset d = SmallSynthetic();
  const std::string ckpt =
      (std::filesystem::temp_directory_path() / ("trainer_test_ckpt_" + std::to_string(getpid())))
          .string();
  std::vector<double> straight, resumed;
  auto record = [](std::vector<double>* out) {
    return [out](const ProgressEvent& e) {
      if (e.kind == "epoch") out->push_back(e.loss);
    };
  };
  TrainConfig c = FullMethodConfig();
  c.epochs = 3;
  c.validation_users = 50;
  auto a = Trainer::Create(d, c);
  ASSERT_TRUE(a.ok());
  std::vector<torch::Tensor> a1;
  Trainer* ap = a->get();
  ASSERT_TRUE((*a)->Train([&](const ProgressEvent& e) {
    if (e.kind == "epoch") straight.push_back(e.loss);
    if (e.kind == "epoch" && e.epoch == 1) for (auto& p : ap->towers().parameters()) a1.push_back(p.clone());
  }).ok());

  TrainConfig first = c;
  first.epochs = 1;  // "interrupted" after epoch 1
  auto b = Trainer::Create(d, first);
  ASSERT_TRUE(b.ok());
  (*b)->set_checkpoint(ckpt, 0);
  ASSERT_TRUE((*b)->Train().ok());
  auto r = Trainer::Create(d, c);
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE((*r)->LoadCheckpoint(ckpt).ok());
  {  // The loaded state is exactly the state the interrupted run reached after epoch 1.
    const auto pb = (*b)->towers().parameters(), pl = (*r)->towers().parameters();
    for (size_t i = 0; i < pb.size(); ++i) EXPECT_TRUE(torch::equal(pb[i], pl[i])) << i;
    for (size_t i = 0; i < pb.size(); ++i) EXPECT_TRUE(torch::equal(pb[i], a1[i])) << i;
    EXPECT_TRUE(torch::equal((*b)->queue().IdsOldestFirst(), (*r)->queue().IdsOldestFirst()));
  }
  ASSERT_TRUE((*r)->Train(record(&resumed)).ok());
  std::filesystem::remove(ckpt);

  ASSERT_EQ(straight.size(), 3u);
  ASSERT_EQ(resumed.size(), 2u);  // epochs 2 and 3
  EXPECT_EQ(resumed[0], straight[1]);
  EXPECT_EQ(resumed[1], straight[2]);
  EXPECT_TRUE(torch::equal((*r)->queue().IdsOldestFirst(), (*a)->queue().IdsOldestFirst()));
  EXPECT_TRUE(torch::equal((*r)->queue().keys(), (*a)->queue().keys()));
  EXPECT_EQ((*r)->best_epoch(), (*a)->best_epoch());
  const auto pa = (*a)->towers().parameters(), pr = (*r)->towers().parameters();
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(torch::equal(pa[i], pr[i])) << i;
}

TEST(Trainer, CheckpointOfAnotherDatasetIsRefused) {
  const std::string ckpt =
      (std::filesystem::temp_directory_path() / ("trainer_test_other_" + std::to_string(getpid())))
          .string();
  auto a = Trainer::Create(SmallSynthetic(), SmallConfig());
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE((*a)->SaveCheckpoint(ckpt).ok());
  SyntheticConfig sc;
  sc.num_users = 200;
  sc.num_items = 100;
  Dataset other = GenerateSynthetic(sc);
  auto b = Trainer::Create(other, SmallConfig());
  ASSERT_TRUE(b.ok());
  EXPECT_EQ((*b)->LoadCheckpoint(ckpt).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*b)->LoadCheckpoint(ckpt + ".missing").code(), absl::StatusCode::kDataLoss);
  std::filesystem::remove(ckpt);
}

TEST(HoldOutValidation, MovesOneTrainItemPerChosenUser) {
  Dataset d = SmallSynthetic();
  Dataset v = HoldOutValidation(d, 100, 3);
  int64_t chosen = 0;
  for (int64_t u = 0; u < d.num_users; ++u) {
    if (v.test[u].empty()) {
      EXPECT_EQ(v.train[u], d.train[u]);
      continue;
    }
    ++chosen;
    ASSERT_EQ(v.test[u].size(), 1u);
    EXPECT_EQ(v.train[u].size() + 1, d.train[u].size());
    EXPECT_TRUE(std::binary_search(d.train[u].begin(), d.train[u].end(), v.test[u][0]));
    EXPECT_FALSE(std::binary_search(v.train[u].begin(), v.train[u].end(), v.test[u][0]));
  }
  EXPECT_EQ(chosen, 100);
  EXPECT_TRUE(v.Validate().ok());
}

TEST(Trainer, RejectsBadConfig) {
  Dataset d = SmallSynthetic();
  TrainConfig c = SmallConfig();
  c.temperature = 0;
  EXPECT_EQ(Trainer::Create(d, c).status().code(), absl::StatusCode::kInvalidArgument);
  c = SmallConfig();
  c.batch_size = 1;
  EXPECT_EQ(Trainer::Create(d, c).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace recall::trainer
