// Serving a model trained with `recall-train --item_bias` (manifest score_offset_stride > 0):
// the index scores cos(u, i) + tau * b_i, Recall's scores and order are those exact inner
// products, and a raw item vector is checked for unit norm without its offset coordinate.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "tests/server/in_process_engine.h"
#include "tests/server/server_process.h"
#include "tests/server/small_model.h"

namespace recall::server {
namespace {

class ScoreOffsetTest : public testing::ServedModelSuite<ScoreOffsetTest> {
 public:
  static constexpr char kTempName[] = "recall_score_offset_test";
  static constexpr int kMaxK = 300;
  static void EditModelConfig(trainer::TrainConfig& c) {
    c.set_logq_correction(true);
    c.mutable_tower()->set_item_bias(true);
  }

 protected:
  static recall::v1::RecallResponse RecallFor(int64_t user, int k) {
    recall::v1::RecallRequest r;
    r.set_k(k);
    r.mutable_user()->set_user_id(user);
    for (int64_t i : dataset_->train[user]) r.mutable_user()->add_history_item_ids(i);
    r.set_return_user_embedding(true);
    recall::v1::RecallResponse resp;
    EXPECT_TRUE(engine_->Recall(r, &resp).ok());
    return resp;
  }

  static recall::v1::UpsertItemsRequest RawUpsert(int64_t id, std::vector<float> values) {
    recall::v1::UpsertItemsRequest req;
    auto* v = req.add_items()->mutable_vector();
    v->set_item_id(id);
    v->set_model_version(1);
    for (float x : values) v->add_values(x);
    return req;
  }

};

TEST_F(ScoreOffsetTest, RecallRanksByCosinePlusTheItemsOffset) {
  const int dim = model_->dim();
  const int width = model_->width();
  ASSERT_EQ(width, dim + 1);
  const std::vector<float> items = model_->ItemEmbeddings();  // [n, dim + 1], row-major
  const int64_t n = static_cast<int64_t>(items.size()) / width;
  ASSERT_EQ(n, dataset_->num_items);
  float largest_offset = 0;
  for (int64_t i = 0; i < n; ++i) largest_offset = std::max(largest_offset, std::abs(items[i * width + dim]));
  ASSERT_GT(largest_offset, 1e-3f) << "the offsets were learned";
  for (int64_t user : {0, 17, 123}) {
    SCOPED_TRACE(user);
    const auto resp = RecallFor(user, 300);  // every item: compare the whole order
    ASSERT_EQ(resp.user_embedding_size(), width);
    EXPECT_EQ(resp.user_embedding(dim), 1.0f);
    // cos + tau * b for every item (the user's last component is 1), and the cosine alone.
    std::vector<float> exact(n), cosine(n);
    for (int64_t i = 0; i < n; ++i) {
      double c = 0;
      for (int j = 0; j < dim; ++j) c += double{items[i * width + j]} * resp.user_embedding(j);
      cosine[i] = static_cast<float>(c);
      exact[i] = static_cast<float>(c + double{items[i * width + dim]} * resp.user_embedding(dim));
    }
    ASSERT_EQ(resp.items_size(), dataset_->num_items);
    float previous = INFINITY;
    for (const auto& it : resp.items()) {
      EXPECT_NEAR(it.score(), exact[it.item_id()], 1e-4) << it.item_id();
      EXPECT_LE(it.score(), previous + 1e-6f);
      previous = it.score();
    }
    // The offsets move the order: ranked by the cosine alone, the top-20 would differ.
    std::vector<int64_t> cos_top(n);
    std::iota(cos_top.begin(), cos_top.end(), 0);
    std::partial_sort(cos_top.begin(), cos_top.begin() + 20, cos_top.end(),
                      [&](int64_t a, int64_t b) { return cosine[a] > cosine[b]; });
    cos_top.resize(20);
    std::vector<int64_t> served;
    for (int j = 0; j < 20; ++j) served.push_back(resp.items(j).item_id());
    EXPECT_NE(served, cos_top);
  }
}

TEST_F(ScoreOffsetTest, RawVectorsAreUnitNormApartFromTheirOffset) {
  const int dim = model_->dim();
  // A unit preference part and a large offset: valid, and every user's new top item.
  std::vector<float> values(dim + 1, 0.0f);
  values[0] = 1.0f;
  values[dim] = 50.0f;
  recall::v1::UpsertItemsResponse resp;
  ASSERT_TRUE(engine_->UpsertItems(RawUpsert(900001, values), &resp).ok());
  EXPECT_EQ(RecallFor(5, 5).items(0).item_id(), 900001);
  // A preference part of norm 2 is refused, whatever the offset.
  values[0] = 2.0f;
  values[dim] = 0.0f;
  const absl::Status st = engine_->UpsertItems(RawUpsert(900002, values), &resp);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("L2 norm is 2"), std::string::npos) << st;
}

}  // namespace
}  // namespace recall::server
