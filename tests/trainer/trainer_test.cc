#include "trainer/export.h"
#include "trainer/trainer.h"
#include "tests/trainer/trainer_test_access.h"

#include <gtest/gtest.h>

#include "index/embedding_index.h"
#include "model/model_version.h"
#include "trainer/synthetic.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <string>

// Built as one unit with the other trainer suites (CMakeLists.txt), so its helpers live in a
// namespace of its own.
namespace recall::trainer::trainer_tests {
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
  TrainConfig tc = *LoadPreset("smoke");
  tc.set_epochs(4);
  tc.set_batch_size(128);
  tc.set_history_length(20);
  tc.set_temperature(0.3);
  tc.set_seed(5);
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
  tc.set_logq_correction(true);
  tc.set_queue_size(300);
  tc.set_momentum(0.9);
  tc.set_global_negatives(32);
  return tc;
}

// The root cause of the key queue's collapse (TRAINING.md "Why the key queue collapsed"):
// momentum keys carry no gradient, so when the item tower took its gradient from the softmax
// over [in-batch | queue], the queue's share of the softmax mass vanished from the item side:
// positives kept their full pull, in-batch repulsion shrank by that share (~Q / (B + Q) with
// fresh keys, i.e. at momentum 0), and item embeddings contracted. The fix gives each tower its
// own softmax. So: with a full queue of fresh keys, the item tower's gradient is exactly the
// gradient without a queue, while the user tower's is not (the queue is there to teach it).
TEST(Trainer, KeyQueueLeavesTheItemTowerGradientToTheInBatchSoftmax) {
  Dataset d = SmallSynthetic();
  TrainConfig with_queue = SmallConfig();
  with_queue.set_logq_correction(true);
  with_queue.set_queue_size(512);
  with_queue.set_momentum(0);
  TrainConfig without = with_queue;
  without.set_queue_size(0);
  auto q = Trainer::Create(d, with_queue);
  auto n = Trainer::Create(d, without);
  ASSERT_TRUE(q.ok() && n.ok());
  const auto examples = (*q)->batches().TrainExamples();
  auto batch = [&](int64_t first, int64_t size, std::vector<int64_t>* users, std::vector<int64_t>* items) {
    users->clear();
    items->clear();
    for (int64_t j = 0; j < size; ++j) {
      const auto& [u, i] = examples[(first + j * 37) % examples.size()];
      users->push_back(u);
      items->push_back(i);
    }
  };
  std::vector<int64_t> users, items;
  // Fill the queue with the (unchanged) tower's keys of other examples: no optimizer step, so
  // both trainers still hold the same weights.
  for (int k = 0; k < 4; ++k) {
    batch(1000 + 128 * k, 128, &users, &items);
    TrainerTestAccess::BatchLoss(**q, users, items, 100 + k);
  }
  ASSERT_EQ(TrainerTestAccess::objective(**q).queue().size(), 512);
  auto grads = [&](Trainer& t, const torch::jit::Module& tower) {
    for (auto& p : t.towers().parameters()) {
      if (p.grad().defined()) p.mutable_grad().zero_();
    }
    TrainerTestAccess::BatchLoss(t, users, items, 7).backward();
    std::vector<torch::Tensor> out;
    for (const auto& p : tower.parameters()) out.push_back(p.grad().clone());
    return out;
  };
  batch(5, 128, &users, &items);
  const auto item_q = grads(**q, (*q)->towers().item), item_n = grads(**n, (*n)->towers().item);
  ASSERT_EQ(item_q.size(), item_n.size());
  for (size_t i = 0; i < item_q.size(); ++i) {
    EXPECT_TRUE(torch::allclose(item_q[i], item_n[i], 1e-5, 1e-7))
        << "item parameter " << i << ": max diff "
        << (item_q[i] - item_n[i]).abs().max().item<float>() << " of "
        << item_n[i].abs().max().item<float>();
  }
  const auto user_q = grads(**q, (*q)->towers().user), user_n = grads(**n, (*n)->towers().user);
  double differ = 0;
  for (size_t i = 0; i < user_q.size(); ++i) differ += (user_q[i] - user_n[i]).abs().sum().item<double>();
  EXPECT_GT(differ, 1e-3) << "the queue no longer reaches the user tower";
}

TEST(Trainer, SameSeedGivesIdenticalLossesAndQueue) {
  Dataset d = SmallSynthetic();
  for (const TrainConfig& c : {SmallConfig(), FullMethodConfig()}) {
    std::vector<double> losses[2];
    torch::Tensor queue_ids[2];
    for (int run = 0; run < 2; ++run) {
      auto t = Trainer::Create(d, c);
      ASSERT_TRUE(t.ok()) << t.status();
      for (int e = 1; e <= 2; ++e) losses[run].push_back(TrainerTestAccess::TrainEpoch(**t, e));
      EXPECT_EQ(TrainerTestAccess::objective(**t).queue().size(), c.queue_size());
      queue_ids[run] = TrainerTestAccess::objective(**t).queue().IdsOldestFirst();
    }
    EXPECT_EQ(losses[0], losses[1]) << "queue_size " << c.queue_size();
    EXPECT_TRUE(torch::equal(queue_ids[0], queue_ids[1]));
  }
}

// MoCo keys, re-encoded queue ids, global negatives, SSL views, a shared item table, user id
// dropout, history dropout, the exact full softmax, the symmetric item-to-user term, the
// item-item neighbour term, masked false negatives: each trains to well above popularity on the
// synthetic data. One test per variant, so ctest runs them side by side.
class EveryNegativeSource : public ::testing::TestWithParam<int> {};

TEST_P(EveryNegativeSource, LearnsTheSyntheticStructure) {
  const int variant = GetParam();
  Dataset d = SmallSynthetic();
  const double pop = EvaluatePopularity(d).values.at("recall@20");
  TrainConfig c = FullMethodConfig();
  if (variant == 1) c.set_queue_reencode(true);
  if (variant == 2) {
    c.set_item_ssl_weight(0.1);
    c.set_user_ssl_weight(0.1);
  }
  if (variant == 3) c.mutable_tower()->set_share_item_embeddings(true);
  if (variant == 4) c.set_user_id_dropout(0.5);
  if (variant == 5) c.set_history_dropout(0.5);
  if (variant == 6) {
    c.set_loss(TrainConfig::FULL_SOFTMAX);
    c.set_logq_correction(false);
    c.set_queue_size(0);
    c.set_global_negatives(0);
  }
  if (variant == 7) c.set_item_to_user_weight(1);
  if (variant == 8) c.set_item_neighbor_weight(1);
  if (variant == 9) c.set_mask_user_positives(true);
  auto t = Trainer::Create(d, c);
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE((*t)->Train().ok());
  const double learned = (*t)->Evaluate().values.at("recall@20");
  EXPECT_GT(learned, 1.3 * pop) << "variant " << variant << ": " << learned << " vs " << pop;
}

