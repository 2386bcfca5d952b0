// recall-bench's load library: percentiles, request pools, the closed/open loops against
// in-process fake targets, and the background write mix against a fake server on loopback (no
// timing assertions: counts and codes only).
#include "client/bench_load.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_set>
#include <vector>

namespace recall::bench {
namespace {

using recall::v1::RecallRequest;
using recall::v1::RecallResponse;

TEST(Summarize, NearestRankPercentilesAndQps) {
  std::vector<double> lat;
  for (int i = 1; i <= 1000; ++i) lat.push_back(i * 1e-3);  // 1..1000 ms, shuffled below
  std::reverse(lat.begin(), lat.end());
  LatencyStats s = Summarize(lat, 3, {{"UNAVAILABLE", 3}}, 2.0);
  EXPECT_EQ(s.ok, 1000);
  EXPECT_EQ(s.errors, 3);
  EXPECT_DOUBLE_EQ(s.qps, 500);
  EXPECT_NEAR(s.p50_ms, 500, 1e-9);
  EXPECT_NEAR(s.p99_ms, 990, 1e-9);
  EXPECT_NEAR(s.p999_ms, 999, 1e-9);
  EXPECT_NEAR(s.max_ms, 1000, 1e-9);
  EXPECT_NEAR(s.mean_ms, 500.5, 1e-9);
  EXPECT_NE(StatsJson(s).find("\"UNAVAILABLE\": 3"), std::string::npos) << StatsJson(s);
  EXPECT_EQ(Summarize({}, 0, {}, 1.0).p99_ms, 0);
}

TEST(MakeRequests, HistoriesFromThePoolWithinBounds) {
  const std::vector<int64_t> items = {5, 9, 100, 4000};
  auto reqs = MakeRequests(200, items, 50, 20, 50, 100, 3);
  ASSERT_EQ(reqs.size(), 200u);
  std::set<int> lengths;
  for (const auto& r : reqs) {
    EXPECT_EQ(r.k(), 100);
    EXPECT_GE(r.user().user_id(), 0);
    EXPECT_LT(r.user().user_id(), 50);
    EXPECT_GE(r.user().history_item_ids_size(), 20);
    EXPECT_LE(r.user().history_item_ids_size(), 50);
    lengths.insert(r.user().history_item_ids_size());
    for (int64_t id : r.user().history_item_ids()) {
      EXPECT_TRUE(std::count(items.begin(), items.end(), id)) << id;
    }
  }
  EXPECT_GT(lengths.size(), 10u);
  EXPECT_EQ(MakeRequests(5, items, 50, 20, 50, 100, 3)[4].DebugString(),
            MakeRequests(5, items, 50, 20, 50, 100, 3)[4].DebugString());
}

TEST(MakeRequestsForUsers, CarryTheUsersIdFeaturesAndLatestHistory) {
  std::vector<BenchUser> users(3);
  for (int u = 0; u < 3; ++u) {
    users[u].user_id = 1000 + u;
    for (int j = 0; j < 10 * (u + 1); ++j) users[u].history.push_back(100 * u + j);
    users[u].categorical["region"] = "r" + std::to_string(u);
    users[u].numeric["age"] = 20.0f + u;
  }
  users[1].categorical.clear();  // a user without a value sends none
  auto reqs = MakeRequestsForUsers(300, users, 15, 50, 9);
  ASSERT_EQ(reqs.size(), 300u);
  std::set<int64_t> seen;
  for (const auto& r : reqs) {
    const int u = static_cast<int>(r.user().user_id() - 1000);
    ASSERT_GE(u, 0);
    ASSERT_LT(u, 3);
    seen.insert(u);
    EXPECT_EQ(r.k(), 50);
    const std::vector<int64_t> h(r.user().history_item_ids().begin(),
                                 r.user().history_item_ids().end());
    const std::vector<int64_t>& all = users[u].history;
    const size_t keep = std::min<size_t>(15, all.size());
    EXPECT_EQ(h, std::vector<int64_t>(all.end() - keep, all.end())) << "user " << u;
    EXPECT_EQ(r.user().categorical_size(), u == 1 ? 0 : 1);
    if (u != 1) {
      EXPECT_EQ(r.user().categorical().at("region"), "r" + std::to_string(u));
    }
    EXPECT_FLOAT_EQ(r.user().numeric().at("age"), 20.0f + u);
  }
  EXPECT_EQ(seen.size(), 3u);
  EXPECT_TRUE(MakeRequestsForUsers(5, {}, 15, 50, 9).empty());
}

// Answers every call on a thread of its own; optionally fails requests whose k is 7.
class ThreadedTarget {
 public:
  ThreadedTarget() : worker_([this] { Loop(); }) {}
  ~ThreadedTarget() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    worker_.join();
  }
  std::unique_ptr<Target> AsTarget() {
    return MakeFunctionTarget("fake", [this](const RecallRequest* req, RecallResponse* resp,
                                             std::function<void(const grpc::Status&)> done) {
      std::lock_guard<std::mutex> l(mu_);
      queue_.push_back([req, resp, done = std::move(done)] {
        if (req->k() == 7) {
          done(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "busy"));
          return;
        }
        resp->set_request_id(req->request_id());
        done(grpc::Status::OK);
      });
      cv_.notify_one();
    });
  }
  void set_paused(bool p) {
    {
      std::lock_guard<std::mutex> l(mu_);
      paused_ = p;
    }
    cv_.notify_all();
  }
  int64_t calls() const { return calls_.load(); }

