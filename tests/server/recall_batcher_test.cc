// RecallEngine::RecallBatch and RecallBatcher in-process: batched answers equal the answers of
// requests run alone (exact Flat index), concurrent requests are coalesced, an invalid request
// fails alone, and the destructor answers what is queued.
#include "server/recall_batcher.h"

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "server/version_manager.h"
#include "tests/server/server_process.h"

namespace recall::server {
namespace {

using recall::v1::RecallRequest;
using recall::v1::RecallResponse;

class RecallBatcherTest : public testing::SmallModelSuite<RecallBatcherTest> {
 public:
  static constexpr char kTempName[] = "recall_batcher_test";

 protected:
  static void SetUpTestSuite() {
    SmallModelSuite::SetUpTestSuite();
    if (HasFatalFailure()) return;
    ASSERT_TRUE(model_->trainer->Export(*dir_ + "/models", "Flat", model_->metrics, {}).ok());
    versions_ = new VersionManager({*dir_ + "/models", 0, 0});
    ASSERT_TRUE(versions_->LoadNewest().ok());
    EngineLimits limits;
    limits.max_k = 100;
    engine_ = new RecallEngine(versions_, limits);
  }
  static void TearDownTestSuite() {
    delete engine_;
    delete versions_;
    SmallModelSuite::TearDownTestSuite();
  }

  // Request i: a user with part of their history, k and exclusions varying with i.
  static RecallRequest Request(int i) {
    RecallRequest r;
    const int64_t u = (i * 37) % dataset_->num_users;
    r.set_k(1 + (i * 7) % 60);
    r.mutable_user()->set_user_id(u);
    const auto& tr = dataset_->train[u];
    for (size_t j = 0; j < tr.size() && j < static_cast<size_t>(3 + i % 10); ++j) {
      r.mutable_user()->add_history_item_ids(tr[j]);
    }
    if (i % 3 == 0) r.set_exclude_history(true);
    if (i % 4 == 0) {
      for (int j = 0; j < 5; ++j) r.add_exclude_item_ids((i + j * 11) % dataset_->num_items);
    }
    r.set_return_user_embedding(i % 2 == 0);
    r.set_request_id("r" + std::to_string(i));
    return r;
  }

  static void ExpectSameAnswer(const RecallResponse& a, const RecallResponse& b, int i) {
    ASSERT_EQ(a.items_size(), b.items_size()) << "request " << i;
    for (int j = 0; j < a.items_size(); ++j) {
      EXPECT_EQ(a.items(j).item_id(), b.items(j).item_id()) << "request " << i << " rank " << j;
      EXPECT_NEAR(a.items(j).score(), b.items(j).score(), 1e-5) << "request " << i;
    }
    ASSERT_EQ(a.user_embedding_size(), b.user_embedding_size());
    for (int j = 0; j < a.user_embedding_size(); ++j) {
      EXPECT_NEAR(a.user_embedding(j), b.user_embedding(j), 1e-5);
    }
    EXPECT_EQ(a.request_id(), b.request_id());
    EXPECT_EQ(a.model_version(), b.model_version());
  }