std::string NegativeSourceName(const ::testing::TestParamInfo<int>& info) {
  static const char* kNames[] = {"MocoKeysAndGlobalNegatives", "ReencodedQueue", "SslViews",
                                 "SharedItemTable", "UserIdDropout", "HistoryDropout",
                                 "FullSoftmax", "ItemToUser", "ItemNeighbourTerm",
                                 "MaskedFalseNegatives"};
  return kNames[info.param];
}

INSTANTIATE_TEST_SUITE_P(Trainer, EveryNegativeSource, ::testing::Range(0, 10),
                         NegativeSourceName);

TEST(Trainer, MaskUserPositivesChangesOnlyBatchesHoldingAnotherItemOfTheRowsUser) {
  Dataset d = SmallSynthetic();
  // User 0 twice with two of its train items, and another user (without a) with an item user 0
  // never had.
  const int64_t user = 0;
  ASSERT_GE(d.train[user].size(), 2u);
  const int64_t a = d.train[user][0], b = d.train[user][1];
  int64_t other_user = -1, c = -1;
  const auto has = [&](int64_t u, int64_t i) {
    return std::find(d.train[u].begin(), d.train[u].end(), i) != d.train[u].end();
  };
  for (int64_t u = 1; u < d.num_users && c < 0; ++u) {
    if (has(u, a)) continue;  // a must be a true negative for the other user's row
    for (int64_t i : d.train[u]) {
      if (!has(user, i)) {
        other_user = u;
        c = i;
        break;
      }
    }
  }
  ASSERT_GE(c, 0);
  auto loss = [&](bool mask, const std::vector<int64_t>& users, const std::vector<int64_t>& items) {
    TrainConfig tc = SmallConfig();
    tc.set_logq_correction(true);
    tc.set_mask_user_positives(mask);
    auto t = Trainer::Create(d, tc);
    EXPECT_TRUE(t.ok()) << t.status();
    return TrainerTestAccess::BatchLoss(**t, users, items, 3).item<double>();
  };
  // Row 0's negative b (and row 1's a) is user 0's own item: masked, so the loss changes.
  const std::vector<int64_t> with_users = {user, user, other_user}, with_items = {a, b, c};
  EXPECT_NE(loss(true, with_users, with_items), loss(false, with_users, with_items));
  // No row meets another item of its user: bit-identical.
  const std::vector<int64_t> without_users = {user, other_user}, without_items = {a, c};
  EXPECT_EQ(loss(true, without_users, without_items), loss(false, without_users, without_items));
}

// Share of each user's top-5 cold items (never seen in training) that are of the user's
// preferred category, trained with item content only as numeric one-hot columns (or none).
double ColdItemCategoryShare(bool numeric_features, recall::v1::FeatureSpec* spec_out) {
  SyntheticConfig sc;
  sc.num_users = 500;
  sc.num_items = 300;
  sc.num_categories = 6;
  sc.seed = 11;
  SyntheticData truth = GenerateSyntheticWithTruth(sc);
  Dataset d = truth.dataset;
  d.item_cat_names.clear();
  d.item_cat_values.clear();
  if (numeric_features) {
    for (int k = 0; k < sc.num_categories; ++k) {
      d.item_num_names.push_back("is_c" + std::to_string(k));
      std::vector<float> col(d.num_items);
      for (int64_t i = 0; i < d.num_items; ++i) col[i] = truth.item_category[i] == k ? 1.0f : 0.0f;
      d.item_num_values.push_back(std::move(col));
    }
  }
  std::vector<int64_t> cold;
  for (int64_t i = 0; i < d.num_items; i += 5) cold.push_back(i);
  auto is_cold = [](int64_t i) { return i % 5 == 0; };
  for (auto* lists : {&d.train, &d.test}) {
    for (auto& l : *lists) l.erase(std::remove_if(l.begin(), l.end(), is_cold), l.end());
  }
  EXPECT_TRUE(d.Validate().ok()) << d.Validate();
  auto t = Trainer::Create(d, SmallConfig());
  EXPECT_TRUE(t.ok());
  EXPECT_TRUE((*t)->Train().ok());
  if (spec_out != nullptr) *spec_out = (*t)->spec();
  torch::Tensor scores = torch::mm((*t)->EmbedAllUsers(), (*t)->EmbedItems(cold).t());
  torch::Tensor top = std::get<1>(scores.topk(5, 1));
  int64_t hits = 0;
  for (int64_t u = 0; u < d.num_users; ++u) {
    for (int64_t j = 0; j < 5; ++j) {
      hits += truth.item_category[cold[top[u][j].item<int64_t>()]] == truth.user_category[u];
    }
  }
  return static_cast<double>(hits) / (5.0 * d.num_users);
}

TEST(Trainer, NumericItemFeaturesEmbedColdItems) {
  recall::v1::FeatureSpec spec;
  const double with = ColdItemCategoryShare(true, &spec);
  const double without = ColdItemCategoryShare(false, nullptr);
  std::printf("cold items in the user's category (top 5): %.3f with numeric features, %.3f without\n",
              with, without);
  ASSERT_EQ(spec.item_numeric_size(), 6);
  EXPECT_EQ(spec.item_numeric(0).name(), "is_c0");
  EXPECT_GT(spec.item_numeric(0).mean(), 0.05);  // a one-hot column: mean = the category's share
  EXPECT_LT(spec.item_numeric(0).mean(), 0.5);
  EXPECT_GT(spec.item_numeric(0).std(), 0.1);
  // Chance is 1/6: cold items are placed by their features alone.
  EXPECT_GT(with, 0.6) << "with numeric features " << with << ", without " << without;
  EXPECT_LT(without, 0.35) << "without features " << without;
}

