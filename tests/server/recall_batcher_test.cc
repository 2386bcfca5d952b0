// RecallEngine::RecallBatch and RecallBatcher in-process: batched answers equal the answers of
// requests run alone (exact Flat index), concurrent requests are coalesced, an invalid request
// fails alone, and the destructor answers what is queued.
#include "server/recall_batcher.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "server/version_manager.h"
#include "tests/server/in_process_engine.h"
#include "tests/server/server_process.h"
#include "tests/server/small_model.h"

namespace recall::server {
namespace {

using recall::v1::RecallRequest;
using recall::v1::RecallResponse;

class RecallBatcherTest : public testing::ServedModelSuite<RecallBatcherTest> {
 public:
  static constexpr char kTempName[] = "recall_batcher_test";
  static constexpr int kMaxK = 100;

 protected:
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

};

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
  // A window no scheduler delay closes: with 2 ms, a loaded machine (ctest -j2 beside the bench
  // smoke tests) let callers resubmit too late and the batches stayed small. A batch leaves as
  // soon as it holds 8, so only the tail waits the window.
  o.max_wait_us = 20000;
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
          // The same answer up to float rounding: a batch is one GEMM, a lone request a GEMV,
          // so exact ties may swap. Scores agree position by position, and so do the items
          // except those tied with the last one kept.
          bool same = alone.items_size() == resp.items_size() &&
                      resp.request_id() == req.request_id();
          std::multiset<int64_t> ids_batched, ids_alone;
          const float last = same && resp.items_size() > 0
                                 ? alone.items(alone.items_size() - 1).score()
                                 : 0.0f;
          for (int r = 0; same && r < resp.items_size(); ++r) {
            same = std::abs(resp.items(r).score() - alone.items(r).score()) < 1e-5f;
            if (std::abs(resp.items(r).score() - last) > 1e-5f) ids_batched.insert(resp.items(r).item_id());
            if (std::abs(alone.items(r).score() - last) > 1e-5f) ids_alone.insert(alone.items(r).item_id());
          }
          if (!same || ids_batched != ids_alone) ++wrong;
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
    o.max_wait_us = 20000;  // long: the destructor must not wait for batches to fill
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


// Requests collected by a gRPC queue thread during one poll: nothing runs until RunCollected; a
// lone request then runs on the calling thread, several go to a worker (as one batch), and so
// does a lone one while the workers' queue holds something; refusals come at once, counting
// the workers' queue and what was collected.
TEST_F(RecallBatcherTest, CollectedRequestsRunHereWhenAloneAndOnAWorkerOtherwise) {
  RecallBatcher::Options o;
  o.max_batch_size = 32;
  o.num_workers = 1;
  o.max_queued = 7;
  std::mutex mu;
  std::vector<int> batch_sizes;
  o.on_batch = [&](int n, const RecallTimings&) {
    std::lock_guard<std::mutex> l(mu);
    batch_sizes.push_back(n);
  };
  constexpr int kN = 10;
  std::vector<RecallRequest> reqs;
  for (int i = 0; i < kN; ++i) reqs.push_back(Request(i));
  std::vector<RecallResponse> resps(kN);
  std::vector<absl::Status> got(kN, absl::UnknownError("not answered"));
  std::vector<std::thread::id> on(kN);
  std::vector<absl::Notification> answered(kN);
  int shed_full = 0, shed_deadline = 0;
  RecallBatcher batcher(engine_, o);
  batcher.set_on_shed([&](RecallBatcher::Shed why) {
    ++(why == RecallBatcher::Shed::kQueueFull ? shed_full : shed_deadline);
  });
  auto collect = [&](RecallBatcher::Collected& c, int i, RecallBatcher::Clock::time_point deadline) {
    batcher.Collect(c, &reqs[i], &resps[i],
                    [&, i](const absl::Status& s, const RecallTimings&, int) {
                      got[i] = s;
                      on[i] = std::this_thread::get_id();
                      answered[i].Notify();
                    },
                    deadline);
  };
  const auto none = RecallBatcher::Clock::time_point::max();
  const std::thread::id here = std::this_thread::get_id();

  // A lone request: answered on this thread before RunCollected returns.
  RecallBatcher::Collected c;
  collect(c, 0, none);
  EXPECT_FALSE(answered[0].HasBeenNotified());
  batcher.RunCollected(c);
  EXPECT_TRUE(c.empty());
  ASSERT_TRUE(answered[0].HasBeenNotified());
  EXPECT_TRUE(got[0].ok()) << got[0];
  EXPECT_EQ(on[0], here);

  // Several: one batch on the worker. Request 2's deadline had passed (refused at once).
  collect(c, 1, none);
  collect(c, 2, RecallBatcher::Clock::now() - std::chrono::seconds(1));
  ASSERT_TRUE(answered[2].HasBeenNotified());
  EXPECT_EQ(got[2].code(), absl::StatusCode::kDeadlineExceeded) << got[2];
  for (int i = 3; i <= 9; ++i) collect(c, i, none);
  // 7 collected (1, 3..8), the bound: request 9 was refused at once.
  ASSERT_TRUE(answered[9].HasBeenNotified());
  EXPECT_EQ(got[9].code(), absl::StatusCode::kResourceExhausted) << got[9];
  EXPECT_EQ(shed_full, 1);
  EXPECT_EQ(shed_deadline, 1);
  batcher.RunCollected(c);
  EXPECT_TRUE(c.empty());
  for (int i : {1, 3, 4, 5, 6, 7, 8}) {
    ASSERT_TRUE(answered[i].WaitForNotificationWithTimeout(absl::Seconds(30))) << i;
    ASSERT_TRUE(got[i].ok()) << i << ": " << got[i];
    EXPECT_NE(on[i], here) << i;
    RecallResponse alone;
    ASSERT_TRUE(engine_->Recall(reqs[i], &alone).ok());
    ExpectSameAnswer(resps[i], alone, i);
  }
  std::lock_guard<std::mutex> l(mu);
  EXPECT_EQ(batch_sizes, (std::vector<int>{1, 7}));
}

// A lone collected request goes to the workers while their queue holds something (here a
// worker holds its batch open for a 1 s wait, far longer than the few microseconds between
// Submit and RunCollected), so it does not overtake the queued ones.
TEST_F(RecallBatcherTest, ALoneCollectedRequestQueuesBehindWaitingOnes) {
  RecallBatcher::Options o;
  o.max_batch_size = 32;
  o.max_wait_us = 1000000;
  o.num_workers = 1;
  RecallBatcher batcher(engine_, o);
  RecallRequest first = Request(1), lone = Request(2);
  RecallResponse first_resp, lone_resp;
  absl::Notification first_done, lone_done;
  std::thread::id lone_on;
  batcher.Submit(&first, &first_resp,
                 [&](const absl::Status&, const RecallTimings&, int) { first_done.Notify(); });
  RecallBatcher::Collected c;
  batcher.Collect(c, &lone, &lone_resp,
                  [&](const absl::Status& s, const RecallTimings&, int n) {
                    EXPECT_TRUE(s.ok()) << s;
                    EXPECT_EQ(n, 2);  // in the same batch as `first`
                    lone_on = std::this_thread::get_id();
                    lone_done.Notify();
                  });
  batcher.RunCollected(c);
  EXPECT_FALSE(lone_done.HasBeenNotified());
  ASSERT_TRUE(lone_done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  ASSERT_TRUE(first_done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_NE(lone_on, std::this_thread::get_id());
}

// Overload: a full queue refuses at once (on the caller's thread, before Submit returns) instead
// of growing; the queued requests are still answered.
TEST_F(RecallBatcherTest, FullQueueRefusesResourceExhaustedAtOnce) {
  RecallBatcher::Options o;
  o.max_batch_size = 100;
  o.max_wait_us = 300000;  // the worker holds the queue open: it stays full while we submit
  o.num_workers = 1;
  o.max_queued = 4;
  std::atomic<int> shed_full{0};
  std::vector<RecallRequest> reqs(6);
  std::vector<RecallResponse> resps(6);
  std::vector<absl::Status> got(6, absl::UnknownError("not answered"));
  std::vector<absl::Notification> answered(6);
  {
    RecallBatcher batcher(engine_, o);
    batcher.set_on_shed([&](RecallBatcher::Shed why) {
      if (why == RecallBatcher::Shed::kQueueFull) ++shed_full;
    });
    for (int i = 0; i < 6; ++i) {
      reqs[i] = Request(i);
      batcher.Submit(&reqs[i], &resps[i], [&, i](const absl::Status& s, const RecallTimings&, int) {
        got[i] = s;
        answered[i].Notify();
      });
      if (i >= 4) {
        // Refused synchronously: the answer is there when Submit returns.
        ASSERT_TRUE(answered[i].HasBeenNotified()) << i;
        EXPECT_EQ(got[i].code(), absl::StatusCode::kResourceExhausted) << got[i];
        EXPECT_NE(got[i].message().find("--max_queued_requests"), std::string::npos);
      }
    }
    EXPECT_LE(batcher.queued(), 4);
    for (int i = 0; i < 4; ++i) {
      ASSERT_TRUE(answered[i].WaitForNotificationWithTimeout(absl::Seconds(30)));
      EXPECT_TRUE(got[i].ok()) << i << ": " << got[i];
      EXPECT_GT(resps[i].items_size(), 0);
    }
  }
  EXPECT_EQ(shed_full.load(), 2);
}

// Deadlines: passed on arrival -> DEADLINE_EXCEEDED at once; passed while queued -> answered
// DEADLINE_EXCEEDED without running (its batch holds only the live request).
TEST_F(RecallBatcherTest, ExpiredDeadlinesAreAnsweredWithoutWork) {
  RecallBatcher::Options o;
  o.max_batch_size = 100;
  o.max_wait_us = 200000;
  o.num_workers = 1;
  std::vector<int> batch_sizes;
  std::mutex mu;
  o.on_batch = [&](int n, const RecallTimings&) {
    std::lock_guard<std::mutex> l(mu);
    batch_sizes.push_back(n);
  };
  std::atomic<int> shed_deadline{0};
  RecallRequest r0 = Request(1), r1 = Request(2), r2 = Request(3);
  RecallResponse p0, p1, p2;
  absl::Status s0, s1, s2;
  absl::Notification n0, n1, n2;
  {
    RecallBatcher batcher(engine_, o);
    batcher.set_on_shed([&](RecallBatcher::Shed why) {
      if (why == RecallBatcher::Shed::kDeadline) ++shed_deadline;
    });
    const auto now = RecallBatcher::Clock::now();
    batcher.Submit(&r0, &p0, [&](const absl::Status& s, const RecallTimings&, int) {
      s0 = s;
      n0.Notify();
    }, now - std::chrono::milliseconds(1));
    ASSERT_TRUE(n0.HasBeenNotified());
    EXPECT_EQ(s0.code(), absl::StatusCode::kDeadlineExceeded) << s0;
    // Expires while the worker waits 200 ms for its batch to fill.
    batcher.Submit(&r1, &p1, [&](const absl::Status& s, const RecallTimings&, int) {
      s1 = s;
      n1.Notify();
    }, now + std::chrono::milliseconds(20));
    batcher.Submit(&r2, &p2, [&](const absl::Status& s, const RecallTimings&, int) {
      s2 = s;
      n2.Notify();
    });
    ASSERT_TRUE(n1.WaitForNotificationWithTimeout(absl::Seconds(30)));
    ASSERT_TRUE(n2.WaitForNotificationWithTimeout(absl::Seconds(30)));
  }
  EXPECT_EQ(s1.code(), absl::StatusCode::kDeadlineExceeded) << s1;
  EXPECT_EQ(p1.items_size(), 0);
  EXPECT_TRUE(s2.ok()) << s2;
  EXPECT_GT(p2.items_size(), 0);
  EXPECT_EQ(shed_deadline.load(), 2);
  std::lock_guard<std::mutex> l(mu);
  ASSERT_EQ(batch_sizes.size(), 1u);
  EXPECT_EQ(batch_sizes[0], 1);  // only the live request ran
}

}  // namespace
}  // namespace recall::server