  static VersionManager* versions_;
  static RecallEngine* engine_;
};
VersionManager* RecallBatcherTest::versions_ = nullptr;
RecallEngine* RecallBatcherTest::engine_ = nullptr;

TEST_F(RecallBatcherTest, BatchAnswersEqualRequestsRunAlone) {
  constexpr int kN = 48;
  std::vector<RecallRequest> reqs;
  for (int i = 0; i < kN; ++i) reqs.push_back(Request(i));
  std::vector<const RecallRequest*> rp;
  std::vector<RecallResponse> batched(kN);
  std::vector<RecallResponse*> bp;
  for (int i = 0; i < kN; ++i) {
    rp.push_back(&reqs[i]);
    bp.push_back(&batched[i]);
  }
  std::vector<absl::Status> statuses(kN);
  RecallTimings t;
  engine_->RecallBatch(rp, bp, absl::MakeSpan(statuses), &t);
  for (int i = 0; i < kN; ++i) {
    ASSERT_TRUE(statuses[i].ok()) << i << ": " << statuses[i];
    RecallResponse alone;
    ASSERT_TRUE(engine_->Recall(reqs[i], &alone).ok());
    EXPECT_EQ(batched[i].items_size(), reqs[i].k());
    ExpectSameAnswer(batched[i], alone, i);
  }
  EXPECT_GT(t.tower_sec, 0);
  EXPECT_GT(t.search_sec, 0);
}

TEST_F(RecallBatcherTest, InvalidRequestFailsAloneInItsBatch) {
  std::vector<RecallRequest> reqs = {Request(1), Request(2), Request(3)};
  reqs[1].set_k(0);
  std::vector<RecallResponse> out(3);
  std::vector<const RecallRequest*> rp = {&reqs[0], &reqs[1], &reqs[2]};
  std::vector<RecallResponse*> op = {&out[0], &out[1], &out[2]};
  std::vector<absl::Status> st(3);
  engine_->RecallBatch(rp, op, absl::MakeSpan(st));
  EXPECT_TRUE(st[0].ok()) << st[0];
  EXPECT_EQ(st[1].code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st[1].message().find("k:"), std::string::npos) << st[1];
  EXPECT_TRUE(st[2].ok()) << st[2];
  EXPECT_EQ(out[0].items_size(), reqs[0].k());
  EXPECT_EQ(out[1].items_size(), 0);
  EXPECT_EQ(out[2].items_size(), reqs[2].k());
}

TEST_F(RecallBatcherTest, ConcurrentRequestsAreCoalescedAndAnsweredCorrectly) {
  constexpr int kThreads = 16, kPerThread = 20;
  std::mutex mu;
  std::vector<int> batch_sizes;
  RecallBatcher::Options o;
  o.max_batch_size = 8;
  o.max_wait_us = 2000;
  o.num_workers = 1;
  o.on_batch = [&](int n, const RecallTimings&) {
    std::lock_guard<std::mutex> l(mu);
    batch_sizes.push_back(n);
  };
  std::atomic<int> wrong{0}, failed{0};
  {
    RecallBatcher batcher(engine_, o);
    std::vector<std::thread> threads;
    for (int th = 0; th < kThreads; ++th) {
      threads.emplace_back([&, th] {
        for (int j = 0; j < kPerThread; ++j) {
          const int i = th * kPerThread + j;
          RecallRequest req = Request(i);
          RecallResponse resp;
          absl::Notification done;
          absl::Status status;
          batcher.Submit(&req, &resp, [&](const absl::Status& s, const RecallTimings& t, int n) {
            status = s;
            if (n < 1 || n > 8 || t.queue_sec < 0) ++wrong;
            done.Notify();
          });
          done.WaitForNotification();
          if (!status.ok()) {
            ++failed;
            continue;
          }
          RecallResponse alone;
          if (!engine_->Recall(req, &alone).ok()) ++failed;
          bool same = alone.items_size() == resp.items_size() &&
                      resp.request_id() == req.request_id();
          for (int r = 0; same && r < resp.items_size(); ++r) {
            same = resp.items(r).item_id() == alone.items(r).item_id();
          }
          if (!same) ++wrong;
        }
      });
    }
    for (auto& t : threads) t.join();
  }
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(wrong.load(), 0);
  int total = 0, max_size = 0;
  for (int n : batch_sizes) {
    total += n;
    max_size = std::max(max_size, n);
  }
  EXPECT_EQ(total, kThreads * kPerThread);
  EXPECT_LE(max_size, 8);
  // 16 callers waiting on 1 worker: batches fill up.
  EXPECT_GE(max_size, 4) << "batches: " << batch_sizes.size();
  EXPECT_LT(batch_sizes.size(), static_cast<size_t>(kThreads * kPerThread / 2));
}

TEST_F(RecallBatcherTest, DestructorAnswersEverythingQueued) {
  constexpr int kN = 40;
  std::vector<RecallRequest> reqs;
  for (int i = 0; i < kN; ++i) reqs.push_back(Request(i));
  std::vector<RecallResponse> out(kN);
  std::atomic<int> answered{0};
  {
    RecallBatcher::Options o;
    o.max_batch_size = 4;
    o.max_wait_us = 100000;  // long: the destructor must not wait for batches to fill
    o.num_workers = 2;
    RecallBatcher batcher(engine_, o);
    for (int i = 0; i < kN; ++i) {
      batcher.Submit(&reqs[i], &out[i], [&](const absl::Status& s, const RecallTimings&, int) {
        if (s.ok()) ++answered;
      });
    }
  }
  EXPECT_EQ(answered.load(), kN);
  for (int i = 0; i < kN; ++i) EXPECT_EQ(out[i].items_size(), reqs[i].k()) << i;
}

TEST_F(RecallBatcherTest, NoVersionLoadedIsUnavailableForEveryRequest) {
  VersionManager empty({*dir_ + "/no_models", 0, 0});
  RecallEngine engine(&empty, EngineLimits());
  std::vector<RecallRequest> reqs = {Request(1), Request(2)};
  reqs[1].set_k(0);  // invalid anyway: its own error wins
  std::vector<RecallResponse> out(2);
  std::vector<const RecallRequest*> rp = {&reqs[0], &reqs[1]};
  std::vector<RecallResponse*> op = {&out[0], &out[1]};
  std::vector<absl::Status> st(2);
  engine.RecallBatch(rp, op, absl::MakeSpan(st));
  EXPECT_EQ(st[0].code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(st[1].code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace recall::server