// Publishes a small model and loads it back as the server does.
std::unique_ptr<ModelVersion> PublishAndLoad(const Dataset& d, const TrainConfig& c,
                                             const std::string& name, std::vector<int64_t>* index_ids) {
  auto t = Trainer::Create(d, c);
  EXPECT_TRUE(t.ok()) << t.status();
  EXPECT_TRUE((*t)->Train().ok());
  const std::string base = (std::filesystem::temp_directory_path() /
                            (name + "_" + std::to_string(::getpid()))).string();
  std::filesystem::remove_all(base);
  auto dir = trainer::ExportVersion(**t, base, "Flat", (*t)->Evaluate(), {});
  EXPECT_TRUE(dir.ok()) << dir.status();
  auto index = EmbeddingIndex::Load(*dir + "/items.faiss", "Flat");
  EXPECT_TRUE(index.ok()) << index.status();
  *index_ids = (*index)->Ids();
  auto model = ModelVersion::Load(*dir);
  EXPECT_TRUE(model.ok()) << model.status();
  std::filesystem::remove_all(base);
  return model.ok() ? std::move(*model) : nullptr;
}

TEST(Trainer, PublishedVersionServesExternalIds) {
  Dataset d = SmallSynthetic();
  for (int64_t u = 0; u < d.num_users; ++u) d.user_ids.push_back(1000 + 3 * u);
  for (int64_t i = 0; i < d.num_items; ++i) d.item_ids.push_back(-500 + 7 * i);
  ASSERT_TRUE(d.Validate().ok());
  TrainConfig c = SmallConfig();
  c.set_epochs(1);
  std::vector<int64_t> ids;
  auto model = PublishAndLoad(d, c, "recall_external_ids", &ids);
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(ids, d.item_ids);  // the index answers with external ids
  const FeatureEncoder& e = model->encoder();
  EXPECT_EQ(e.ItemRow(d.item_ids[5]), 6);  // external id -> its row
  EXPECT_EQ(e.ItemRow(5), 0);              // a dense id is not an id of this catalog
  EXPECT_EQ(e.UserRow(d.user_ids[3]), 4);
}

TEST(Trainer, HashedIdsPublishNoVocabularyAndStillServe) {
  Dataset d = SmallSynthetic();
  TrainConfig c = SmallConfig();
  c.set_epochs(1);
  c.set_item_id_buckets(64);
  c.set_user_id_buckets(32);
  std::vector<int64_t> ids;
  auto model = PublishAndLoad(d, c, "recall_hashed_ids", &ids);
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(static_cast<int64_t>(ids.size()), d.num_items);
  const auto& spec = model->encoder().spec();
  EXPECT_EQ(spec.item_id().num_buckets(), 64);
  EXPECT_TRUE(spec.item_id().vocab_file().empty());
  EXPECT_TRUE(spec.user_id().vocab_file().empty());
  // Every id, even one never seen, hashes into a real row 1..64.
  for (int64_t id : {int64_t{0}, int64_t{299}, int64_t{123456789}}) {
    const int64_t row = model->encoder().ItemRow(id);
    EXPECT_GE(row, 1);
    EXPECT_LE(row, 64);
  }
  recall::v1::UserFeatures u;
  u.set_user_id(7);
  u.add_history_item_ids(3);
  const recall::v1::UserFeatures* up = &u;
  auto emb = model->EmbedUsers(model->encoder().EncodeUsers({&up, 1}));
  ASSERT_TRUE(emb.ok()) << emb.status();
  EXPECT_NEAR(emb->norm().item<float>(), 1.0f, 1e-4);
}

TEST(Trainer, ItemAudienceIsDrawnFromTrainUsersAndNeverHoldsTheExamplesOwnUser) {
  Dataset d = SmallSynthetic();
  TrainConfig c = SmallConfig();
  c.set_item_audience_length(6);
  auto t = Trainer::Create(d, c);
  ASSERT_TRUE(t.ok()) << t.status();
  std::vector<std::set<int64_t>> audience(d.num_items);  // user rows per item
  std::vector<int64_t> users, items;
  for (int64_t u = 0; u < d.num_users; ++u) {
    for (int64_t i : d.train[u]) {
      audience[i].insert((*t)->encoder().UserRow(u));
      if (users.size() < 400) {
        users.push_back(u);
        items.push_back(i);
      }
    }
  }
  items.push_back(items[0]);  // a row without an example: its audience may hold anyone
  std::set<int64_t> drawn_for_item0;
  for (int round = 0; round < 20; ++round) {
    ItemBatch b = (*t)->batches().TrainItemBatch(
        items, users, DrawKeys::ForRows(round, 0, 0, static_cast<int64_t>(items.size())).rows);
    ASSERT_EQ(b.audience.sizes(), (std::vector<int64_t>{static_cast<int64_t>(items.size()), 6}));
    auto aud = b.audience.accessor<int64_t, 2>();
    auto mask = b.audience_mask.accessor<float, 2>();
    for (size_t r = 0; r < items.size(); ++r) {
      const auto& pool = audience[items[r]];
      const int64_t own = r < users.size() ? (*t)->encoder().UserRow(users[r]) : -1;
      int64_t n = 0;
      std::set<int64_t> seen;
      for (int j = 0; j < 6; ++j) {
        if (mask[r][j] == 0) {
          EXPECT_EQ(aud[r][j], 0) << "masked slots hold the padding row";
          continue;
        }
        ++n;
        EXPECT_TRUE(pool.count(aud[r][j])) << "row " << r << ": not a train user of the item";
        EXPECT_NE(aud[r][j], own) << "row " << r << ": the example's own user";
        EXPECT_TRUE(seen.insert(aud[r][j]).second) << "row " << r << ": drawn twice";
      }
      const int64_t eligible = static_cast<int64_t>(pool.size()) - (own >= 0 ? 1 : 0);
      EXPECT_EQ(n, std::min<int64_t>(6, eligible)) << "row " << r;
      if (r == 0) {
        for (int j = 0; j < 6; ++j) {
          if (mask[r][j] > 0) drawn_for_item0.insert(aud[r][j]);
        }
      }
    }
  }
  // Fresh subsets each call: over 20 draws the first item's audience covers more than one
  // subset's worth of its users.
  if (audience[items[0]].size() > 8) {
    EXPECT_GT(drawn_for_item0.size(), 6u);
  }
}

