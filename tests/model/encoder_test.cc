#include "model/encoder.h"

#include <gtest/gtest.h>

#include <cmath>

#include "model/hashing.h"

namespace recall {
namespace {

recall::v1::FeatureSpec TestSpec() {
  recall::v1::FeatureSpec spec;
  spec.mutable_user_id()->set_name("user_id");
  spec.mutable_user_id()->set_num_buckets(100);
  spec.mutable_item_id()->set_name("item_id");
  spec.mutable_item_id()->set_num_buckets(100);
  spec.set_history_length(4);
  auto* c = spec.add_user_categorical();
  c->set_name("region");
  c->set_num_buckets(8);
  auto* n = spec.add_user_numeric();
  n->set_name("age");
  n->set_mean(30);
  n->set_std(10);
  auto* ic = spec.add_item_categorical();
  ic->set_name("category");
  ic->set_num_buckets(16);
  return spec;
}

std::shared_ptr<const FeatureEncoder> MakeEncoder() {
  auto e = FeatureEncoder::Create(TestSpec(), Vocabulary({10, 20, 30}), Vocabulary({5, 6, 7, 8}));
  EXPECT_TRUE(e.ok()) << e.status();
  return *e;
}

TEST(Hashing, StableAcrossRunsAndBuilds) {
  // These constants pin the encoding: if they change, every published model breaks.
  EXPECT_EQ(Mix64(0), 0xe220a8397b1dcdafULL);
  EXPECT_EQ(StableHash("c3"), StableHash("c3"));
  EXPECT_NE(StableHash("c3"), StableHash("c4"));
  EXPECT_NE(StableHash("c3", 1), StableHash("c3", 2));
  EXPECT_EQ(StableHash("abc"), 0x36d0bfc86097c13aULL) << std::hex << StableHash("abc");
}

TEST(Encoder, UnknownIdsFallBackToOovRow) {
  auto enc = MakeEncoder();
  EXPECT_EQ(enc->UserRow(10), 1);
  EXPECT_EQ(enc->UserRow(30), 3);
  EXPECT_EQ(enc->UserRow(11), 0);
  EXPECT_EQ(enc->UserRow(-5), 0);
  EXPECT_EQ(enc->ItemRow(8), 4);
  EXPECT_EQ(enc->ItemRow(999), 0);
}

TEST(Encoder, HashedIdsWithoutVocabulary) {
  auto e = FeatureEncoder::Create(TestSpec(), Vocabulary(), Vocabulary());
  ASSERT_TRUE(e.ok());
  for (int64_t id : {0LL, 1LL, 123456789LL, -7LL}) {
    const int64_t row = (*e)->UserRow(id);
    EXPECT_GE(row, 1);
    EXPECT_LE(row, 100);
    EXPECT_EQ(row, HashBucket(Mix64(static_cast<uint64_t>(id)), 100));
  }
}

TEST(Encoder, CategoricalRowsAreStableAndOffsetPerFeature) {
  auto enc = MakeEncoder();
  const int64_t a = enc->UserCategoricalRow(0, "north");
  EXPECT_EQ(a, enc->UserCategoricalRow(0, "north"));
  EXPECT_GE(a, 1);
  EXPECT_LE(a, 8);
  EXPECT_EQ(enc->UserCategoricalRow(0, ""), 0);  // missing
  EXPECT_EQ(enc->num_user_categorical_rows(), 9);
}

TEST(Encoder, EncodesUsersWithTruncatedKnownHistory) {
  auto enc = MakeEncoder();
  recall::v1::UserFeatures u;
  u.set_user_id(20);
  for (int64_t id : {5, 6, 999, 7, 8, 5}) u.add_history_item_ids(id);  // 999 unknown
  (*u.mutable_categorical())["region"] = "north";
  (*u.mutable_numeric())["age"] = 40;
  const recall::v1::UserFeatures* p = &u;
  UserBatch b = enc->EncodeUsers({&p, 1});
  EXPECT_EQ(b.user_id[0].item<int64_t>(), 2);
  // Last 4 known items in order: 6, 7, 8, 5 -> rows 2, 3, 4, 1.
  std::vector<int64_t> hist(b.history.data_ptr<int64_t>(), b.history.data_ptr<int64_t>() + 4);
  EXPECT_EQ(hist, (std::vector<int64_t>{2, 3, 4, 1}));
  EXPECT_FLOAT_EQ(b.history_mask.sum().item<float>(), 4.0f);
  EXPECT_EQ(b.categorical[0][0].item<int64_t>(), enc->UserCategoricalRow(0, "north"));
  EXPECT_FLOAT_EQ(b.numeric[0][0].item<float>(), 1.0f);
}

TEST(Encoder, ShortHistoryIsPaddedAndMasked) {
  auto enc = MakeEncoder();
  recall::v1::UserFeatures u;
  u.set_user_id(12345);  // unknown user -> OOV
  u.add_history_item_ids(7);
  const recall::v1::UserFeatures* p = &u;
  UserBatch b = enc->EncodeUsers({&p, 1});
  EXPECT_EQ(b.user_id[0].item<int64_t>(), 0);
  EXPECT_EQ(b.history[0][0].item<int64_t>(), 3);
  EXPECT_EQ(b.history[0][1].item<int64_t>(), 0);
  EXPECT_FLOAT_EQ(b.history_mask[0][1].item<float>(), 0.0f);
  EXPECT_FLOAT_EQ(b.numeric[0][0].item<float>(), 0.0f);  // missing numeric -> mean
}

TEST(Encoder, ValidationNamesTheField) {
  auto enc = MakeEncoder();
  recall::v1::UserFeatures u;
  (*u.mutable_numeric())["age"] = std::nanf("");
  auto s = enc->ValidateUser(u, 10);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("user.numeric[\"age\"]"), std::string::npos) << s;

