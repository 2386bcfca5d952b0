// Unit tests of the write log's parts: LocalWriteLog (sequences that survive restarts and
// checkpoints, de-duplication, in-order delivery under concurrent appends), FoldedWrites and
// its snapshot records, WriteSnapshots, and JetStreamWriteLog against a real nats-server on
// loopback (de-duplication, purge, discard=new, NATS down, a recreated stream).
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "recall/v1/wal.pb.h"
#include "server/folded_writes.h"
#include "server/jetstream_write_log.h"
#include "server/local_write_log.h"
#include "server/nats_connection.h"
#include "server/wal_import.h"
#include "server/write_snapshots.h"
#include "tests/testing/nats_cluster.h"

namespace recall::server {
namespace {
namespace fs = std::filesystem;

std::string TempDir(const std::string& name) {
  const fs::path p = fs::temp_directory_path() /
                     (name + "_" + std::to_string(::getpid()) + "_" +
                      ::testing::UnitTest::GetInstance()->current_test_info()->name());
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

// A logged delete of `id` with request id `rid` (the payload every log carries).
std::string DeletePayload(int64_t id, const std::string& rid = "") {
  recall::v1::WriteAheadRecord rec;
  rec.mutable_delete_()->add_item_ids(id);
  rec.mutable_delete_()->set_request_id(rid);
  return rec.SerializeAsString();
}

int64_t DeletedId(const std::string& payload) {
  recall::v1::WriteAheadRecord rec;
  EXPECT_TRUE(rec.ParseFromString(payload));
  return rec.delete_().item_ids(0);
}

std::vector<LogRecord> ReadAll(WriteLog& log, uint64_t after) {
  std::vector<LogRecord> out;
  for (;;) {
    auto r = log.Read(after, 1000, absl::Milliseconds(50));
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok() || r->empty()) return out;
    after = r->back().seq;
    for (auto& x : *r) out.push_back(std::move(x));
  }
}

// Records after `after` until `n` have come or `timeout` has passed: Read may return before
// every stored record has reached the reader (its contract), so one Read proves nothing about
// how many there are.
std::vector<LogRecord> ReadAtLeast(WriteLog& log, uint64_t after, size_t n,
                                   absl::Duration timeout) {
  std::vector<LogRecord> out;
  const absl::Time deadline = absl::Now() + timeout;
  while (out.size() < n && absl::Now() < deadline) {
    auto r = log.Read(after, 1000, absl::Milliseconds(200));
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return out;
    if (r->empty()) continue;
    after = r->back().seq;
    for (auto& x : *r) out.push_back(std::move(x));
  }
  return out;
}

std::unique_ptr<LocalWriteLog> OpenLocal(const std::string& path) {
  LocalWriteLog::Options o;
  o.path = path;
  o.sync = WalSyncPolicy::kNone;
  auto log = LocalWriteLog::Open(o, nullptr);
  EXPECT_TRUE(log.ok()) << log.status();
  return log.ok() ? *std::move(log) : nullptr;
}

TEST(LocalWriteLogTest, SequencesSurviveRestartsAndCheckpoints) {
  const std::string path = TempDir("local_log") + "/w.wal";
  {
    auto log = OpenLocal(path);
    for (int i = 1; i <= 5; ++i) {
      auto a = log->Append(DeletePayload(i), {});
      ASSERT_TRUE(a.ok());
      EXPECT_EQ(a->seq, static_cast<uint64_t>(i));
    }
    auto all = ReadAll(*log, 0);
    ASSERT_EQ(all.size(), 5u);
    for (int i = 0; i < 5; ++i) EXPECT_EQ(DeletedId(all[i].payload), i + 1);
    // A checkpoint covers 1..3: the log keeps 4 and 5 and numbers on from 6.
    ASSERT_TRUE(log->DiscardBefore(4).ok());
    auto a = log->Append(DeletePayload(6), {});
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(a->seq, 6u);
    EXPECT_EQ(*log->LastSequence(), 6u);
  }
  auto log = OpenLocal(path);
  EXPECT_EQ(*log->LastSequence(), 6u);
  auto all = ReadAll(*log, 3);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].seq, 4u);
  EXPECT_EQ(DeletedId(all[0].payload), 4);
  EXPECT_EQ(all[2].seq, 6u);
  EXPECT_EQ(log->Append(DeletePayload(7), {})->seq, 7u);
  // A reader behind what a checkpoint let the log discard is told so.
  ASSERT_TRUE(log->DiscardBefore(7).ok());
  log.reset();
  log = OpenLocal(path);
  EXPECT_EQ(log->Read(2, 10, absl::Milliseconds(10)).status().code(),
            absl::StatusCode::kOutOfRange);
  auto r = log->Read(6, 10, absl::Milliseconds(10));
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ((*r)[0].seq, 7u);
}