// Trains `c` to the end (it must beat popularity by 30%), publishes one epoch of it under
// `name` and returns the loaded model's encoding of an item upserted online by id alone,
// after checking that the model embeds it to a unit vector; `spec` gets the published spec.
ItemBatch TrainPublishAndEncodeOnlineItem(const Dataset& d, TrainConfig c, const std::string& name,
                                          recall::v1::FeatureSpec* spec) {
  {
    auto t = Trainer::Create(d, c);
    EXPECT_TRUE(t.ok()) << t.status();
    if (!t.ok()) return {};
    EXPECT_TRUE((*t)->Train().ok());
    const double learned = (*t)->Evaluate().values.at("recall@20");
    const double pop = EvaluatePopularity(d).values.at("recall@20");
    EXPECT_GT(learned, 1.3 * pop) << "learned " << learned << " vs popularity " << pop;
  }
  c.set_epochs(1);
  std::vector<int64_t> ids;
  auto model = PublishAndLoad(d, c, name, &ids);
  EXPECT_NE(model, nullptr);
  if (model == nullptr) return {};
  *spec = model->encoder().spec();
  recall::v1::ItemFeatures item;
  item.set_item_id(ids[0]);
  const recall::v1::ItemFeatures* ip = &item;
  ItemBatch b = model->encoder().EncodeItems({&ip, 1});
  auto emb = model->EmbedItems(b);
  EXPECT_TRUE(emb.ok()) << emb.status();
  if (emb.ok()) {
    EXPECT_NEAR(emb->norm().item<float>(), 1.0f, 1e-4);
  }
  return b;
}

TEST(Trainer, AudienceModelPublishesServesOnlineItemsAndBeatsPopularity) {
  TrainConfig c = SmallConfig();
  c.set_item_audience_length(8);
  c.set_audience_dropout(0.2);
  recall::v1::FeatureSpec spec;
  const ItemBatch b = TrainPublishAndEncodeOnlineItem(SmallSynthetic(), c, "recall_audience", &spec);
  EXPECT_EQ(spec.item_audience_length(), 8);
  // An item upserted online has no audience: padding, and the tower still runs.
  ASSERT_TRUE(b.audience.defined());
  EXPECT_EQ(b.audience_mask.sum().item<float>(), 0.0f);
}

TEST(Trainer, EvaluationAudienceIsWiderThanTrainingsAndExtendsTheSameSeededSubset) {
  Dataset d = SmallSynthetic();
  TrainConfig c = SmallConfig();
  c.set_item_audience_length(4);
  auto narrow = Trainer::Create(d, c);
  c.set_eval_audience_length(30);
  auto wide = Trainer::Create(d, c);
  ASSERT_TRUE(narrow.ok() && wide.ok());
  EXPECT_EQ((*narrow)->spec().item_audience_length(), 4);
  EXPECT_EQ((*wide)->spec().item_audience_length(), 30);  // what the published vectors pooled
  std::vector<int64_t> items(d.num_items);
  std::iota(items.begin(), items.end(), 0);
  std::vector<int64_t> degree(d.num_items, 0);
  for (const auto& train : d.train) {
    for (int64_t i : train) ++degree[i];
  }
  const ItemBatch n = (*narrow)->batches().ItemBatchFor(items), w = (*wide)->batches().ItemBatchFor(items);
  ASSERT_EQ(w.audience.size(1), 30);
  int64_t wider = 0;
  for (int64_t i = 0; i < d.num_items; ++i) {
    EXPECT_EQ(w.audience_mask[i].sum().item<float>(), std::min<int64_t>(30, degree[i])) << i;
    wider += degree[i] > 4;
  }
  EXPECT_GT(wider, 0);
  // The first 4 of the wide audience are the narrow one: one seeded order, a longer prefix.
  EXPECT_TRUE(torch::equal(w.audience.slice(1, 0, 4), n.audience));
  // Training still samples item_audience_length users.
  EXPECT_EQ((*wide)->batches().TrainItemBatch({0, 1, 2}, {-1, -1, -1}, {1, 2, 3}).audience.size(1), 4);
  // The embeddings follow the wider input (and stay unit norm).
  const torch::Tensor v = (*wide)->EmbedAllItems();
  EXPECT_LT((v.norm(2, 1) - 1).abs().max().item<float>(), 1e-4);
  EXPECT_FALSE(torch::allclose(v, (*narrow)->EmbedAllItems()));
}

TEST(Trainer, ItemNeighborInputHoldsTheStrongestNeighboursOfTheRightSplit) {
  Dataset d = SmallSynthetic();
  TrainConfig c = SmallConfig();
  c.set_validation_users(100);
  c.set_item_audience_length(4);
  c.set_item_neighbor_length(3);
  auto t = Trainer::Create(d, c);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->spec().item_neighbor_length(), 3);
  // Training and validation see the fit split's graph (a held-out pair links nothing);
  // evaluation and export the full train split's.
  const ItemNeighbors fit = ItemNeighbors::Build(
      HoldOutValidation(d, c.validation_users(), c.seed()).train, d.num_items, 3);
  const ItemNeighbors full = ItemNeighbors::Build(d.train, d.num_items, 3);
  std::vector<int64_t> items(d.num_items);
  std::iota(items.begin(), items.end(), 0);
  const ItemBatch train = (*t)->batches().TrainItemBatch(
      items, std::vector<int64_t>(items.size(), -1), std::vector<uint64_t>(items.size(), 1));
  const ItemBatch eval = (*t)->batches().ItemBatchFor(items);
  auto holds = [&](const ItemBatch& b, const ItemNeighbors& g, int64_t i) {
    const auto& want = g.of(i);
    if (b.neighbors_mask[i].sum().item<float>() != static_cast<float>(want.size())) return false;
    for (int64_t j = 0; j < 3; ++j) {
      const int64_t row = j < static_cast<int64_t>(want.size())
                              ? (*t)->encoder().ItemRow(d.ExternalItemId(want[j].item))
                              : 0;
      if (b.neighbors[i][j].item<int64_t>() != row) return false;
    }
    return true;
  };
  ASSERT_EQ(train.neighbors.sizes(), (std::vector<int64_t>{d.num_items, 3}));
  int64_t differ = 0;
  for (int64_t i = 0; i < d.num_items; ++i) {
    EXPECT_TRUE(holds(train, fit, i)) << "item " << i << ": training pools the fit graph";
    EXPECT_TRUE(holds(eval, full, i)) << "item " << i << ": evaluation pools the full graph";
    differ += !holds(eval, fit, i);
  }
  EXPECT_GT(differ, 0) << "the validation pairs change some neighbour lists";
  // The audience is still drawn afresh beside the fixed neighbours.
  EXPECT_EQ(train.audience.size(1), 4);
  EXPECT_GT(train.audience_mask.sum().item<float>(), 0.0f);
}

