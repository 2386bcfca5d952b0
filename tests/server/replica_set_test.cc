// A replica set for real: a NATS JetStream cluster (nats-server processes on loopback ports,
// temp store dirs) and recall-server replicas (child processes) sharing one model base and
// one write stream. Faults are real too: kill -9 of replicas and NATS nodes.
//
// Sizes come from the environment so that CI runs a short round and bench/replica_set.sh the
// long ones with the same code (0 or unset = the CI default):
//   RECALL_FAULT_EVENTS   kills in the fault round (CI 3; the long run 10)
//   RECALL_FAULT_SEED     the schedule's seed (default: the clock; always printed)
//   RECALL_RYW_TRIES      read-your-writes tries (CI 200; the long run 10000)
//   RECALL_CATCHUP_WRITES writes before the late replica starts (CI 3000; the long run 100000)
//   RECALL_PIN_ROUNDS     pin changes timed (CI 2)
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <nats/nats.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "recall/v1/wal.pb.h"
#include "server/state_digest.h"
#include "tests/server/server_process.h"
#include "tests/server/small_model.h"
#include "tests/testing/metrics_scrape.h"
#include "tests/testing/nats_cluster.h"

namespace recall {
namespace {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using testing::Deadline;

constexpr int kReplicas = 3;
constexpr char kStream[] = "RECALL_WRITES";
constexpr int64_t kOnlineIdBase = 1000000;  // far above the trained ids (0..299)

int64_t EnvInt(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  const int64_t x = std::atoll(v);
  return x > 0 ? x : fallback;
}

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// A random unit vector of `dim` values.
std::vector<float> UnitVector(std::mt19937_64& rng, int dim) {
  std::normal_distribution<float> n;
  std::vector<float> v(dim);
  double norm = 0;
  for (float& x : v) {
    x = n(rng);
    norm += x * x;
  }
  for (float& x : v) x = static_cast<float>(x / std::sqrt(norm));
  return v;
}

// Every message of the write stream up to `last`, read with an ordered consumer.
std::vector<std::pair<uint64_t, std::string>> ReadStream(const std::string& url, uint64_t last) {
  std::vector<std::pair<uint64_t, std::string>> out;
  natsConnection* nc = nullptr;
  if (natsConnection_ConnectTo(&nc, url.c_str()) != NATS_OK) return out;
  jsCtx* js = nullptr;
  natsConnection_JetStream(&js, nc, nullptr);
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = kStream;
  so.Ordered = true;
  natsSubscription* sub = nullptr;
  jsErrCode je;
  if (js_SubscribeSync(&sub, js, "recall.writes.recall_writes", nullptr, &so, &je) == NATS_OK) {
    while (out.empty() || out.back().first < last) {
      natsMsg* m = nullptr;
      if (natsSubscription_NextMsg(&m, sub, 5000) != NATS_OK) break;
      jsMsgMetaData* md = nullptr;
      natsMsg_GetMetaData(&md, m);
      out.emplace_back(md->Sequence.Stream,
                       std::string(natsMsg_GetData(m), natsMsg_GetDataLength(m)));
      jsMsgMetaData_Destroy(md);
      natsMsg_Destroy(m);
    }
    natsSubscription_Destroy(sub);
  }
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  return out;
}

// The stream's first and last sequence, through `url`.
std::pair<uint64_t, uint64_t> StreamBounds(const std::string& url) {
  std::pair<uint64_t, uint64_t> out{0, 0};
  natsConnection* nc = nullptr;
  if (natsConnection_ConnectTo(&nc, url.c_str()) != NATS_OK) return out;
  jsCtx* js = nullptr;
  natsConnection_JetStream(&js, nc, nullptr);
  jsStreamInfo* si = nullptr;
  jsErrCode je;
  if (js_GetStreamInfo(&si, js, kStream, nullptr, &je) == NATS_OK) {
    out = {si->State.FirstSeq, si->State.LastSeq};
    jsStreamInfo_Destroy(si);
  }
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  return out;
}

// What a request id wrote, as the stream holds it.
std::string RequestIdOf(const recall::v1::WriteAheadRecord& rec) {
  return rec.has_upsert() ? rec.upsert().request_id() : rec.delete_().request_id();
}

class ReplicaSetTest : public testing::SmallModelSuite<ReplicaSetTest> {
 public:
  static constexpr char kTempName[] = "recall_replica_set";

