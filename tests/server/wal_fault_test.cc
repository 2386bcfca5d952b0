// Fault tests of durable online writes: a child recall-server acknowledges upserts and deletes,
// is killed with SIGKILL at a random moment, restarts, and every acknowledged write is there.
// Then the log's tail is truncated / corrupted for real, and a new model version is served:
// acknowledged writes survive both.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include "tests/server/server_process.h"
#include "tests/server/small_model.h"

namespace recall {
namespace {
namespace fs = std::filesystem;
using testing::Deadline;

constexpr int64_t kFirstOnlineId = 100000;
constexpr int64_t kOnlineIds = 1500;  // online ids per writer thread
constexpr int kWriters = 2;

class WalFaultTest : public testing::SmallModelSuite<WalFaultTest> {
 public:
  static constexpr char kTempName[] = "recall_wal_fault";

 protected:

  void SetUp() override {
    base_ = FreshTestDir();
    Publish(1);
    for (int64_t i = 0; i < dataset_->num_items; ++i) trained_.insert(i);
  }
  void Publish(int64_t version) {
    auto p = model_->Export(base_, "Flat", version);
    ASSERT_TRUE(p.ok()) << p.status();
  }
  bool StartServer() {
    return server_.Start(RECALL_SERVER_BIN, base_, *dir_,
                         {"--poll_interval_s=0", "--max_k=5000", "--wal_sync=always"});
  }

  // Every live item id, read back through Recall with k above the index size (Flat index).
  std::optional<std::set<int64_t>> LiveIds(int64_t* version = nullptr) {
    return testing::LiveIds(server_, version);
  }

  static recall::v1::UpsertItemsRequest FeatureUpsert(int64_t id) {
    recall::v1::UpsertItemsRequest up;
    auto* f = up.add_items()->mutable_features();
    f->set_item_id(id);
    (*f->mutable_categorical())["category"] = "c" + std::to_string(id % 6);
    return up;
  }