TEST(Trainer, NeighborModelTrainsPublishesServesOnlineItemsAndBeatsPopularity) {
  TrainConfig c = SmallConfig();
  c.set_item_audience_length(8);
  c.set_item_neighbor_length(10);
  c.set_item_ssl_weight(0.3);  // masked views carry the neighbour input too
  recall::v1::FeatureSpec spec;
  const ItemBatch b =
      TrainPublishAndEncodeOnlineItem(SmallSynthetic(), c, "recall_neighbors", &spec);
  EXPECT_EQ(spec.item_neighbor_length(), 10);
  // An item upserted online has no neighbours: padding, and the tower still runs.
  ASSERT_TRUE(b.neighbors.defined());
  EXPECT_EQ(b.neighbors.sizes(), (std::vector<int64_t>{1, 10}));
  EXPECT_EQ(b.neighbors_mask.sum().item<float>(), 0.0f);
}

TEST(Trainer, ItemBiasLearnsPopularityAndIsServedAsOneMoreCoordinate) {
  Dataset d = SmallSynthetic();
  TrainConfig c = SmallConfig();
  c.mutable_tower()->set_item_bias(true);
  // In-batch columns are drawn in proportion to popularity: only with the logQ correction is
  // the sampled softmax's item marginal popularity (without it the offsets learn ~nothing).
  c.set_logq_correction(true);
  const int dim = c.tower().dim();
  auto t = Trainer::Create(d, c);
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_TRUE((*t)->Train().ok());
  torch::Tensor u = (*t)->EmbedAllUsers(), v = (*t)->EmbedAllItems();
  ASSERT_EQ(u.size(1), dim + 1);
  ASSERT_EQ(v.size(1), dim + 1);
  // The preference part stays unit-norm; the user's extra coordinate is 1 and the item's is
  // tau * b_i, so inner products are cos(u, i) + tau * b_i.
  EXPECT_LT((u.narrow(1, 0, dim).norm(2, 1) - 1).abs().max().item<float>(), 1e-4);
  EXPECT_LT((v.narrow(1, 0, dim).norm(2, 1) - 1).abs().max().item<float>(), 1e-4);
  EXPECT_TRUE(torch::equal(u.select(1, dim), torch::ones({d.num_users})));
  const torch::Tensor bias = v.select(1, dim) / static_cast<float>(c.temperature());
  torch::Tensor table = (*t)->towers().item.attr("item_bias").toTensor().detach().squeeze(1);
  EXPECT_EQ(table[0].item<float>(), 0.0f) << "the OOV row never trains";
  EXPECT_GT(bias.abs().max().item<float>(), 0.01f) << "the offsets moved from 0";
  // The offsets learn to follow popularity.
  std::vector<int64_t> pop = d.ItemPopularity();
  torch::Tensor log_pop = torch::log1p(torch::tensor(pop, torch::kFloat32));
  const float corr = torch::corrcoef(torch::stack({bias, log_pop})).index({0, 1}).item<float>();
  EXPECT_GT(corr, 0.3f) << "correlation of b with log(1 + popularity)";
  // ... and the most popular fifth of the items gets a larger mean offset than the least.
  const torch::Tensor order = log_pop.argsort();
  const int64_t fifth = d.num_items / 5;
  const float least = bias.index_select(0, order.narrow(0, 0, fifth)).mean().item<float>();
  const float most =
      bias.index_select(0, order.narrow(0, d.num_items - fifth, fifth)).mean().item<float>();
  EXPECT_GT(most, least + 0.1f) << "mean b of the least / most popular fifth";
  const double learned = (*t)->Evaluate().values.at("recall@20");
  const double popularity = EvaluatePopularity(d).values.at("recall@20");
  EXPECT_GT(learned, 1.3 * popularity) << "learned " << learned << " vs " << popularity;
  // The published version serves the same dim + 1 vectors: the index scores the offset too.
  const std::string base = (std::filesystem::temp_directory_path() /
                            ("recall_item_bias_" + std::to_string(::getpid()))).string();
  std::filesystem::remove_all(base);
  auto dir = trainer::ExportVersion(**t, base, "Flat", (*t)->Evaluate(), {});
  ASSERT_TRUE(dir.ok()) << dir.status();
  auto model = ModelVersion::Load(*dir);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->dim(), dim + 1);
  auto index = EmbeddingIndex::Load(*dir + "/items.faiss", "Flat");
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_EQ((*index)->dim(), dim + 1);
  std::filesystem::remove_all(base);
}

TEST(Trainer, RejectsBadAudienceConfig) {
  Dataset d = SmallSynthetic();
  TrainConfig c = SmallConfig();
  c.set_item_audience_length(-1);
  EXPECT_FALSE(Trainer::Create(d, c).ok());
  c.set_item_audience_length(4);
  c.set_audience_dropout(1.0);
  EXPECT_FALSE(Trainer::Create(d, c).ok());
  c.set_audience_dropout(0);
  c.set_eval_audience_length(-1);
  EXPECT_FALSE(Trainer::Create(d, c).ok());
  c.set_item_audience_length(0);
  c.set_eval_audience_length(10);  // a wider evaluation audience of no audience
  EXPECT_FALSE(Trainer::Create(d, c).ok());
  c.set_eval_audience_length(0);
  c.set_item_neighbor_length(-1);
  EXPECT_FALSE(Trainer::Create(d, c).ok());
}

TEST(Trainer, MomentumEncoderLagsTheOnlineTower) {
  Dataset d = SmallSynthetic();
  TrainConfig c = FullMethodConfig();
  c.set_momentum(1.0);  // frozen key encoder: stays at its initial copy
  auto t = Trainer::Create(d, c);
  ASSERT_TRUE(t.ok());
  const torch::Tensor before = TrainerTestAccess::objective(**t).key_encoder().attr("item_emb").toTensor().clone();
  TrainerTestAccess::TrainEpoch(**t, 1);
  EXPECT_TRUE(torch::equal(TrainerTestAccess::objective(**t).key_encoder().attr("item_emb").toTensor(), before));
  EXPECT_FALSE(torch::equal((*t)->towers().item.attr("item_emb").toTensor(), before));
}