 protected:
  void SetUp() override {
    if (testing::NatsServerBinary().empty()) GTEST_SKIP() << "nats-server is not installed";
    base_ = FreshTestDir();
    models_ = base_ + "/models";
    Publish(1);
    ASSERT_TRUE(nats_.Start(3, base_)) << "the NATS cluster did not start; logs in " << base_;
    dim_ = model_->dim();
  }
  void TearDown() override {
    // RECALL_KEEP_LOGS=DIR keeps the replicas' and NATS nodes' logs (the test dir goes away).
    if (const char* keep = std::getenv("RECALL_KEEP_LOGS"); keep != nullptr && *keep) {
      fs::create_directories(keep);
      for (const auto& e : fs::recursive_directory_iterator(base_)) {
        if (e.path().filename().string().find(".log") != std::string::npos) {
          std::error_code ec;
          std::string name = fs::relative(e.path(), base_).string();
          std::replace(name.begin(), name.end(), '/', '_');
          fs::copy_file(e.path(), fs::path(keep) / name, fs::copy_options::overwrite_existing, ec);
        }
      }
    }
    for (auto& r : replicas_) {
      if (HasFailure() && !r.log().empty()) {
        std::ifstream in(r.log());
        std::deque<std::string> tail;
        for (std::string line; std::getline(in, line);) {
          tail.push_back(line);
          if (tail.size() > 25) tail.pop_front();
        }
        std::cerr << "--- the end of " << r.log() << ":\n";
        for (const auto& line : tail) std::cerr << "  | " << line << "\n";
      }
      r.Stop(SIGKILL);
    }
  }

  void Publish(int64_t version) {
    auto p = model_->Export(models_, "Flat", version);
    ASSERT_TRUE(p.ok()) << p.status();
  }

  std::vector<std::string> Flags(int i, std::vector<std::string> extra = {}) const {
    std::vector<std::string> f = {"--write_log=" + nats_.urls(), "--write_stream_replicas=3",
                                  "--replica_id=r" + std::to_string(i), "--poll_interval_s=1",
                                  "--max_k=5000", "--snapshot_every_writes=0"};
    f.insert(f.end(), extra.begin(), extra.end());
    return f;
  }
  bool StartReplica(int i, std::vector<std::string> extra = {}) {
    const std::string work = base_ + "/r" + std::to_string(i);  // its port file and logs
    fs::create_directories(work);
    return replicas_[i].Start(RECALL_SERVER_BIN, models_, work, Flags(i, std::move(extra)));
  }
  bool StartAll(std::vector<std::string> extra = {}) {
    std::vector<std::thread> t;
    std::atomic<bool> ok{true};
    for (int i = 0; i < kReplicas; ++i) {
      t.emplace_back([&, i] { ok = StartReplica(i, extra) && ok; });
    }
    for (auto& x : t) x.join();
    return ok;
  }

  recall::v1::UpsertItemsRequest VectorUpsert(const std::vector<int64_t>& ids,
                                              const std::vector<std::vector<float>>& vectors,
                                              const std::string& rid) const {
    recall::v1::UpsertItemsRequest up;
    up.set_request_id(rid);
    for (size_t i = 0; i < ids.size(); ++i) {
      auto* v = up.add_items()->mutable_vector();
      v->set_item_id(ids[i]);
      v->set_model_version(1);
      for (float x : vectors[i]) v->add_values(x);
    }
    return up;
  }

  absl::StatusOr<recall::v1::GetIndexInfoResponse> Info(int i, bool digest = false) {
    recall::v1::GetIndexInfoRequest req;
    req.set_online_state_digest(digest);
    recall::v1::GetIndexInfoResponse resp;
    auto ctx = Deadline(10);
    grpc::Status s = replicas_[i].Recall()->GetIndexInfo(ctx.get(), req, &resp);
    if (!s.ok()) return absl::UnavailableError(s.error_message());
    return resp;
  }