TEST(LocalWriteLogTest, ARetriedRequestIdIsLoggedOnce) {
  auto log = OpenLocal(TempDir("local_dedup") + "/w.wal");
  auto a = log->Append(DeletePayload(1, "r1"), {"r1"});
  auto b = log->Append(DeletePayload(2, "r2"), {"r2"});
  auto again = log->Append(DeletePayload(1, "r1"), {"r1"});
  ASSERT_TRUE(a.ok() && b.ok() && again.ok());
  EXPECT_FALSE(a->duplicate);
  EXPECT_TRUE(again->duplicate);
  EXPECT_EQ(again->seq, a->seq);
  EXPECT_EQ(ReadAll(*log, 0).size(), 2u);
}

TEST(LocalWriteLogTest, ConcurrentAppendsAreReadInSequenceOrderWithoutGaps) {
  auto log = OpenLocal(TempDir("local_order") + "/w.wal");
  std::vector<std::thread> threads;
  std::atomic<int> next{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i; (i = next++) < 800;) ASSERT_TRUE(log->Append(DeletePayload(i), {}).ok());
    });
  }
  std::vector<LogRecord> got;
  while (got.size() < 800) {
    auto r = log->Read(got.empty() ? 0 : got.back().seq, 64, absl::Seconds(5));
    ASSERT_TRUE(r.ok());
    ASSERT_FALSE(r->empty()) << "stalled after " << got.size();
    for (auto& x : *r) got.push_back(std::move(x));
  }
  for (auto& t : threads) t.join();
  std::set<int64_t> ids;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].seq, i + 1);
    ids.insert(DeletedId(got[i].payload));
  }
  EXPECT_EQ(ids.size(), 800u);
}

recall::v1::WriteAheadRecord VectorUpsert(int64_t id, float x) {
  recall::v1::WriteAheadRecord rec;
  auto* v = rec.mutable_upsert()->add_items()->mutable_vector();
  v->set_item_id(id);
  v->add_values(x);
  v->set_model_version(1);
  return rec;
}

TEST(FoldedWritesTest, KeepsTheLastWritePerItemAndRoundTripsThroughSnapshotRecords) {
  FoldedWrites f;
  f.Fold(1, VectorUpsert(5, 0.5f), nullptr);
  f.Fold(2, VectorUpsert(9, 0.9f), nullptr);
  recall::v1::WriteAheadRecord del;
  del.mutable_delete_()->add_item_ids(5);
  std::vector<int64_t> touched;
  f.Fold(3, del, &touched);
  f.Skip(4);
  EXPECT_EQ(touched, std::vector<int64_t>{5});
  EXPECT_EQ(f.covered(), 4u);
  ASSERT_NE(f.Find(5), nullptr);
  EXPECT_TRUE(f.Find(5)->deleted);
  EXPECT_EQ(f.Find(5)->seq, 3u);
  EXPECT_EQ(f.Since(2).size(), 1u);

  const auto records = f.ToSnapshotRecords("test log", 1);
  EXPECT_EQ(records.size(), 3u);  // header + one chunk per item
  auto back = FoldedWrites::FromSnapshotRecords(records);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->covered(), 4u);
  EXPECT_EQ(back->ToSnapshotRecords("test log", 1), records);  // deterministic bytes
  EXPECT_FALSE(back->Find(9)->deleted);
  EXPECT_FLOAT_EQ(back->Find(9)->upsert.vector().values(0), 0.9f);

  auto short_of_items = records;
  short_of_items.pop_back();
  EXPECT_EQ(FoldedWrites::FromSnapshotRecords(short_of_items).status().code(),
            absl::StatusCode::kDataLoss);
}

