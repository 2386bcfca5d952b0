// Serving a model trained with `recall-train --item_bias` (manifest score_offset_stride > 0):
// the index scores cos(u, i) + tau * b_i, Recall's scores and order are those exact inner
// products, and a raw item vector is checked for unit norm without its offset coordinate.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "tests/server/in_process_engine.h"
#include "tests/server/server_process.h"
#include "tests/server/small_model.h"
#include "trainer/trainer.h"

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
  const torch::Tensor items = model_->trainer().EmbedAllItems();  // [n, dim + 1]
  ASSERT_EQ(items.size(1), dim + 1);
  const torch::Tensor offsets = items.select(1, dim);
  ASSERT_GT(offsets.abs().max().item<float>(), 1e-3f) << "the offsets were learned";
  for (int64_t user : {0, 17, 123}) {
    SCOPED_TRACE(user);
    const auto resp = RecallFor(user, 300);  // every item: compare the whole order
    ASSERT_EQ(resp.user_embedding_size(), dim + 1);
    EXPECT_EQ(resp.user_embedding(dim), 1.0f);
    torch::Tensor u = torch::tensor(std::vector<float>(resp.user_embedding().begin(),
                                                       resp.user_embedding().end()));
    const torch::Tensor exact = items.matmul(u);  // cos + tau * b for every item
    ASSERT_EQ(resp.items_size(), dataset_->num_items);
    float previous = INFINITY;
    for (const auto& it : resp.items()) {
      EXPECT_NEAR(it.score(), exact[it.item_id()].item<float>(), 1e-4) << it.item_id();
      EXPECT_LE(it.score(), previous + 1e-6f);
      previous = it.score();
    }
    // The offsets move the order: ranked by the cosine alone, the top-20 would differ.
    const torch::Tensor cosine = items.narrow(1, 0, dim).matmul(u.narrow(0, 0, dim));
    const torch::Tensor by_cos = std::get<1>(cosine.topk(20));
    std::vector<int64_t> served;
    for (int j = 0; j < 20; ++j) served.push_back(resp.items(j).item_id());
    std::vector<int64_t> cos_top(by_cos.data_ptr<int64_t>(), by_cos.data_ptr<int64_t>() + 20);
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