  // Waits until every replica has applied `seq`; false after `timeout`.
  bool WaitApplied(uint64_t seq, std::chrono::seconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      bool all = true;
      for (int i = 0; i < kReplicas && all; ++i) {
        auto info = Info(i);
        all = info.ok() && info->applied_write_sequence() >= seq;
      }
      if (all) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

  // The digest the fold of stream messages 1..last gives (server/state_digest.h), checking
  // on the way that no request id was stored twice. Fills seq_of_request.
  std::string ExpectedDigest(uint64_t last, std::map<std::string, uint64_t>* seq_of_request,
                             std::map<int64_t, uint64_t>* last_write_of_item) {
    auto msgs = ReadStream(nats_.url(0), last);
    EXPECT_EQ(msgs.size(), last) << "the stream should hold 1.." << last;
    struct Entry {
      uint64_t seq;
      bool deleted;
      std::vector<float> v;
    };
    std::map<int64_t, Entry> fold;
    for (const auto& [seq, payload] : msgs) {
      recall::v1::WriteAheadRecord rec;
      if (!rec.ParseFromString(payload)) continue;
      const std::string rid = RequestIdOf(rec);
      if (!rid.empty()) {
        EXPECT_TRUE(seq_of_request->emplace(rid, seq).second)
            << "request " << rid << " stored twice (" << seq << ")";
      }
      if (rec.has_upsert()) {
        for (const auto& u : rec.upsert().items()) {
          fold[u.vector().item_id()] = {seq, false, {u.vector().values().begin(),
                                                     u.vector().values().end()}};
        }
      } else if (rec.has_delete_()) {
        for (int64_t id : rec.delete_().item_ids()) fold[id] = {seq, true, {}};
      }
    }
    server::StateDigest d;
    for (const auto& [id, e] : fold) {
      (*last_write_of_item)[id] = e.seq;
      if (e.deleted) {
        d.AddAbsent(id);
      } else {
        d.AddVector(id, e.v.data(), e.v.size());
      }
    }
    return d.Hex();
  }

  std::string base_, models_;
  int dim_ = 0;
  testing::NatsCluster nats_;
  testing::ServerProcess replicas_[kReplicas];
};

// The replicas' current channels, for writers that outlive replica restarts.
class ReplicaChannels {
 public:
  void Set(int i, std::shared_ptr<grpc::Channel> c) {
    std::lock_guard<std::mutex> l(mu_);
    channels_[i] = std::move(c);
  }
  std::shared_ptr<grpc::Channel> Get(int i) {
    std::lock_guard<std::mutex> l(mu_);
    return channels_[i];
  }

 private:
  std::mutex mu_;
  std::shared_ptr<grpc::Channel> channels_[kReplicas];
};

struct AckedWrite {
  std::string request_id;
  uint64_t seq;
  std::vector<int64_t> ids;
};

TEST_F(ReplicaSetTest, FaultRoundLeavesEveryReplicaEqualToTheFoldOfTheStream) {
  const int events = static_cast<int>(EnvInt("RECALL_FAULT_EVENTS", 3));
  const uint64_t seed = static_cast<uint64_t>(
      EnvInt("RECALL_FAULT_SEED", std::chrono::system_clock::now().time_since_epoch().count() %
                                      1000000007));
  std::cout << "fault round: seed " << seed << ", " << events << " kills" << std::endl;
  RecordProperty("seed", std::to_string(seed));
  std::mt19937_64 rng(seed);
  ASSERT_TRUE(StartAll()) << replicas_[0].log();
  ReplicaChannels channels;
  auto channel_of = [&](int i) {
    return grpc::CreateChannel("127.0.0.1:" + std::to_string(replicas_[i].grpc_port()),
                               grpc::InsecureChannelCredentials());
  };
  for (int i = 0; i < kReplicas; ++i) channels.Set(i, channel_of(i));

  constexpr int kWriters = 2;
  constexpr int kItems = 200;
  std::atomic<bool> stop{false};
  std::vector<std::vector<AckedWrite>> acked(kWriters);
  std::atomic<int64_t> unacked{0}, attempts_failed{0};
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w, wseed = rng()] {
      std::mt19937_64 r(wseed);
      int target = w;
      for (int n = 0; !stop; ++n) {
        const std::string rid = "w" + std::to_string(w) + "-" + std::to_string(n);
        std::vector<int64_t> ids;
        const int count = 1 + static_cast<int>(r() % 3);
        while (static_cast<int>(ids.size()) < count) {
          const int64_t id = kOnlineIdBase + static_cast<int64_t>(r() % kItems);
          if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
        }
        const bool upsert = r() % 10 < 7;
        recall::v1::UpsertItemsRequest up;
        recall::v1::DeleteItemsRequest del;
        if (upsert) {
          std::vector<std::vector<float>> vs;
          for (size_t i = 0; i < ids.size(); ++i) vs.push_back(UnitVector(r, dim_));
          up = VectorUpsert(ids, vs, rid);
        } else {
          for (int64_t id : ids) del.add_item_ids(id);
          del.set_request_id(rid);
        }
        // Retries go round the replicas with the same request id, for up to 30 s.
        const auto give_up = Clock::now() + std::chrono::seconds(30);
        bool ok = false;
        while (!ok && Clock::now() < give_up) {
          target = (target + 1) % kReplicas;
          auto ch = channels.Get(target);
          if (ch == nullptr) continue;  // that replica is down right now
          auto stub = recall::v1::RecallService::NewStub(ch);
          auto ctx = Deadline(3);
          grpc::Status s;
          uint64_t seq = 0;
          if (upsert) {
            recall::v1::UpsertItemsResponse resp;
            s = stub->UpsertItems(ctx.get(), up, &resp);
            seq = resp.write_sequence();
          } else {
            recall::v1::DeleteItemsResponse resp;
            s = stub->DeleteItems(ctx.get(), del, &resp);
            seq = resp.write_sequence();
          }
          if (s.ok()) {
            acked[w].push_back({rid, seq, ids});
            ok = true;
          } else {
            ++attempts_failed;
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
          }
        }
        if (!ok) ++unacked;
      }
    });
  }