 private:
  void Loop() {
    std::unique_lock<std::mutex> l(mu_);
    while (true) {
      cv_.wait(l, [&] { return stop_ || (!paused_ && !queue_.empty()); });
      if (queue_.empty() || (paused_ && !stop_)) {
        if (stop_) return;
        continue;
      }
      auto f = std::move(queue_.front());
      queue_.pop_front();
      l.unlock();
      ++calls_;
      f();
      l.lock();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stop_ = false, paused_ = false;
  std::atomic<int64_t> calls_{0};
  std::thread worker_;
};

TEST(ClosedLoop, CountsAnswersAndErrorsByCode) {
  ThreadedTarget fake;
  auto target = fake.AsTarget();
  auto pool = MakeRequests(10, {1, 2, 3}, 10, 1, 2, 5, 1);
  pool[3].set_k(7);  // one in ten fails
  LatencyStats s = RunClosedLoop(*target, pool, 4, 0.05, 0.3);
  EXPECT_GT(s.ok, 0);
  EXPECT_GT(s.errors, 0);
  EXPECT_EQ(s.errors_by_code.at("RESOURCE_EXHAUSTED"), s.errors);
  EXPECT_NEAR(static_cast<double>(s.errors) / (s.ok + s.errors), 0.1, 0.05);
  EXPECT_GT(s.p50_ms, 0);
}

// A target that answers inside Call (recall-bench's in-process engine without the batcher):
// the stack stays flat however many requests a user sends (each answer used to nest one more
// Send frame), and the users run at once, one thread each.
TEST(ClosedLoop, SynchronousTargetKeepsTheStackFlatAndRunsUsersConcurrently) {
  std::mutex mu;
  std::map<std::thread::id, std::pair<uintptr_t, uintptr_t>> depth;  // thread -> lowest, highest
  std::atomic<int> in_call{0}, most_in_call{0};
  std::atomic<int64_t> calls{0};
  auto target = MakeFunctionTarget(
      "sync", [&](const RecallRequest*, RecallResponse*,
                  std::function<void(const grpc::Status&)> done) {
        int here = 0;
        const auto addr = reinterpret_cast<uintptr_t>(&here);
        {
          std::lock_guard<std::mutex> l(mu);
          auto [it, fresh] = depth.try_emplace(std::this_thread::get_id(), addr, addr);
          it->second.first = std::min(it->second.first, addr);
          it->second.second = std::max(it->second.second, addr);
        }
        const int now = ++in_call;
        for (int seen = most_in_call.load(); now > seen;) {
          if (most_in_call.compare_exchange_weak(seen, now)) break;
        }
        // Every 64th call sleeps so the four users overlap even on one core.
        if (++calls % 64 == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
        --in_call;
        done(grpc::Status::OK);
      });
  auto pool = MakeRequests(10, {1, 2, 3}, 10, 1, 2, 5, 1);
  LatencyStats s = RunClosedLoop(*target, pool, 4, 0.0, 0.3);
  EXPECT_EQ(s.errors, 0);
  EXPECT_GT(s.ok, 2000);  // enough calls for a recursion to show in the depth
  EXPECT_GE(calls.load(), s.ok);
  EXPECT_EQ(most_in_call.load(), 4);
  ASSERT_EQ(depth.size(), 4u);  // one thread per user
  for (const auto& [id, range] : depth) {
    EXPECT_LT(range.second - range.first, 4096u) << "the stack grew across calls";
  }
}

TEST(OpenLoop, SendsAtTheRateAndCountsBacklogWhenTheTargetStalls) {
  ThreadedTarget fake;
  auto target = fake.AsTarget();
  auto pool = MakeRequests(10, {1, 2, 3}, 10, 1, 2, 5, 1);
  // 400 req/s for 0.5 s measured: 200 scheduled in the window, all answered.
  LatencyStats s = RunOpenLoop(*target, pool, 400, 0.1, 0.5, 1000);
  EXPECT_NEAR(static_cast<double>(s.ok + s.errors), 200, 1);
  EXPECT_EQ(s.errors, 0);

  // A stalled target: at most 10 outstanding, the rest are client_backlog errors, and the run
  // still ends once the target resumes.
  fake.set_paused(true);
  std::thread resume([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(700));
    fake.set_paused(false);
  });
  s = RunOpenLoop(*target, pool, 400, 0.0, 0.5, 10);
  resume.join();
  EXPECT_GE(s.errors_by_code["client_backlog"], 150);
  EXPECT_LE(s.ok, 10);
}

// A RecallService that records every write and keeps the live ids, as a server would.
class FakeWriteServer final : public recall::v1::RecallService::Service {
 public:
  struct Call {
    bool is_delete = false;
    std::vector<int64_t> ids;
    std::vector<float> norms;
    std::vector<int> dims;
    std::vector<int64_t> versions;
  };
  explicit FakeWriteServer(const std::vector<int64_t>& served)
      : live_(served.begin(), served.end()) {}
  grpc::Status UpsertItems(grpc::ServerContext*, const recall::v1::UpsertItemsRequest* req,
                           recall::v1::UpsertItemsResponse* resp) override {
    std::lock_guard<std::mutex> l(mu_);
    Call c;
    for (const auto& item : req->items()) {
      const auto& v = item.vector();
      c.ids.push_back(v.item_id());
      double n = 0;
      for (float x : v.values()) n += static_cast<double>(x) * x;
      c.norms.push_back(static_cast<float>(std::sqrt(n)));
      c.dims.push_back(v.values_size());
      c.versions.push_back(v.model_version());
      live_.insert(v.item_id());
    }
    calls_.push_back(std::move(c));
    resp->set_upserted(req->items_size());
    return grpc::Status::OK;
  }
  grpc::Status DeleteItems(grpc::ServerContext*, const recall::v1::DeleteItemsRequest* req,
                           recall::v1::DeleteItemsResponse* resp) override {
    std::lock_guard<std::mutex> l(mu_);
    Call c;
    c.is_delete = true;
    int deleted = 0;
    for (int64_t id : req->item_ids()) {
      c.ids.push_back(id);
      deleted += static_cast<int>(live_.erase(id));
    }
    calls_.push_back(std::move(c));
    resp->set_deleted(deleted);
    return grpc::Status::OK;
  }
  size_t num_calls() {
    std::lock_guard<std::mutex> l(mu_);
    return calls_.size();
  }
  std::vector<Call> calls() {
    std::lock_guard<std::mutex> l(mu_);
    return calls_;
  }

 private:
  std::mutex mu_;
  std::vector<Call> calls_;
  std::unordered_set<int64_t> live_;
};

TEST(UpsertLoad, WriteMixOfReplacementsNewIdsAndDeletes) {
  std::vector<int64_t> served;
  for (int64_t id = 1000; id < 2000; ++id) served.push_back(id);
  FakeWriteServer fake(served);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&fake);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(port, 0);

  WriteMix mix;
  mix.items_per_sec = 40000;  // as fast as the fake answers
  mix.batch = 10;
  mix.dim = 8;
  mix.model_version = 3;
  mix.served_ids = served;
  mix.first_new_id = 5000;
  mix.new_id_span = 100;  // cycles within the run: new ids come round again
  mix.replace_fraction = 0.2;
  mix.delete_fraction = 0.1;
  // One caller: the replay below is in the server's arrival order, which concurrent callers
  // do not share (with several, "replaced" is what the writer knew when it built the call).
  mix.writers = 1;
  UpsertLoad load("127.0.0.1:" + std::to_string(port), mix);
  for (int i = 0; i < 600 && fake.num_calls() < 400; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  load.Stop();
  server->Shutdown();
  const std::vector<FakeWriteServer::Call> calls = fake.calls();
  ASSERT_GE(calls.size(), 400u);

  // Replay what the writer may know is live; every delete names live ids, every replacement
  // a served one.
  std::unordered_set<int64_t> live(served.begin(), served.end());
  int64_t upserted = 0, replaced = 0, from_served = 0, deleted = 0, delete_calls = 0;
  for (const auto& c : calls) {
    std::unordered_set<int64_t> distinct(c.ids.begin(), c.ids.end());
    EXPECT_EQ(distinct.size(), c.ids.size()) << "an id twice in one call";
    EXPECT_EQ(c.ids.size(), 10u);
    if (c.is_delete) {
      ++delete_calls;
      for (int64_t id : c.ids) {
        EXPECT_TRUE(live.count(id)) << "deleted " << id << ", which was not live";
        live.erase(id);
        ++deleted;
      }
      continue;
    }
    for (size_t j = 0; j < c.ids.size(); ++j) {
      const int64_t id = c.ids[j];
      EXPECT_TRUE((id >= 1000 && id < 2000) || (id >= 5000 && id < 5100)) << id;
      EXPECT_EQ(c.dims[j], 8);
      EXPECT_NEAR(c.norms[j], 1.0, 1e-5);
      EXPECT_EQ(c.versions[j], 3);
      ++upserted;
      replaced += live.count(id) > 0;
      from_served += id < 2000;
      live.insert(id);
    }
  }
  EXPECT_EQ(load.items_ok(), upserted);
  EXPECT_EQ(load.replaced_ok(), replaced);
  EXPECT_EQ(load.deleted_ids_ok(), deleted);
  EXPECT_EQ(load.deleted_present(), deleted);  // only live ids are deleted
  EXPECT_EQ(load.calls_failed(), 0);
  EXPECT_EQ(load.delete_calls_failed(), 0);
  const double served_share = static_cast<double>(from_served) / upserted;
  EXPECT_GT(served_share, 0.12);
  EXPECT_LT(served_share, 0.28);
  const double delete_share = static_cast<double>(delete_calls) / calls.size();
  EXPECT_GT(delete_share, 0.04);
  EXPECT_LT(delete_share, 0.18);
  EXPECT_GT(replaced, from_served);  // new ids came round again after 100
}

}  // namespace
}  // namespace recall::bench