TEST(WriteSnapshotsTest, WritesAtomicallyListsPrunesAndRefusesDamage) {
  WriteSnapshots snaps(TempDir("snapshots") + "/s");
  FoldedWrites f;
  f.Fold(10, VectorUpsert(1, 1.0f), nullptr);
  for (uint64_t seq : {10, 20, 30}) ASSERT_TRUE(snaps.Write(seq, f.ToSnapshotRecords("x")).ok());
  EXPECT_EQ(snaps.List(), (std::vector<uint64_t>{10, 20, 30}));
  EXPECT_EQ(snaps.Prune(2), 20u);
  EXPECT_EQ(snaps.List(), (std::vector<uint64_t>{20, 30}));
  auto r = snaps.Read(30);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(FoldedWrites::FromSnapshotRecords(*r).ok());
  fs::resize_file(snaps.PathOf(30), fs::file_size(snaps.PathOf(30)) - 2);
  EXPECT_EQ(snaps.Read(30).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(snaps.Read(40).status().code(), absl::StatusCode::kNotFound);
}

class JetStreamWriteLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (testing::NatsServerBinary().empty()) GTEST_SKIP() << "nats-server is not installed";
    dir_ = TempDir("js_log");
    ASSERT_TRUE(nats_.Start(1, dir_)) << "nats-server did not start; see " << dir_;
    NatsConnection::Options o;
    o.servers = {nats_.url(0)};
    o.request_timeout = absl::Seconds(2);
    auto c = NatsConnection::Connect(o);
    ASSERT_TRUE(c.ok()) << c.status();
    conn_ = *std::move(c);
    for (int i = 0; i < 100 && !conn_->connected(); ++i) absl::SleepFor(absl::Milliseconds(20));
  }
  void TearDown() override {
    log_.reset();
    conn_.reset();
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  JetStreamWriteLog& Open(int64_t max_records = -1) {
    JetStreamWriteLog::Options o;
    o.connection = conn_.get();
    o.stream = "TEST_WRITES";
    o.max_records = max_records;
    o.publish_timeout = absl::Seconds(2);
    auto log = JetStreamWriteLog::Open(o);
    EXPECT_TRUE(log.ok()) << log.status();
    log_ = *std::move(log);
    return *log_;
  }

  std::string dir_;
  testing::NatsCluster nats_;
  std::unique_ptr<NatsConnection> conn_;
  std::unique_ptr<JetStreamWriteLog> log_;
};

TEST_F(JetStreamWriteLogTest, AppendsInOrderDeduplicatesAndPurges) {
  JetStreamWriteLog& log = Open();
  for (int i = 1; i <= 5; ++i) {
    auto a = log.Append(DeletePayload(i, "id" + std::to_string(i)), {"id" + std::to_string(i)});
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_EQ(a->seq, static_cast<uint64_t>(i));
  }
  auto dup = log.Append(DeletePayload(2, "id2"), {"id2"});
  ASSERT_TRUE(dup.ok());
  EXPECT_TRUE(dup->duplicate);
  EXPECT_EQ(dup->seq, 2u);  // the first copy's sequence
  auto all = ReadAtLeast(log, 0, 5, absl::Seconds(20));
  ASSERT_EQ(all.size(), 5u);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(all[i].seq, static_cast<uint64_t>(i + 1));
    EXPECT_EQ(DeletedId(all[i].payload), i + 1);
  }
  const auto from4 = ReadAtLeast(log, 3, 1, absl::Seconds(20));  // a reader may start anywhere
  ASSERT_FALSE(from4.empty());
  EXPECT_EQ(from4.front().seq, 4u);
  ASSERT_TRUE(log.DiscardBefore(4).ok());
  EXPECT_EQ(log.Read(1, 10, absl::Milliseconds(100)).status().code(),
            absl::StatusCode::kOutOfRange);
  const auto tail = ReadAtLeast(log, 3, 2, absl::Seconds(20));
  ASSERT_EQ(tail.size(), 2u);
  EXPECT_EQ(tail[0].seq, 4u);
  EXPECT_EQ(tail[1].seq, 5u);
}

TEST_F(JetStreamWriteLogTest, AFullStreamRefusesNewWritesAndKeepsTheOldOnes) {
  JetStreamWriteLog& log = Open(/*max_records=*/3);
  for (int i = 1; i <= 3; ++i) ASSERT_TRUE(log.Append(DeletePayload(i), {}).ok());
  auto refused = log.Append(DeletePayload(4), {});
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  EXPECT_EQ(ReadAtLeast(log, 0, 3, absl::Seconds(20)).size(), 3u);
  ASSERT_TRUE(log.DiscardBefore(3).ok());  // a checkpoint frees room
  EXPECT_TRUE(log.Append(DeletePayload(4), {}).ok());
}