  recall::v1::UserFeatures v;
  (*v.mutable_categorical())["colour"] = "red";
  s = enc->ValidateUser(v, 10);
  EXPECT_NE(s.message().find("user.categorical[\"colour\"]"), std::string::npos) << s;

  recall::v1::UserFeatures w;
  for (int i = 0; i < 11; ++i) w.add_history_item_ids(i);
  s = enc->ValidateUser(w, 10);
  EXPECT_NE(s.message().find("user.history_item_ids"), std::string::npos) << s;

  recall::v1::ItemFeatures item;
  (*item.mutable_numeric())["price"] = 1;
  s = enc->ValidateItem(item, "items[2].features");
  EXPECT_NE(s.message().find("items[2].features.numeric[\"price\"]"), std::string::npos) << s;
}

TEST(Encoder, RejectsInconsistentSpecs) {
  auto spec = TestSpec();
  spec.mutable_user_numeric(0)->set_std(0);
  EXPECT_FALSE(FeatureEncoder::Create(spec, {}, {}).ok());
  spec = TestSpec();
  spec.add_user_numeric()->set_name("region");  // duplicate name
  spec.mutable_user_numeric(1)->set_std(1);
  EXPECT_FALSE(FeatureEncoder::Create(spec, {}, {}).ok());
  for (int bad : {-1, 10001}) {
    spec = TestSpec();
    spec.set_item_neighbor_length(bad);
    EXPECT_FALSE(FeatureEncoder::Create(spec, {}, {}).ok()) << bad;
    spec = TestSpec();
    spec.set_item_audience_length(bad);
    EXPECT_FALSE(FeatureEncoder::Create(spec, {}, {}).ok()) << bad;
  }
}

TEST(Encoder, OnlineItemsGetEmptyAudienceAndNeighbourInputsInTheTowersArgumentOrder) {
  auto spec = TestSpec();
  spec.set_item_audience_length(3);
  spec.set_item_neighbor_length(5);
  auto e = FeatureEncoder::Create(spec, {}, Vocabulary({5, 6, 7, 8}));
  ASSERT_TRUE(e.ok()) << e.status();
  recall::v1::ItemFeatures item;
  item.set_item_id(6);
  const recall::v1::ItemFeatures* ip = &item;
  const ItemBatch b = (*e)->EncodeItems({&ip, 1});
  ASSERT_TRUE(b.neighbors.defined() && b.audience.defined());
  EXPECT_EQ(b.neighbors.sizes(), (std::vector<int64_t>{1, 5}));
  EXPECT_EQ(b.neighbors_mask.sum().item<float>(), 0.0f);
  EXPECT_EQ(b.audience_mask.sum().item<float>(), 0.0f);
  const auto in = b.Inputs();  // item_id, audience, mask, neighbors, mask, categorical, numeric
  ASSERT_EQ(in.size(), 7u);
  EXPECT_EQ(in[1].toTensor().size(1), 3);
  EXPECT_EQ(in[3].toTensor().size(1), 5);
  EXPECT_EQ(in[5].toTensor().scalar_type(), at::kLong);  // categorical
  EXPECT_EQ(in[0].toTensor()[0].item<int64_t>(), (*e)->ItemRow(6));
}

}  // namespace
}  // namespace recall