// Trains c for 3 epochs straight, and for 1 epoch + checkpoint + 2 resumed epochs: the two
// must agree bit for bit (losses, queue, best epoch, weights, weight average).
void ExpectResumedRunMatchesStraightRun(TrainConfig c) {
  Dataset d = SmallSynthetic();
  const std::string ckpt =
      (std::filesystem::temp_directory_path() / ("trainer_test_ckpt_" + std::to_string(getpid())))
          .string();
  std::vector<double> straight, resumed;
  auto record = [](std::vector<double>* out) {
    return [out](const TrainingEvent& e) {
      if (e.event() == TrainingEvent::EPOCH) out->push_back(e.loss());
    };
  };
  c.set_epochs(3);
  c.set_validation_users(50);
  auto a = Trainer::Create(d, c);
  ASSERT_TRUE(a.ok());
  std::vector<torch::Tensor> a1;
  Trainer* ap = a->get();
  ASSERT_TRUE((*a)->Train([&](const TrainingEvent& e) {
    if (e.event() == TrainingEvent::EPOCH) straight.push_back(e.loss());
    if (e.event() == TrainingEvent::EPOCH && e.epoch() == 1) for (auto& p : ap->towers().parameters()) a1.push_back(p.clone());
  }).ok());

  TrainConfig first = c;
  first.set_epochs(1);  // "interrupted" after epoch 1
  auto b = Trainer::Create(d, first);
  ASSERT_TRUE(b.ok());
  (*b)->set_checkpoint(ckpt, 0);
  ASSERT_TRUE((*b)->Train().ok());
  auto r = Trainer::Create(d, c);
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE((*r)->LoadCheckpoint(ckpt).ok());
  {  // The loaded state is exactly the state the interrupted run reached after epoch 1.
    // (The checkpoint holds the live weights, which the progress callback saw in run a; with
    // averaging, Train() leaves b holding the averaged ones, compared below.)
    const auto pl = (*r)->towers().parameters();
    for (size_t i = 0; i < pl.size(); ++i) EXPECT_TRUE(torch::equal(pl[i], a1[i])) << i;
    if (c.weight_average_decay() == 0) {
      const auto pb = (*b)->towers().parameters();
      for (size_t i = 0; i < pb.size(); ++i) EXPECT_TRUE(torch::equal(pb[i], pl[i])) << i;
    }
    const auto& ab = TrainerTestAccess::schedule(**b).average_params;
    const auto& al = TrainerTestAccess::schedule(**r).average_params;
    ASSERT_EQ(ab.size(), al.size());
    for (size_t i = 0; i < ab.size(); ++i) EXPECT_TRUE(torch::equal(ab[i], al[i])) << i;
    EXPECT_TRUE(torch::equal(TrainerTestAccess::objective(**b).queue().IdsOldestFirst(), TrainerTestAccess::objective(**r).queue().IdsOldestFirst()));
  }
  ASSERT_TRUE((*r)->Train(record(&resumed)).ok());
  std::filesystem::remove(ckpt);

  ASSERT_EQ(straight.size(), 3u);
  ASSERT_EQ(resumed.size(), 2u);  // epochs 2 and 3
  EXPECT_EQ(resumed[0], straight[1]);
  EXPECT_EQ(resumed[1], straight[2]);
  EXPECT_TRUE(torch::equal(TrainerTestAccess::objective(**r).queue().IdsOldestFirst(), TrainerTestAccess::objective(**a).queue().IdsOldestFirst()));
  EXPECT_TRUE(torch::equal(TrainerTestAccess::objective(**r).queue().keys(), TrainerTestAccess::objective(**a).queue().keys()));
  EXPECT_EQ((*r)->best_epoch(), (*a)->best_epoch());
  const auto pa = (*a)->towers().parameters(), pr = (*r)->towers().parameters();
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(torch::equal(pa[i], pr[i])) << i;
  const auto& aa = TrainerTestAccess::schedule(**a).average_params;
  const auto& ar = TrainerTestAccess::schedule(**r).average_params;
  ASSERT_EQ(aa.size(), ar.size());
  for (size_t i = 0; i < aa.size(); ++i) EXPECT_TRUE(torch::equal(aa[i], ar[i])) << i;
  EXPECT_EQ(TrainerTestAccess::schedule(**a).average_updates, TrainerTestAccess::schedule(**r).average_updates);
}

TEST(Trainer, ResumedRunContinuesWithTheSameQueueAndOptimizerState) {
  ExpectResumedRunMatchesStraightRun(FullMethodConfig());
}

TEST(Trainer, ResumedRunContinuesWithTheSameWeightAverage) {
  TrainConfig c = FullMethodConfig();
  c.set_weight_average_decay(0.9);
  ExpectResumedRunMatchesStraightRun(c);
}

TEST(Trainer, WeightAverageFollowsTheWarmedUpMovingAverageOfEveryStep) {
  Dataset d = SmallSynthetic();
  TrainConfig c = SmallConfig();
  c.set_weight_average_decay(0.5);  // reached after 8 updates: (1 + 8) / (10 + 8)
  c.set_max_steps(12);
  auto t = Trainer::Create(d, c);
  ASSERT_TRUE(t.ok()) << t.status();
  Trainer& trainer = **t;
  trainer.set_run_options({.log_every_steps = 1});  // a step event after every optimizer step
  std::vector<torch::Tensor> expected;
  for (const auto& p : trainer.towers().parameters()) expected.push_back(p.detach().clone());
  int64_t updates = 0;
  TrainerTestAccess::TrainEpoch(trainer, 1, [&](const TrainingEvent& ev) {
    if (ev.event() != TrainingEvent::STEP) return;
    ++updates;
    const double u = static_cast<double>(updates);
    const double decay = std::min(0.5, (1 + u) / (10 + u));
    const auto live = trainer.towers().parameters();
    for (size_t i = 0; i < live.size(); ++i) {
      expected[i] = expected[i] * decay + live[i].detach() * (1 - decay);
    }
  });
  ASSERT_EQ(updates, 12);
  EXPECT_EQ(TrainerTestAccess::schedule(trainer).average_updates, 12);
  const auto& avg = TrainerTestAccess::schedule(trainer).average_params;
  const auto live = trainer.towers().parameters();
  ASSERT_EQ(avg.size(), expected.size());
  for (size_t i = 0; i < avg.size(); ++i) {
    EXPECT_TRUE(torch::allclose(avg[i], expected[i], 1e-5, 1e-6)) << i;
    EXPECT_FALSE(torch::equal(avg[i], live[i])) << i << ": the average is not the live weights";
  }
}