  std::string base_;
  std::set<int64_t> trained_;
  testing::ServerProcess server_;
};


// What one writer knows: the last acknowledged state of each of its ids (true = live), and the
// one write that was in flight when the server died (either outcome is allowed for it).
struct WriterLog {
  std::map<int64_t, bool> acked;
  std::optional<std::pair<int64_t, bool>> in_flight;
  int64_t acks = 0;
};

TEST_F(WalFaultTest, AcknowledgedWritesSurviveSigkillAtRandomMoments) {
  std::mt19937_64 rng(20261202);
  std::vector<WriterLog> logs(kWriters);
  int64_t total_acks = 0;
  for (int round = 0; round < 10; ++round) {
    ASSERT_TRUE(StartServer()) << "round " << round << "; see " << server_.log();
    // Every acknowledged write so far is there after the restart.
    auto live = LiveIds();
    ASSERT_TRUE(live.has_value());
    for (int w = 0; w < kWriters; ++w) {
      for (const auto& [id, is_live] : logs[w].acked) {
        if (logs[w].in_flight && logs[w].in_flight->first == id) continue;
        EXPECT_EQ(live->count(id) == 1, is_live) << "round " << round << " id " << id;
      }
      if (logs[w].in_flight) {  // settle the unacknowledged write by what the server has
        logs[w].acked[logs[w].in_flight->first] = live->count(logs[w].in_flight->first) == 1;
        logs[w].in_flight.reset();
      }
    }
    for (int64_t id : trained_) {
      bool deleted = false;
      for (auto& l : logs) deleted |= l.acked.count(id) && !l.acked[id];
      EXPECT_EQ(live->count(id) == 1, !deleted) << "trained id " << id;
    }

    std::atomic<bool> stop{false};
    std::vector<std::thread> writers;
    for (int w = 0; w < kWriters; ++w) {
      writers.emplace_back([&, w, seed = rng()] {
        std::mt19937_64 r(seed);
        auto stub = server_.Recall();
        WriterLog& log = logs[w];
        while (!stop) {
          // Mostly upserts of this writer's online ids; some deletes of them and of trained
          // items (trained ids are split between writers by parity).
          int64_t id;
          const bool upsert = r() % 4 != 0;
          if (r() % 5 == 0) {
            id = static_cast<int64_t>(r() % (dataset_->num_items / 2)) * 2 + w;
          } else {
            id = kFirstOnlineId + w * kOnlineIds + static_cast<int64_t>(r() % kOnlineIds);
          }
          log.in_flight = std::make_pair(id, upsert);
          auto ctx = Deadline(10);
          grpc::Status s;
          if (upsert) {
            recall::v1::UpsertItemsResponse resp;
            s = stub->UpsertItems(ctx.get(), FeatureUpsert(id), &resp);
          } else {
            recall::v1::DeleteItemsRequest del;
            del.add_item_ids(id);
            recall::v1::DeleteItemsResponse resp;
            s = stub->DeleteItems(ctx.get(), del, &resp);
          }
          if (!s.ok()) break;  // the server is gone: this write stays "in flight"
          log.acked[id] = upsert;
          log.in_flight.reset();
          ++log.acks;
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200 + rng() % 1300));
    EXPECT_EQ(server_.Stop(SIGKILL), 128 + SIGKILL);
    stop = true;
    for (auto& t : writers) t.join();
  }
  for (const auto& l : logs) total_acks += l.acks;
  EXPECT_GT(total_acks, 1000) << "too few writes acknowledged to mean much";
  std::printf("acknowledged writes over 10 kills: %lld\n", static_cast<long long>(total_acks));

  // A new model version (a retrain) keeps every acknowledged write: feature upserts are
  // re-embedded by its item tower and deletes re-applied.
  ASSERT_TRUE(StartServer());
  auto before = LiveIds();
  ASSERT_TRUE(before.has_value());
  for (auto& l : logs) {
    if (l.in_flight) l.acked[l.in_flight->first] = before->count(l.in_flight->first) == 1;
  }
  Publish(2);
  recall::v1::ListVersionsResponse list;
  {
    auto ctx = Deadline();
    ASSERT_TRUE(server_.Training()->ReloadVersions(ctx.get(), {}, &list).ok());
  }
  int64_t version = 0;
  auto after = LiveIds(&version);
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ(version, 2);
  EXPECT_EQ(*after, *before);
  for (const auto& l : logs) {
    for (const auto& [id, is_live] : l.acked) EXPECT_EQ(after->count(id) == 1, is_live) << id;
  }
  EXPECT_EQ(server_.Stop(), 0);
}

// Writes k feature upserts of fresh ids through a server that then stops cleanly.
std::vector<int64_t> WriteAndStop(testing::ServerProcess& server, int k) {
  std::vector<int64_t> ids;
  for (int i = 0; i < k; ++i) {
    const int64_t id = 700000 + i;
    recall::v1::UpsertItemsResponse resp;
    auto ctx = Deadline();
    recall::v1::UpsertItemsRequest up;
    auto* f = up.add_items()->mutable_features();
    f->set_item_id(id);
    (*f->mutable_categorical())["category"] = "c1";
    EXPECT_TRUE(server.Recall()->UpsertItems(ctx.get(), up, &resp).ok());
    ids.push_back(id);
  }
  EXPECT_EQ(server.Stop(), 0);
  return ids;
}

TEST_F(WalFaultTest, TruncatedOrCorruptedTailRecoversEveryCompleteRecordBeforeIt) {
  const std::string wal = base_ + "/online_writes.wal";
  for (const std::string damage : {"truncate", "corrupt", "garbage"}) {
    SCOPED_TRACE(damage);
    fs::remove(wal);
    fs::remove_all(wal + ".snapshots");  // the log's checkpoints: part of the same history
    ASSERT_TRUE(StartServer());
    std::vector<int64_t> ids = WriteAndStop(server_, 20);
    const auto size = fs::file_size(wal);
    if (damage == "truncate") {
      fs::resize_file(wal, size - 3);  // cuts into the last record
    } else if (damage == "corrupt") {
      std::fstream f(wal, std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(static_cast<std::streamoff>(size - 2));
      char c;
      f.read(&c, 1);
      f.seekp(static_cast<std::streamoff>(size - 2));
      c ^= 0x5a;
      f.write(&c, 1);
    } else {
      std::ofstream(wal, std::ios::app | std::ios::binary) << std::string("\x13\x37torn", 6);
    }
    ASSERT_TRUE(StartServer()) << server_.log();
    auto live = LiveIds();
    ASSERT_TRUE(live.has_value());
    const size_t complete = damage == "garbage" ? ids.size() : ids.size() - 1;
    for (size_t i = 0; i < ids.size(); ++i) {
      EXPECT_EQ(live->count(ids[i]) == 1, i < complete) << "id " << ids[i];
    }
    // The damaged tail was cut off: new writes append cleanly and survive another restart.
    std::vector<int64_t> more;
    {
      recall::v1::UpsertItemsResponse resp;
      auto ctx = Deadline();
      recall::v1::UpsertItemsRequest up = FeatureUpsert(777777);
      ASSERT_TRUE(server_.Recall()->UpsertItems(ctx.get(), up, &resp).ok());
    }
    EXPECT_EQ(server_.Stop(SIGKILL), 128 + SIGKILL);
    ASSERT_TRUE(StartServer());
    live = LiveIds();
    ASSERT_TRUE(live.has_value());
    EXPECT_EQ(live->count(777777), 1u);
    for (size_t i = 0; i < complete; ++i) EXPECT_EQ(live->count(ids[i]), 1u) << ids[i];
    EXPECT_EQ(server_.Stop(), 0);
  }
}

}  // namespace
}  // namespace recall