  // The schedule: one kill at a time, each followed by a restart; a NATS node only once the
  // stream's peers are current again.
  for (int e = 0; e < events; ++e) {
    std::this_thread::sleep_for(std::chrono::milliseconds(700 + rng() % 1300));
    const bool kill_nats = rng() % 2 == 0;
    const int who = static_cast<int>(rng() % 3);
    const auto down_for = std::chrono::milliseconds(200 + rng() % 1300);
    if (kill_nats) {
      ASSERT_TRUE(nats_.WaitStreamCurrent(kStream, std::chrono::seconds(60)))
          << "event " << e << ": the stream's peers never became current";
      std::cout << "event " << e << ": kill -9 NATS node " << who << " for "
                << down_for.count() << " ms" << std::endl;
      nats_.Kill(who);
      std::this_thread::sleep_for(down_for);
      ASSERT_TRUE(nats_.Restart(who)) << "event " << e << ": see " << nats_.log(who);
    } else {
      std::cout << "event " << e << ": kill -9 replica " << who << " for " << down_for.count()
                << " ms" << std::endl;
      channels.Set(who, nullptr);
      replicas_[who].Stop(SIGKILL);
      std::this_thread::sleep_for(down_for);
      ASSERT_TRUE(StartReplica(who)) << "event " << e << ": see " << replicas_[who].log();
      channels.Set(who, channel_of(who));
    }
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  stop = true;
  for (auto& t : writers) t.join();

  // Everything settles: every replica reaches the stream's last sequence.
  ASSERT_TRUE(nats_.WaitStreamCurrent(kStream, std::chrono::seconds(60)));
  const uint64_t last = StreamBounds(nats_.url(0)).second;
  uint64_t max_acked = 0;
  int64_t n_acked = 0;
  for (const auto& a : acked) {
    for (const auto& x : a) max_acked = std::max(max_acked, x.seq);
    n_acked += static_cast<int64_t>(a.size());
  }
  ASSERT_GE(last, max_acked);
  ASSERT_TRUE(WaitApplied(last, std::chrono::seconds(60)))
      << "the replicas did not all reach sequence " << last;

  std::map<std::string, uint64_t> seq_of_request;
  std::map<int64_t, uint64_t> last_write_of_item;
  const std::string expected = ExpectedDigest(last, &seq_of_request, &last_write_of_item);
  for (int i = 0; i < kReplicas; ++i) {
    auto info = Info(i, /*digest=*/true);
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(info->applied_write_sequence(), last) << "replica " << i;
    EXPECT_EQ(info->online_state_digest(), expected) << "replica " << i << " differs from the "
                                                     << "fold of stream 1.." << last;
  }
  // Every acknowledged write is the stream's record at the sequence it was acknowledged with
  // (a retry answered with the first copy's sequence), and no item's final state is older
  // than an acknowledged write to it.
  for (const auto& a : acked) {
    for (const auto& x : a) {
      auto it = seq_of_request.find(x.request_id);
      ASSERT_NE(it, seq_of_request.end()) << "acknowledged " << x.request_id << " not stored";
      EXPECT_EQ(it->second, x.seq) << x.request_id;
      for (int64_t id : x.ids) EXPECT_GE(last_write_of_item[id], x.seq) << x.request_id;
    }
  }
  const std::string report =
      "seed " + std::to_string(seed) + ": " + std::to_string(n_acked) +
      " acknowledged writes checked, " + std::to_string(unacked.load()) +
      " given up, " + std::to_string(attempts_failed.load()) + " failed attempts retried; " +
      "stream 1.." + std::to_string(last) + "; digest " + expected.substr(0, 12);
  std::cout << report << std::endl;
  RecordProperty("report", report);
  EXPECT_GT(n_acked, 0);
}

TEST_F(ReplicaSetTest, ReadYourWritesOnAnotherReplicaAfterADelete) {
  const int tries = static_cast<int>(EnvInt("RECALL_RYW_TRIES", 200));
  ASSERT_TRUE(StartAll()) << replicas_[0].log();
  // User U's own embedding as an item vector is U's best match (inner product 1).
  recall::v1::RecallRequest probe;
  probe.mutable_user()->set_user_id(7);
  probe.set_k(10);
  probe.set_return_user_embedding(true);
  recall::v1::RecallResponse pr;
  {
    auto ctx = Deadline();
    ASSERT_TRUE(replicas_[0].Recall()->Recall(ctx.get(), probe, &pr).ok());
  }
  const std::vector<float> u(pr.user_embedding().begin(), pr.user_embedding().end());
  const int64_t x = kOnlineIdBase + 7;
  int misses = 0, stale_before = 0;
  double wait_sum = 0;
  for (int t = 0; t < tries; ++t) {
    const int a = t % kReplicas, b = (t + 1) % kReplicas;
    recall::v1::UpsertItemsResponse ur;
    {
      auto ctx = Deadline();
      auto s = replicas_[a].Recall()->UpsertItems(
          ctx.get(), VectorUpsert({x}, {u}, "ryw-up-" + std::to_string(t)), &ur);
      ASSERT_TRUE(s.ok()) << s.error_message();
    }
    recall::v1::RecallRequest req = probe;
    req.set_return_user_embedding(false);
    req.set_min_write_sequence(ur.write_sequence());
    recall::v1::RecallResponse resp;
    {
      auto ctx = Deadline();
      ASSERT_TRUE(replicas_[b].Recall()->Recall(ctx.get(), req, &resp).ok());
    }
    ASSERT_FALSE(resp.items().empty());
    ASSERT_EQ(resp.items(0).item_id(), x) << "try " << t << ": X is not U's top item on B";
    // Delete X through A; B must never answer with X once it reports the delete applied.
    recall::v1::DeleteItemsRequest del;
    del.add_item_ids(x);
    del.set_request_id("ryw-del-" + std::to_string(t));
    recall::v1::DeleteItemsResponse dr;
    {
      auto ctx = Deadline();
      auto s = replicas_[a].Recall()->DeleteItems(ctx.get(), del, &dr);
      ASSERT_TRUE(s.ok()) << s.error_message();
    }
    req.set_min_write_sequence(dr.write_sequence());
    const auto t0 = Clock::now();
    {
      auto ctx = Deadline();
      grpc::Status s = replicas_[b].Recall()->Recall(ctx.get(), req, &resp);
      ASSERT_TRUE(s.ok()) << s.error_message();
    }
    wait_sum += Seconds(Clock::now() - t0);
    EXPECT_GE(resp.applied_write_sequence(), dr.write_sequence());
    for (const auto& it : resp.items()) {
      if (it.item_id() == x) ++misses;
    }
    // Without the minimum, B may still show X: count how often it would have (informative).
    if (t % 10 == 0) {
      recall::v1::UpsertItemsResponse ur2;
      auto ctx = Deadline();
      replicas_[a].Recall()->UpsertItems(
          ctx.get(), VectorUpsert({x}, {u}, "ryw-up2-" + std::to_string(t)), &ur2);
      recall::v1::RecallRequest plain = probe;
      plain.set_return_user_embedding(false);
      recall::v1::DeleteItemsRequest d2 = del;
      d2.set_request_id("ryw-del2-" + std::to_string(t));
      auto c2 = Deadline();
      replicas_[a].Recall()->DeleteItems(c2.get(), d2, &dr);
      auto c3 = Deadline();
      if (replicas_[b].Recall()->Recall(c3.get(), plain, &resp).ok() && !resp.items().empty() &&
          resp.items(0).item_id() == x) {
        ++stale_before;
      }
    }
  }
  std::cout << tries << " read-your-writes tries, " << misses << " misses; mean Recall time "
            << 1e3 * wait_sum / tries << " ms; without min_write_sequence B still showed the "
            << "deleted item " << stale_before << " of " << (tries + 9) / 10 << " times"
            << std::endl;
  EXPECT_EQ(misses, 0);

  // A minimum the replica cannot reach by the deadline: UNAVAILABLE naming both sequences.
  recall::v1::RecallRequest far = probe;
  far.set_min_write_sequence(1000000000);
  auto ctx = Deadline();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  recall::v1::RecallResponse resp;
  grpc::Status s = replicas_[1].Recall()->Recall(ctx.get(), far, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  EXPECT_NE(s.error_message().find("1000000000"), std::string::npos) << s.error_message();
}

// Every replica's ListVersions, as (serving, pinned).
std::pair<int64_t, int64_t> Versions(testing::ServerProcess& r) {
  recall::v1::ListVersionsResponse lv;
  auto ctx = Deadline(5);
  if (!r.Training()->ListVersions(ctx.get(), {}, &lv).ok()) return {-1, -1};
  return {lv.serving_version(), lv.pinned_version()};
}

TEST_F(ReplicaSetTest, PruningSparesVersionsOthersServeAndAPinReachesEveryReplica) {
  const int rounds = static_cast<int>(EnvInt("RECALL_PIN_ROUNDS", 2));
  // Replica 2 never polls, so it keeps serving version 1 while the others move on.
  const std::vector<std::string> keep2 = {"--keep_versions=2"};
  ASSERT_TRUE(StartReplica(0, keep2) && StartReplica(1, keep2) &&
              StartReplica(2, {"--keep_versions=2", "--poll_interval_s=0"}))
      << replicas_[0].log();
  for (int64_t v : {2, 3, 4}) Publish(v);
  for (int i = 0; i < 2; ++i) {  // swap now instead of at the next poll; pruning follows a swap
    recall::v1::ListVersionsResponse after;
    auto ctx = Deadline();
    ASSERT_TRUE(replicas_[i].Training()->ReloadVersions(ctx.get(), {}, &after).ok());
    EXPECT_EQ(after.serving_version(), 4) << i;
  }
  // Keeping the newest 2 would delete 1 and 2; replica 2 still serves 1 (the registry says so).
  EXPECT_TRUE(fs::exists(models_ + "/1")) << "a version another replica serves was pruned";
  EXPECT_FALSE(fs::exists(models_ + "/2")) << "pruning did not run";
  EXPECT_EQ(Versions(replicas_[2]).first, 1);
  recall::v1::ListVersionsResponse lv;
  {
    auto ctx = Deadline();
    grpc::Status s = replicas_[0].Training()->ListVersions(ctx.get(), {}, &lv);
    ASSERT_TRUE(s.ok()) << s.error_code() << " " << s.error_message();
  }
  EXPECT_EQ(lv.replicas_size(), kReplicas);  // the registry lists every replica

  // A pin set on one replica reaches every replica, the non-polling one included.
  std::vector<double> convergence;
  for (int round = 0; round < rounds; ++round) {
    const int64_t target = round % 2 == 0 ? 3 : 4;
    recall::v1::SetServingVersionRequest req;
    req.set_version(target);
    recall::v1::SetServingVersionResponse resp;
    auto ctx = Deadline(60);
    const auto t0 = Clock::now();
    grpc::Status s =
        replicas_[round % kReplicas].Training()->SetServingVersion(ctx.get(), req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    bool all = false;
    while (!all && Clock::now() - t0 < std::chrono::seconds(60)) {
      all = true;
      for (int i = 0; i < kReplicas; ++i) {
        all &= Versions(replicas_[i]) == std::make_pair(target, target);
      }
      if (!all) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ASSERT_TRUE(all) << "round " << round << ": not every replica serves pin " << target
                     << " within 60 s";
    convergence.push_back(Seconds(Clock::now() - t0));
  }
  std::sort(convergence.begin(), convergence.end());
  std::cout << "pin convergence over " << rounds << " rounds: p50 "
            << 1e3 * convergence[convergence.size() / 2] << " ms, max "
            << 1e3 * convergence.back() << " ms" << std::endl;
  // The last pin holds for a replica that starts afterwards.
  const int64_t pinned = Versions(replicas_[0]).second;
  replicas_[2].Stop(SIGKILL);
  ASSERT_TRUE(StartReplica(2, keep2));
  EXPECT_EQ(Versions(replicas_[2]), std::make_pair(pinned, pinned));
}

TEST_F(ReplicaSetTest, WithNatsDownWritesFailFastRecallServesAndWritesResumeWhenItReturns) {
  ASSERT_TRUE(StartAll()) << replicas_[0].log();
  const std::vector<float> v(dim_, 1.0f / std::sqrt(static_cast<float>(dim_)));
  {
    recall::v1::UpsertItemsResponse r;
    auto ctx = Deadline();
    grpc::Status s =
        replicas_[0].Recall()->UpsertItems(ctx.get(), VectorUpsert({kOnlineIdBase}, {v}, "before"), &r);
    ASSERT_TRUE(s.ok()) << s.error_message();
    // Every replica has applied it before NATS goes: a replica that lags (a busy machine) would
    // otherwise keep it unapplied through the outage, and the check below is of Recall, not lag.
    ASSERT_TRUE(WaitApplied(r.write_sequence(), std::chrono::seconds(30)));
  }
  for (int n = 0; n < 3; ++n) nats_.Kill(n);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  for (int i = 0; i < kReplicas; ++i) {
    recall::v1::UpsertItemsResponse r;
    auto ctx = Deadline();
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    const auto t0 = Clock::now();
    grpc::Status s = replicas_[i].Recall()->UpsertItems(
        ctx.get(), VectorUpsert({kOnlineIdBase + 1}, {v}, "during"), &r);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
    // UNAVAILABLE (not the caller's DEADLINE_EXCEEDED) means it failed inside the deadline.
    EXPECT_NE(s.error_message().find("NATS"), std::string::npos) << s.error_message();
    std::cout << "replica " << i << ": write refused in " << 1e3 * Seconds(Clock::now() - t0)
              << " ms with NATS down" << std::endl;
    // Recall keeps answering, with the write made before the outage.
    recall::v1::RecallRequest req;
    req.mutable_user()->set_user_id(3);
    req.set_k(5000);
    recall::v1::RecallResponse resp;
    auto rc = Deadline(5);
    ASSERT_TRUE(replicas_[i].Recall()->Recall(rc.get(), req, &resp).ok()) << i;
    bool found = false;
    for (const auto& it : resp.items()) found |= it.item_id() == kOnlineIdBase;
    EXPECT_TRUE(found) << "replica " << i;
  }
  ASSERT_TRUE(nats_.RestartAll()) << nats_.log(0);
  const auto back = Clock::now();
  for (int i = 0; i < kReplicas; ++i) {
    grpc::Status s;
    do {
      recall::v1::UpsertItemsResponse r;
      auto ctx = Deadline(5);
      s = replicas_[i].Recall()->UpsertItems(
          ctx.get(), VectorUpsert({kOnlineIdBase + 2 + i}, {v}, "after" + std::to_string(i)), &r);
      if (!s.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    } while (!s.ok() && Clock::now() - back < std::chrono::seconds(30));
    ASSERT_TRUE(s.ok()) << "replica " << i << " still refuses writes 30 s after NATS returned: "
                        << s.error_message();
  }
  std::cout << "writes accepted again " << Seconds(Clock::now() - back)
            << " s after the NATS cluster was back" << std::endl;
}

TEST_F(ReplicaSetTest, ALateReplicaCatchesUpFromASnapshotAndTheTailOfAPurgedStream) {
  const int64_t writes = EnvInt("RECALL_CATCHUP_WRITES", 3000);
  // Checkpoints land inside the run, so the late replica needs a snapshot and a tail.
  const int64_t every = std::max<int64_t>(500, writes * 2 / 7);
  const std::vector<std::string> extra = {"--snapshot_every_writes=" + std::to_string(every),
                                          "--keep_snapshots=1"};
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(StartReplica(i, extra)) << replicas_[i].log();
  const auto t_write = Clock::now();
  std::atomic<int64_t> next{0}, failed{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < 4; ++w) {
    threads.emplace_back([&, w] {
      std::mt19937_64 r(w);
      auto stub = replicas_[w % 2].Recall();
      for (int64_t n; (n = next++) < writes;) {
        const int64_t id = kOnlineIdBase + static_cast<int64_t>(r() % 5000);
        grpc::Status s;
        auto ctx = Deadline(10);
        if (r() % 4 == 0) {
          recall::v1::DeleteItemsRequest d;
          d.add_item_ids(id);
          recall::v1::DeleteItemsResponse resp;
          s = stub->DeleteItems(ctx.get(), d, &resp);
        } else {
          recall::v1::UpsertItemsResponse resp;
          s = stub->UpsertItems(ctx.get(), VectorUpsert({id}, {UnitVector(r, dim_)}, ""), &resp);
        }
        if (!s.ok()) ++failed;
      }
    });
  }
  for (auto& t : threads) t.join();
  const double write_sec = Seconds(Clock::now() - t_write);
  ASSERT_EQ(failed.load(), 0);
  const uint64_t last = StreamBounds(nats_.url(0)).second;
  ASSERT_GE(last, static_cast<uint64_t>(writes));
  const uint64_t newest = last / every * every;
  const std::string snapshot = models_ + "/write_snapshots/" + kStream + "/" +
                               std::to_string(newest) + ".snapshot";
  // Replicas 0 and 1 checkpoint at every multiple of `every` and purge what the kept one
  // covers: the stream starts right after the newest snapshot.
  uint64_t first = 0;
  for (int i = 0; i < 100 && first != newest + 1; ++i) {
    first = StreamBounds(nats_.url(0)).first;
    if (first != newest + 1) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(first, newest + 1) << "the stream was not purged up to snapshot " << newest;
  ASSERT_TRUE(fs::exists(snapshot));
  const uint64_t snapshot_bytes = fs::file_size(snapshot);
  const auto t0 = Clock::now();
  ASSERT_TRUE(StartReplica(2, extra)) << replicas_[2].log();  // returns once caught up
  const double catch_up = Seconds(Clock::now() - t0);
  ASSERT_TRUE(WaitApplied(last, std::chrono::seconds(60)));
  auto late = Info(2, true);
  auto early = Info(0, true);
  ASSERT_TRUE(late.ok() && early.ok());
  EXPECT_EQ(late->online_state_digest(), early->online_state_digest());
  std::ifstream log(replicas_[2].log());
  const std::string text((std::istreambuf_iterator<char>(log)), {});
  EXPECT_NE(text.find("loaded write snapshot"), std::string::npos) << "see " << replicas_[2].log();
  std::cout << writes << " writes in " << write_sec << " s; stream " << first << ".." << last
            << " after purging; newest snapshot " << newest << " (" << snapshot_bytes
            << " bytes, " << early->online_items() << " items); the late replica served after "
            << catch_up << " s (start, snapshot and tail)" << std::endl;
}

TEST_F(ReplicaSetTest, AMessageInvalidEverywhereIsSkippedAlikeAndAFullStreamRefusesWrites) {
  ASSERT_TRUE(StartAll({"--write_stream_max_writes=40"})) << replicas_[0].log();
  const std::vector<float> v(dim_, 1.0f / std::sqrt(static_cast<float>(dim_)));
  {
    recall::v1::UpsertItemsResponse r;
    auto ctx = Deadline();
    ASSERT_TRUE(replicas_[0].Recall()->UpsertItems(
        ctx.get(), VectorUpsert({kOnlineIdBase - 1}, {v}, "first"), &r).ok());
  }
  // Foreign publishers put two writes no replica can apply into the stream.
  natsConnection* nc = nullptr;
  ASSERT_EQ(natsConnection_ConnectTo(&nc, nats_.url(1).c_str()), NATS_OK);
  jsCtx* js = nullptr;
  natsConnection_JetStream(&js, nc, nullptr);
  recall::v1::WriteAheadRecord bad;
  bad.mutable_delete_()->add_item_ids(-1);  // the reserved id
  const std::string garbage = "\xff\x01not a record";
  for (const std::string& payload : {garbage, bad.SerializeAsString()}) {
    jsPubAck* ack = nullptr;
    jsErrCode je;
    const natsStatus st = js_Publish(&ack, js, "recall.writes.recall_writes", payload.data(),
                                     static_cast<int>(payload.size()), nullptr, &je);
    ASSERT_EQ(st, NATS_OK) << natsStatus_GetText(st) << " " << je;
    jsPubAck_Destroy(ack);
  }
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  // Then good writes, until the stream is full.
  grpc::Status s;
  int accepted = 0;
  for (int n = 0; n < 60 && s.ok(); ++n) {
    recall::v1::UpsertItemsResponse r;
    auto ctx = Deadline();
    s = replicas_[n % kReplicas].Recall()->UpsertItems(
        ctx.get(), VectorUpsert({kOnlineIdBase + n}, {v}, "fill" + std::to_string(n)), &r);
    if (s.ok()) ++accepted;
  }
  EXPECT_EQ(accepted, 37);  // 40 - the first write - the two foreign messages
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  ASSERT_TRUE(WaitApplied(40, std::chrono::seconds(30)));
  std::string digest;
  for (int i = 0; i < kReplicas; ++i) {
    auto info = Info(i, true);
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->applied_write_sequence(), 40u);
    if (i == 0) digest = info->online_state_digest();
    EXPECT_EQ(info->online_state_digest(), digest) << "replica " << i;
    const std::string m = testing::ScrapeMetrics(replicas_[i].metrics_port());
    EXPECT_NE(m.find("recall_write_log_rejected_total{reason=\"invalid\"} 2"), std::string::npos)
        << "replica " << i;
  }
}

}  // namespace
}  // namespace recall