TEST_F(JetStreamWriteLogTest, NatsDownFailsFastNamingNatsAndWorksAgainWhenItIsBack) {
  JetStreamWriteLog& log = Open();
  ASSERT_TRUE(log.Append(DeletePayload(1), {}).ok());
  nats_.Kill(0);
  for (int i = 0; i < 100 && conn_->connected(); ++i) absl::SleepFor(absl::Milliseconds(20));
  const absl::Time start = absl::Now();
  auto a = log.Append(DeletePayload(2), {"r2"});
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
  EXPECT_EQ(a.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(a.status().message().find("NATS"), std::string::npos) << a.status();
  EXPECT_EQ(log.Read(1, 10, absl::Milliseconds(50)).status().code(),
            absl::StatusCode::kUnavailable);
  ASSERT_TRUE(nats_.Restart(0));
  absl::StatusOr<WriteLog::Appended> again;
  for (int i = 0; i < 150; ++i) {
    again = log.Append(DeletePayload(2), {"r2"});
    if (again.ok()) break;
    absl::SleepFor(absl::Milliseconds(200));
  }
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->seq, 2u);
}

TEST_F(JetStreamWriteLogTest, ARecreatedStreamIsNotMistakenForTheOldOne) {
  JetStreamWriteLog& log = Open();
  for (int i = 1; i <= 3; ++i) ASSERT_TRUE(log.Append(DeletePayload(i), {}).ok());
  jsErrCode je;
  ASSERT_EQ(js_DeleteStream(conn_->js(), "TEST_WRITES", nullptr, &je), NATS_OK);
  JetStreamWriteLog& fresh = Open();
  ASSERT_TRUE(fresh.Append(DeletePayload(9), {}).ok());
  // A reader that applied 3 of the old stream must not take the new stream's 1 as its 4.
  EXPECT_EQ(fresh.Read(3, 10, absl::Milliseconds(100)).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(JetStreamWriteLogTest, ALocalWalIsImportedAsItsFoldOnceAndOnlyIntoAFreshStream) {
  const std::string wal = dir_ + "/local.wal";
  {
    auto local = OpenLocal(wal);
    for (int i = 1; i <= 600; ++i) {  // items 1..300 upserted twice, then 1..10 deleted
      recall::v1::WriteAheadRecord rec = VectorUpsert((i - 1) % 300 + 1, static_cast<float>(i));
      ASSERT_TRUE(local->Append(rec.SerializeAsString(), {}).ok());
    }
    for (int i = 1; i <= 10; ++i) ASSERT_TRUE(local->Append(DeletePayload(i), {}).ok());
  }
  JetStreamWriteLog& log = Open();
  auto imported = ImportLocalWal(wal, wal + ".snapshots", log);
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_EQ(imported->items, 300);
  EXPECT_EQ(imported->covered, 610u);
  EXPECT_EQ(imported->records, 3);  // 290 upserts in 2 chunks, 10 deletes in 1
  FoldedWrites fold;
  for (const LogRecord& r : ReadAtLeast(log, 0, 3, absl::Seconds(20))) {
    recall::v1::WriteAheadRecord rec;
    ASSERT_TRUE(rec.ParseFromString(r.payload));
    fold.Fold(r.seq, rec, nullptr);
  }
  EXPECT_EQ(fold.size(), 300u);
  EXPECT_TRUE(fold.Find(5)->deleted);
  EXPECT_FLOAT_EQ(fold.Find(11)->upsert.vector().values(0), 311.0f);  // the last write won
  // A re-run (after a crash, say) appends nothing new; a stream with other writes is refused.
  ASSERT_TRUE(ImportLocalWal(wal, wal + ".snapshots", log).ok());
  EXPECT_EQ(*log.LastSequence(), 3u);
  JetStreamWriteLog::Options o;
  o.connection = conn_.get();
  o.stream = "OTHER_WRITES";
  auto other = JetStreamWriteLog::Open(o);
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE((*other)->Append(DeletePayload(1), {}).ok());
  EXPECT_EQ(ImportLocalWal(wal, wal + ".snapshots", **other).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace recall::server