TEST(Trainer, ValidationPicksAmongAveragedWeightsAndTrainLeavesThem) {
  Dataset d = SmallSynthetic();
  TrainConfig c = SmallConfig();
  c.set_weight_average_decay(0.9);
  c.set_validation_users(100);
  c.set_epochs(4);
  auto t = Trainer::Create(d, c);
  ASSERT_TRUE(t.ok()) << t.status();
  Trainer& trainer = **t;
  std::map<int, std::vector<torch::Tensor>> average_at, live_at;
  std::map<int, double> val_recall_at;
  ASSERT_TRUE(trainer
                  .Train([&](const TrainingEvent& ev) {
                    if (ev.event() != TrainingEvent::EPOCH) return;
                    for (const auto& p : TrainerTestAccess::schedule(trainer).average_params) {
                      average_at[ev.epoch()].push_back(p.clone());
                    }
                    for (const auto& p : trainer.towers().parameters()) {
                      live_at[ev.epoch()].push_back(p.detach().clone());
                    }
                    val_recall_at[ev.epoch()] = ev.metrics().at("val_recall@20");
                  })
                  .ok());
  const int best = trainer.best_epoch();
  ASSERT_GT(best, 0);
  // Train() leaves the best epoch's averaged weights, not its live ones ...
  const auto final_params = trainer.towers().parameters();
  bool differs_from_live = false;
  for (size_t i = 0; i < final_params.size(); ++i) {
    EXPECT_TRUE(torch::equal(final_params[i], average_at.at(best)[i])) << i;
    differs_from_live |= !torch::equal(final_params[i], live_at.at(best)[i]);
  }
  EXPECT_TRUE(differs_from_live);
  // ... and the validation figure of that epoch is the one those weights give.
  EXPECT_DOUBLE_EQ(trainer.EvaluateValidation().Get("recall@20"), val_recall_at.at(best));

  // Without validation, the last average is what Train() leaves.
  c.set_validation_users(0);
  c.set_epochs(2);
  auto plain = Trainer::Create(d, c);
  ASSERT_TRUE(plain.ok());
  ASSERT_TRUE((*plain)->Train().ok());
  const auto p = (*plain)->towers().parameters();
  const auto& avg = TrainerTestAccess::schedule(**plain).average_params;
  for (size_t i = 0; i < p.size(); ++i) EXPECT_TRUE(torch::equal(p[i], avg[i])) << i;
}

TEST(Trainer, CheckpointWithoutWeightAverageIsRefusedByAnAveragingRun) {
  Dataset d = SmallSynthetic();
  const std::string ckpt = (std::filesystem::temp_directory_path() /
                            ("trainer_test_noavg_" + std::to_string(getpid())))
                               .string();
  TrainConfig c = SmallConfig();
  c.set_epochs(1);
  auto a = Trainer::Create(d, c);
  ASSERT_TRUE(a.ok());
  (*a)->set_checkpoint(ckpt, 0);
  ASSERT_TRUE((*a)->Train().ok());
  c.set_weight_average_decay(0.9);
  auto b = Trainer::Create(d, c);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ((*b)->LoadCheckpoint(ckpt).code(), absl::StatusCode::kFailedPrecondition);
  std::filesystem::remove(ckpt);
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

TEST(HoldOutValidation, ItemFractionHoldsOutThatShareOfTheSameUsersItems) {
  Dataset d = SmallSynthetic();
  const Dataset one = HoldOutValidation(d, 100, 3);
  const Dataset share = HoldOutValidation(d, 100, 3, 0.2);
  int64_t several = 0;
  for (int64_t u = 0; u < d.num_users; ++u) {
    // The same users are chosen, and their first held-out draw is the one-item split's.
    ASSERT_EQ(share.test[u].empty(), one.test[u].empty()) << "user " << u;
    if (share.test[u].empty()) {
      EXPECT_EQ(share.train[u], d.train[u]);
      continue;
    }
    const int64_t n = static_cast<int64_t>(d.train[u].size());
    const int64_t want = std::clamp<int64_t>(std::llround(0.2 * n), 1, n - 2);
    ASSERT_EQ(static_cast<int64_t>(share.test[u].size()), want) << "user " << u << " of " << n;
    several += want > 1;
    EXPECT_TRUE(std::binary_search(share.test[u].begin(), share.test[u].end(), one.test[u][0]));
    // Train and held-out items partition the user's original train items.
    std::vector<int64_t> rejoined = share.train[u];
    rejoined.insert(rejoined.end(), share.test[u].begin(), share.test[u].end());
    std::sort(rejoined.begin(), rejoined.end());
    EXPECT_EQ(rejoined, d.train[u]);
  }
  EXPECT_GT(several, 50);
  EXPECT_TRUE(share.Validate().ok());
}

TEST(Trainer, PlateauDecaysTheLearningRateFromTheBestWeightsThenStops) {
  Dataset d = SmallSynthetic();
  TrainConfig c = SmallConfig();
  c.set_epochs(40);
  c.set_learning_rate(0.05);  // large: validation plateaus within a few epochs
  c.set_validation_users(150);
  c.set_patience(1);
  c.set_lr_decay(0.5);
  c.set_max_lr_decays(2);
  auto t = Trainer::Create(d, c);
  ASSERT_TRUE(t.ok()) << t.status();
  Trainer& trainer = **t;
  std::map<int, torch::Tensor> items_at_epoch;
  std::vector<std::pair<int, double>> lr_after_epoch;  // (epoch, lr for the next one)
  std::vector<int> best_epoch_after;
  std::vector<int> restored_from;  // for each decay: did the weights equal the best epoch's?
  ASSERT_TRUE(trainer
                  .Train([&](const TrainingEvent& ev) {
                    if (ev.event() != TrainingEvent::EPOCH) return;
                    torch::Tensor items = trainer.EmbedAllItems().clone();
                    const double lr = ev.metrics().at("lr");
                    const int best = static_cast<int>(ev.metrics().at("best_epoch"));
                    if (!lr_after_epoch.empty() && lr < lr_after_epoch.back().second) {
                      restored_from.push_back(
                          torch::equal(items, items_at_epoch.at(best)) ? best : -1);
                    }
                    items_at_epoch[ev.epoch()] = items;
                    lr_after_epoch.push_back({ev.epoch(), lr});
                    best_epoch_after.push_back(best);
                  })
                  .ok());
  ASSERT_FALSE(lr_after_epoch.empty());
  std::vector<double> lrs;
  for (const auto& [epoch, lr] : lr_after_epoch) {
    if (lrs.empty() || lr != lrs.back()) lrs.push_back(lr);
  }
  // 0.05, then exactly two decays; the third plateau stopped the run before epoch 40.
  ASSERT_EQ(lrs.size(), 3u) << "lr never decayed twice in " << lr_after_epoch.size() << " epochs";
  EXPECT_DOUBLE_EQ(lrs[0], 0.05);
  EXPECT_DOUBLE_EQ(lrs[1], 0.025);
  EXPECT_DOUBLE_EQ(lrs[2], 0.0125);
  EXPECT_LT(lr_after_epoch.back().first, 40);
  EXPECT_EQ(best_epoch_after.back(), trainer.best_epoch());
  // Each decay continued from the best epoch's weights, not from the plateau's.
  ASSERT_EQ(restored_from.size(), 2u);
  for (int best : restored_from) EXPECT_GT(best, 0) << "a decay did not restore the best weights";
}

TEST(Trainer, RejectsBadLearningRateDecay) {
  Dataset d = SmallSynthetic();
  TrainConfig c = SmallConfig();
  c.set_validation_users(50);
  c.set_patience(1);
  c.set_lr_decay(1.5);
  EXPECT_EQ(Trainer::Create(d, c).status().code(), absl::StatusCode::kInvalidArgument);
  c.set_lr_decay(0.5);
  c.set_patience(0);  // no plateau to act on
  EXPECT_EQ(Trainer::Create(d, c).status().code(), absl::StatusCode::kInvalidArgument);
  c.set_patience(1);
  c.set_max_lr_decays(0);
  EXPECT_EQ(Trainer::Create(d, c).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Trainer, ItemNeighborsComeFromTheFitSplitOnly) {
  // A validation item must not link its item to others: the neighbour graph is the fit
  // split's (the held-out pairs removed), not the dataset's.
  Dataset d = SmallSynthetic();
  TrainConfig c = SmallConfig();
  c.set_validation_users(100);
  c.set_item_neighbor_weight(1);
  auto t = Trainer::Create(d, c);
  ASSERT_TRUE(t.ok()) << t.status();
  const ItemNeighbors fit =
      ItemNeighbors::Build(HoldOutValidation(d, c.validation_users(), c.seed()).train, d.num_items,
                           c.item_neighbors());
  const ItemNeighbors full = ItemNeighbors::Build(d.train, d.num_items, c.item_neighbors());
  auto same = [&](const ItemNeighbors& a, const ItemNeighbors& b) {
    for (int64_t i = 0; i < d.num_items; ++i) {
      if (a.of(i).size() != b.of(i).size()) return false;
      for (size_t k = 0; k < a.of(i).size(); ++k) {
        if (a.of(i)[k].item != b.of(i)[k].item || a.of(i)[k].weight != b.of(i)[k].weight) {
          return false;
        }
      }
    }
    return true;
  };
  ASSERT_EQ(TrainerTestAccess::objective(**t).item_neighbors().num_items(), d.num_items);
  EXPECT_TRUE(same(TrainerTestAccess::objective(**t).item_neighbors(), fit));
  EXPECT_FALSE(same(TrainerTestAccess::objective(**t).item_neighbors(), full));
}

TEST(Trainer, RejectsBadConfig) {
  Dataset d = SmallSynthetic();
  TrainConfig c = SmallConfig();
  c.set_temperature(0);
  EXPECT_EQ(Trainer::Create(d, c).status().code(), absl::StatusCode::kInvalidArgument);
  c = SmallConfig();
  c.set_batch_size(1);
  EXPECT_EQ(Trainer::Create(d, c).status().code(), absl::StatusCode::kInvalidArgument);
  c = SmallConfig();
  c.set_item_to_user_weight(-1);
  EXPECT_EQ(Trainer::Create(d, c).status().code(), absl::StatusCode::kInvalidArgument);
  c.set_item_to_user_weight(1);
  c.set_loss(TrainConfig::FULL_SOFTMAX);
  EXPECT_EQ(Trainer::Create(d, c).status().code(), absl::StatusCode::kInvalidArgument);
  c = SmallConfig();
  c.set_item_neighbor_weight(-1);
  EXPECT_EQ(Trainer::Create(d, c).status().code(), absl::StatusCode::kInvalidArgument);
  c.set_item_neighbor_weight(1);
  c.set_item_neighbors(0);
  EXPECT_EQ(Trainer::Create(d, c).status().code(), absl::StatusCode::kInvalidArgument);
  c.set_item_neighbors(10);
  c.set_loss(TrainConfig::FULL_SOFTMAX);
  EXPECT_EQ(Trainer::Create(d, c).status().code(), absl::StatusCode::kInvalidArgument);
  for (double decay : {-0.1, 1.0}) {
    c = SmallConfig();
    c.set_weight_average_decay(decay);
    EXPECT_EQ(Trainer::Create(d, c).status().code(), absl::StatusCode::kInvalidArgument) << decay;
  }
  for (double fraction : {-0.1, 1.0}) {
    c = SmallConfig();
    c.set_validation_users(10);
    c.set_validation_item_fraction(fraction);
    EXPECT_EQ(Trainer::Create(d, c).status().code(), absl::StatusCode::kInvalidArgument)
        << fraction;
  }
  c = SmallConfig();
  c.set_mask_user_positives(true);
  c.set_loss(TrainConfig::FULL_SOFTMAX);
  EXPECT_EQ(Trainer::Create(d, c).status().code(), absl::StatusCode::kInvalidArgument);
  c = SmallConfig();
  c.mutable_tower()->set_item_bias(true);  // its scale is the temperature, by construction
  EXPECT_TRUE(Trainer::Create(d, c).ok());
  c.set_loss(TrainConfig::CCL);
  c.set_global_negatives(16);
  EXPECT_EQ(Trainer::Create(d, c).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace recall::trainer::trainer_tests
