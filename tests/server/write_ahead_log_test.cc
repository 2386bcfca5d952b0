#include "server/write_ahead_log.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/crc32c.h"

namespace recall::server {
namespace {

// ---------------------------------------------------------------------------------------------
// crc32c

TEST(Crc32cTest, KnownVectors) {
  // RFC 3720 (iSCSI) B.4 and the classic check value.
  EXPECT_EQ(Crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(Crc32c("", 0), 0u);
  std::string zeros(32, '\0');
  std::string ones(32, '\xff');
  std::string ascending(32, '\0');
  std::string descending(32, '\0');
  for (int i = 0; i < 32; ++i) {
    ascending[i] = static_cast<char>(i);
    descending[i] = static_cast<char>(31 - i);
  }
  for (auto crc : {&Crc32cExtend, &Crc32cSoftwareExtend}) {
    EXPECT_EQ(crc(0, "123456789", 9), 0xE3069283u);
    EXPECT_EQ(crc(0, zeros.data(), zeros.size()), 0x8A9136AAu);
    EXPECT_EQ(crc(0, ones.data(), ones.size()), 0x62A8AB43u);
    EXPECT_EQ(crc(0, ascending.data(), ascending.size()), 0x46DD794Eu);
    EXPECT_EQ(crc(0, descending.data(), descending.size()), 0x113FDB5Cu);
  }
}

TEST(Crc32cTest, ExtendComposes) {
  std::string data;
  for (int i = 0; i < 100; ++i) data.push_back(static_cast<char>(i * 37 + 11));
  const uint32_t whole = Crc32c(data.data(), data.size());
  for (size_t split = 0; split <= data.size(); ++split) {
    uint32_t head = Crc32c(data.data(), split);
    EXPECT_EQ(Crc32cExtend(head, data.data() + split, data.size() - split), whole) << split;
    EXPECT_EQ(Crc32cSoftwareExtend(head, data.data() + split, data.size() - split), whole);
  }
}

TEST(Crc32cTest, HardwareMatchesSoftware) {
  std::mt19937_64 rng(42);
  std::string buf(5000, '\0');
  for (char& c : buf) c = static_cast<char>(rng());
  for (int trial = 0; trial < 2000; ++trial) {
    const size_t offset = rng() % 16;  // every alignment of the start
    const size_t n = rng() % (buf.size() - offset);
    const uint32_t seed = trial % 2 ? static_cast<uint32_t>(rng()) : 0;
    const uint32_t sw = Crc32cSoftwareExtend(seed, buf.data() + offset, n);
    ASSERT_EQ(Crc32cExtend(seed, buf.data() + offset, n), sw) << offset << " " << n;
    if (Crc32cHardwareAvailable()) {
      ASSERT_EQ(Crc32cHardwareExtend(seed, buf.data() + offset, n), sw) << offset << " " << n;
    }
  }
  if (!Crc32cHardwareAvailable()) GTEST_SKIP() << "no SSE4.2 here; only the software path ran";
}

TEST(Crc32cTest, MaskRoundTrip) {
  std::mt19937 rng(7);
  std::vector<uint32_t> values = {0u, 1u, 0xffffffffu, 0x80000000u, 0xE3069283u};
  for (int i = 0; i < 1000; ++i) values.push_back(rng());
  for (uint32_t v : values) {
    EXPECT_EQ(Crc32cUnmask(Crc32cMask(v)), v);
    EXPECT_NE(Crc32cMask(v), v);
    EXPECT_NE(Crc32cMask(Crc32cMask(v)), Crc32cMask(v));
  }
}

// ---------------------------------------------------------------------------------------------
// WriteAheadLog

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
}

uint64_t FileSize(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return ~uint64_t{0};
  return static_cast<uint64_t>(st.st_size);
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// Framed size of a record.
uint64_t Framed(const std::string& payload) { return kWalHeaderBytes + payload.size(); }

class WriteAheadLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string tmp = ::testing::TempDir();
    while (tmp.size() > 1 && tmp.back() == '/') tmp.pop_back();
    dir_ = absl::StrCat(tmp, "/wal_test_", ::getpid(), "_", info->name());
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
    std::filesystem::create_directories(dir_, ec);
    ASSERT_FALSE(ec) << ec.message();
    path_ = dir_ + "/log.wal";
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // Opens `path`, collecting replayed payloads (checking that sequence numbers count from 0).
  std::unique_ptr<WriteAheadLog> OpenLog(const std::string& path, std::vector<std::string>* out,
                                         WalRecoveryInfo* info,
                                         WalSyncPolicy sync = WalSyncPolicy::kAlways) {
    WriteAheadLog::Options options;
    options.path = path;
    options.sync = sync;
    out->clear();
    auto log = WriteAheadLog::Open(
        options,
        [out](uint64_t seq, absl::string_view payload) {
          EXPECT_EQ(seq, out->size());
          out->emplace_back(payload);
          return absl::OkStatus();
        },
        info);
    EXPECT_TRUE(log.ok()) << log.status();
    return log.ok() ? *std::move(log) : nullptr;
  }

  // Writes `payloads` into a fresh log at path_ and returns the file's bytes.
  std::string MakeLog(const std::vector<std::string>& payloads) {
    std::vector<std::string> replayed;
    WalRecoveryInfo info;
    auto log = OpenLog(path_, &replayed, &info, WalSyncPolicy::kNone);
    for (const auto& p : payloads) EXPECT_TRUE(log->Append(p).ok());
    log.reset();
    return ReadFile(path_);
  }

  std::string dir_;
  std::string path_;
};

TEST_F(WriteAheadLogTest, ParseSyncPolicy) {
  EXPECT_EQ(*ParseWalSyncPolicy("always"), WalSyncPolicy::kAlways);
  EXPECT_EQ(*ParseWalSyncPolicy("none"), WalSyncPolicy::kNone);
  EXPECT_EQ(ParseWalSyncPolicy("sometimes").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseWalSyncPolicy("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WalSyncPolicyName(WalSyncPolicy::kAlways), "always");
  EXPECT_EQ(WalSyncPolicyName(WalSyncPolicy::kNone), "none");
}

TEST_F(WriteAheadLogTest, AppendAndReplayInOrder) {
  std::vector<std::string> payloads;
  for (size_t size : {size_t{0}, size_t{1}, size_t{7}, size_t{8}, size_t{100}, size_t{4096},
                      size_t{1} << 20, size_t{0}, size_t{300000}, size_t{3}}) {
    std::string p(size, '\0');
    for (size_t i = 0; i < size; ++i) p[i] = static_cast<char>(i * 131 + payloads.size());
    payloads.push_back(std::move(p));
  }
  const std::string nested = dir_ + "/a/b/log.wal";  // parent directories are created
  std::vector<std::string> replayed;
  WalRecoveryInfo info;
  uint64_t bytes = 0;
  {
    auto log = OpenLog(nested, &replayed, &info);
    ASSERT_NE(log, nullptr);
    EXPECT_TRUE(replayed.empty());
    EXPECT_EQ(info.records, 0u);
    for (size_t i = 0; i < payloads.size(); ++i) {
      auto seq = log->Append(payloads[i]);
      ASSERT_TRUE(seq.ok()) << seq.status();
      EXPECT_EQ(*seq, i);
      bytes += Framed(payloads[i]);
    }
    WalStats stats = log->stats();
    EXPECT_EQ(stats.appended_records, payloads.size());
    EXPECT_EQ(stats.appended_bytes, bytes);
    EXPECT_EQ(stats.file_bytes, bytes);
    EXPECT_EQ(stats.next_sequence, payloads.size());
    EXPECT_EQ(stats.syncs, payloads.size());  // one caller at a time: one sync each
  }
  EXPECT_EQ(FileSize(nested), bytes);

  auto log = OpenLog(nested, &replayed, &info);
  ASSERT_NE(log, nullptr);
  EXPECT_EQ(replayed, payloads);
  EXPECT_EQ(info.records, payloads.size());
  EXPECT_EQ(info.valid_bytes, bytes);
  EXPECT_EQ(info.dropped_bytes, 0u);
  EXPECT_TRUE(info.drop_reason.empty());
  EXPECT_EQ(log->stats().file_bytes, bytes);
  EXPECT_EQ(*log->Append("next"), payloads.size());
}

TEST_F(WriteAheadLogTest, TornTailAtEveryOffset) {
  const std::vector<std::string> payloads = {std::string(10, 'a'), "", std::string(200, 'c')};
  const std::string full = MakeLog(payloads);
  std::vector<uint64_t> ends;  // end offset of each record
  uint64_t end = 0;
  for (const auto& p : payloads) ends.push_back(end += Framed(p));
  ASSERT_EQ(full.size(), end);

  const std::string torn = dir_ + "/torn.wal";
  for (size_t cut = 0; cut < full.size(); ++cut) {
    SCOPED_TRACE(absl::StrCat("cut at ", cut));
    WriteFile(torn, full.substr(0, cut));
    const size_t complete = std::upper_bound(ends.begin(), ends.end(), cut) - ends.begin();
    const uint64_t boundary = complete == 0 ? 0 : ends[complete - 1];
    const std::vector<std::string> expected(payloads.begin(), payloads.begin() + complete);

    std::vector<std::string> replayed;
    WalRecoveryInfo info;
    {
      auto log = OpenLog(torn, &replayed, &info, WalSyncPolicy::kNone);
      ASSERT_NE(log, nullptr);
      EXPECT_EQ(replayed, expected);
      EXPECT_EQ(info.records, complete);
      EXPECT_EQ(info.valid_bytes, boundary);
      EXPECT_EQ(info.dropped_bytes, cut - boundary);
      EXPECT_EQ(info.drop_reason.empty(), cut == boundary) << info.drop_reason;
      EXPECT_EQ(FileSize(torn), boundary);  // the torn bytes are gone before any append
      auto seq = log->Append("new");
      ASSERT_TRUE(seq.ok()) << seq.status();
      EXPECT_EQ(*seq, complete);
    }
    auto log = OpenLog(torn, &replayed, &info, WalSyncPolicy::kNone);
    std::vector<std::string> with_new = expected;
    with_new.push_back("new");
    EXPECT_EQ(replayed, with_new);
    EXPECT_EQ(info.dropped_bytes, 0u);
  }
}

TEST_F(WriteAheadLogTest, CorruptPayloadByteIsNotApplied) {
  const std::vector<std::string> payloads = {"first", "second", std::string(50, 'x')};
  const std::string full = MakeLog(payloads);
  const size_t last = full.size() - Framed(payloads[2]);
  for (size_t i = last + kWalHeaderBytes; i < full.size(); ++i) {
    SCOPED_TRACE(absl::StrCat("flipped byte ", i));
    std::string bad = full;
    bad[i] ^= 0x01;
    WriteFile(path_, bad);
    std::vector<std::string> replayed;
    WalRecoveryInfo info;
    auto log = OpenLog(path_, &replayed, &info, WalSyncPolicy::kNone);
    ASSERT_NE(log, nullptr);
    EXPECT_EQ(replayed, std::vector<std::string>(payloads.begin(), payloads.begin() + 2));
    EXPECT_EQ(info.valid_bytes, last);
    EXPECT_EQ(info.dropped_bytes, Framed(payloads[2]));
    EXPECT_NE(info.drop_reason.find("checksum"), std::string::npos) << info.drop_reason;
    EXPECT_EQ(FileSize(path_), last);
  }
}

TEST_F(WriteAheadLogTest, CorruptionInTheMiddleDropsEverythingAfterIt) {
  // Recovery cannot tell which later bytes are record boundaries once one record is bad, so it
  // keeps the valid prefix only (and says how much it dropped).
  const std::vector<std::string> payloads = {"first", "second", "third"};
  std::string bad = MakeLog(payloads);
  bad[Framed(payloads[0]) + kWalHeaderBytes] ^= 0x40;  // first byte of "second"
  WriteFile(path_, bad);
  std::vector<std::string> replayed;
  WalRecoveryInfo info;
  auto log = OpenLog(path_, &replayed, &info);
  EXPECT_EQ(replayed, std::vector<std::string>{"first"});
  EXPECT_EQ(info.dropped_bytes, Framed(payloads[1]) + Framed(payloads[2]));
}

TEST_F(WriteAheadLogTest, CorruptHeaderIsNotApplied) {
  const std::vector<std::string> payloads = {"first", "second", std::string(50, 'x')};
  const std::string full = MakeLog(payloads);
  const size_t last = full.size() - Framed(payloads[2]);
  struct Case {
    const char* name;
    size_t byte;        // offset inside the header
    uint8_t value;      // new value (set, not flipped) unless flip
    bool flip;
    const char* reason;  // expected in drop_reason
  };
  const Case cases[] = {
      {"crc byte 0", 0, 0x01, true, "checksum"},
      {"crc byte 3", 3, 0x80, true, "checksum"},
      {"length too large", 7, 0xff, false, "exceeds"},
      {"length one longer", 4, 51, false, "short payload"},
      {"length one shorter", 4, 49, false, "checksum"},
      {"length zero", 4, 0, false, "checksum"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    std::string bad = full;
    char& b = bad[last + c.byte];
    b = c.flip ? static_cast<char>(b ^ c.value) : static_cast<char>(c.value);
    WriteFile(path_, bad);
    std::vector<std::string> replayed;
    WalRecoveryInfo info;
    {
      auto log = OpenLog(path_, &replayed, &info, WalSyncPolicy::kNone);
      ASSERT_NE(log, nullptr);
      EXPECT_EQ(replayed, std::vector<std::string>(payloads.begin(), payloads.begin() + 2));
      EXPECT_EQ(info.valid_bytes, last);
      EXPECT_GT(info.dropped_bytes, 0u);
      EXPECT_NE(info.drop_reason.find(c.reason), std::string::npos) << info.drop_reason;
      EXPECT_EQ(*log->Append("new"), 2u);
    }
    OpenLog(path_, &replayed, &info, WalSyncPolicy::kNone);
    EXPECT_EQ(replayed, (std::vector<std::string>{"first", "second", "new"}));
  }
}

TEST_F(WriteAheadLogTest, ZeroFilledTailIsDropped) {
  // After power loss some file systems leave the file extended with zeros.
  std::string data = MakeLog({"kept"});
  WriteFile(path_, data + std::string(100, '\0'));
  std::vector<std::string> replayed;
  WalRecoveryInfo info;
  auto log = OpenLog(path_, &replayed, &info);
  EXPECT_EQ(replayed, std::vector<std::string>{"kept"});
  EXPECT_EQ(info.dropped_bytes, 100u);
}

TEST_F(WriteAheadLogTest, ReplayErrorAbortsOpenAndLeavesTheFile) {
  const std::string full = MakeLog({"a", "b", "c"});
  WriteFile(path_, full + "torn");
  WriteAheadLog::Options options;
  options.path = path_;
  std::vector<uint64_t> seen;
  auto log = WriteAheadLog::Open(
      options,
      [&seen](uint64_t seq, absl::string_view) {
        seen.push_back(seq);
        return seq == 1 ? absl::DataLossError("does not parse") : absl::OkStatus();
      },
      nullptr);
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(log.status().message(), "does not parse");
  EXPECT_EQ(seen, (std::vector<uint64_t>{0, 1}));
  EXPECT_EQ(FileSize(path_), full.size() + 4);  // not truncated: nothing was recovered
}

TEST_F(WriteAheadLogTest, ReadWalDoesNotModify) {
  const std::string full = MakeLog({"a", "bb"});
  WriteFile(path_, full + "xyz");
  std::vector<std::string> seen;
  WalRecoveryInfo info;
  ASSERT_TRUE(ReadWal(
                  path_,
                  [&seen](uint64_t seq, absl::string_view p) {
                    EXPECT_EQ(seq, seen.size());
                    seen.emplace_back(p);
                    return absl::OkStatus();
                  },
                  &info)
                  .ok());
  EXPECT_EQ(seen, (std::vector<std::string>{"a", "bb"}));
  EXPECT_EQ(info.records, 2u);
  EXPECT_EQ(info.valid_bytes, full.size());
  EXPECT_EQ(info.dropped_bytes, 3u);
  EXPECT_NE(info.drop_reason.find("short header"), std::string::npos) << info.drop_reason;
  EXPECT_EQ(FileSize(path_), full.size() + 3);

  auto missing = ReadWal(
      dir_ + "/missing.wal", [](uint64_t, absl::string_view) { return absl::OkStatus(); },
      nullptr);
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.message().find("missing.wal"), std::string::npos) << missing;
}

TEST_F(WriteAheadLogTest, GroupCommitManyThreads) {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 300;
  std::atomic<uint64_t> commits{0}, committed_bytes{0};
  WriteAheadLog::Options options;
  options.path = path_;
  options.sync = WalSyncPolicy::kAlways;
  options.on_commit = [&](uint64_t bytes, double sync_seconds) {
    commits++;
    committed_bytes += bytes;
    EXPECT_GE(sync_seconds, 0.0);
    // Holding the leader a moment guarantees followers queue up even where fdatasync is free.
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  };
  auto log = WriteAheadLog::Open(
      options, [](uint64_t, absl::string_view) { return absl::OkStatus(); }, nullptr);
  ASSERT_TRUE(log.ok()) << log.status();

  std::vector<std::vector<uint64_t>> seqs(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        auto seq = (*log)->Append(absl::StrCat("t", t, ":", i, std::string(t * 10, '.')));
        ASSERT_TRUE(seq.ok()) << seq.status();
        seqs[t].push_back(*seq);
      }
    });
  }
  for (auto& th : threads) th.join();

  constexpr uint64_t kTotal = kThreads * kPerThread;
  std::vector<std::string> by_seq(kTotal);
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_EQ(seqs[t].size(), static_cast<size_t>(kPerThread));
    for (int i = 0; i < kPerThread; ++i) {
      const uint64_t seq = seqs[t][i];
      ASSERT_LT(seq, kTotal);
      ASSERT_TRUE(by_seq[seq].empty()) << "sequence " << seq << " handed out twice";
      by_seq[seq] = absl::StrCat("t", t, ":", i, std::string(t * 10, '.'));
      if (i > 0) {
        EXPECT_GT(seq, seqs[t][i - 1]);
      }
    }
  }
  const WalStats stats = (*log)->stats();
  EXPECT_EQ(stats.appended_records, kTotal);
  EXPECT_EQ(stats.syncs, stats.groups);
  EXPECT_EQ(stats.groups, commits.load());
  EXPECT_EQ(stats.appended_bytes, committed_bytes.load());
  EXPECT_LT(stats.syncs, kTotal) << "no group formed";
  std::cout << "[          ] " << kTotal << " appends in " << stats.groups << " group commits\n";
  log->reset();

  std::vector<std::string> replayed;
  WalRecoveryInfo info;
  OpenLog(path_, &replayed, &info);
  EXPECT_EQ(replayed, by_seq);  // file order == sequence order == each thread's order
}

TEST_F(WriteAheadLogTest, SyncNoneNeverSyncs) {
  std::vector<double> sync_times;
  WriteAheadLog::Options options;
  options.path = path_;
  options.sync = WalSyncPolicy::kNone;
  options.on_commit = [&](uint64_t, double s) { sync_times.push_back(s); };
  auto log = WriteAheadLog::Open(
      options, [](uint64_t, absl::string_view) { return absl::OkStatus(); }, nullptr);
  ASSERT_TRUE(log.ok()) << log.status();
  for (int i = 0; i < 10; ++i) ASSERT_TRUE((*log)->Append("x").ok());
  EXPECT_EQ((*log)->stats().syncs, 0u);
  EXPECT_EQ(sync_times, std::vector<double>(10, 0.0));
}

TEST_F(WriteAheadLogTest, RewriteReplacesTheLog) {
  std::vector<std::string> replayed;
  WalRecoveryInfo info;
  auto log = OpenLog(path_, &replayed, &info);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(log->Append(absl::StrCat("old", i)).ok());
  const std::vector<std::string> snapshot = {"snap0", "", std::string(5000, 's')};
  auto size = log->Rewrite(snapshot);
  ASSERT_TRUE(size.ok()) << size.status();
  EXPECT_EQ(*size, Framed(snapshot[0]) + Framed(snapshot[1]) + Framed(snapshot[2]));
  EXPECT_EQ(FileSize(path_), *size);
  EXPECT_FALSE(Exists(path_ + ".rewrite"));
  EXPECT_EQ(log->stats().file_bytes, *size);
  EXPECT_EQ(log->stats().rewrites, 1u);
  EXPECT_EQ(*log->Append("new0"), 3u);
  EXPECT_EQ(*log->Append("new1"), 4u);
  log.reset();

  log = OpenLog(path_, &replayed, &info);
  EXPECT_EQ(replayed, (std::vector<std::string>{"snap0", "", snapshot[2], "new0", "new1"}));

  // An empty rewrite empties the log.
  ASSERT_EQ(*log->Rewrite({}), 0u);
  EXPECT_EQ(*log->Append("only"), 0u);
  log.reset();
  OpenLog(path_, &replayed, &info);
  EXPECT_EQ(replayed, std::vector<std::string>{"only"});
}

TEST_F(WriteAheadLogTest, LeftoverRewriteFileIsRemoved) {
  MakeLog({"a", "b"});
  WriteFile(path_ + ".rewrite", "half a compaction");
  std::vector<std::string> replayed;
  WalRecoveryInfo info;
  auto log = OpenLog(path_, &replayed, &info);
  EXPECT_EQ(replayed, (std::vector<std::string>{"a", "b"}));
  EXPECT_FALSE(Exists(path_ + ".rewrite"));
}

TEST_F(WriteAheadLogTest, FailedRewriteKeepsTheOldLog) {
  std::vector<std::string> replayed;
  WalRecoveryInfo info;
  auto log = OpenLog(path_, &replayed, &info);
  ASSERT_TRUE(log->Append("a").ok());
  ASSERT_EQ(::mkdir((path_ + ".rewrite").c_str(), 0755), 0);  // open(O_WRONLY) -> EISDIR
  auto size = log->Rewrite({"x"});
  ASSERT_FALSE(size.ok());
  EXPECT_NE(size.status().message().find(path_ + ".rewrite"), std::string::npos)
      << size.status();
  EXPECT_EQ(*log->Append("b"), 1u);  // not poisoned
  log.reset();
  ASSERT_EQ(::rmdir((path_ + ".rewrite").c_str()), 0);
  OpenLog(path_, &replayed, &info);
  EXPECT_EQ(replayed, (std::vector<std::string>{"a", "b"}));
}

TEST_F(WriteAheadLogTest, RewriteWhileAppending) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 200;
  std::vector<std::string> replayed;
  WalRecoveryInfo info;
  auto log = OpenLog(path_, &replayed, &info, WalSyncPolicy::kNone);
  absl::Mutex mu;
  std::map<std::string, uint64_t> seq_of;  // payload -> sequence its Append returned
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        std::string p = absl::StrCat("t", t, ":", i);
        auto seq = log->Append(p);
        ASSERT_TRUE(seq.ok()) << seq.status();
        absl::MutexLock lock(&mu);
        seq_of[p] = *seq;
      }
    });
  }
  for (int r = 0; r < 5; ++r) {
    ASSERT_TRUE(log->Rewrite({"snapshot"}).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  for (auto& th : threads) th.join();
  const uint64_t next = log->stats().next_sequence;
  log.reset();

  OpenLog(path_, &replayed, &info);
  ASSERT_FALSE(replayed.empty());
  EXPECT_EQ(replayed[0], "snapshot");
  EXPECT_EQ(replayed.size(), next);
  for (size_t i = 1; i < replayed.size(); ++i) {
    auto it = seq_of.find(replayed[i]);
    ASSERT_NE(it, seq_of.end()) << replayed[i];
    EXPECT_EQ(it->second, i) << replayed[i];
  }
}

TEST_F(WriteAheadLogTest, OpenFailsWhenParentIsARegularFile) {
  const std::string file = dir_ + "/plain_file";
  WriteFile(file, "not a directory");
  for (const std::string& path : {file + "/log.wal", file + "/sub/log.wal"}) {
    WriteAheadLog::Options options;
    options.path = path;
    auto log = WriteAheadLog::Open(
        options, [](uint64_t, absl::string_view) { return absl::OkStatus(); }, nullptr);
    ASSERT_FALSE(log.ok());
    EXPECT_NE(log.status().message().find(path), std::string::npos) << log.status();
    EXPECT_NE(log.status().message().find("Not a directory"), std::string::npos) << log.status();
  }
}

TEST_F(WriteAheadLogTest, OversizedAppendIsRejected) {
  std::vector<std::string> replayed;
  WalRecoveryInfo info;
  auto log = OpenLog(path_, &replayed, &info);
  auto seq = log->Append(std::string(kWalMaxPayloadBytes + 1, 'x'));
  EXPECT_EQ(seq.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*log->Append("fine"), 0u);
  EXPECT_EQ(log->Rewrite({std::string(kWalMaxPayloadBytes + 1, 'x')}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// A failed write (here EFBIG past RLIMIT_FSIZE; ENOSPC on a full disk behaves the same, see
// tests/server/fault_test.cc) fails only its own group: the partial record is cut off at once,
// the log stays usable, and what was acknowledged before and after is replayed.
TEST_F(WriteAheadLogTest, FailedWriteIsRolledBackAndTheLogStaysUsable) {
  std::vector<std::string> replayed;
  WalRecoveryInfo info;
  std::vector<std::string> errors;
  WriteAheadLog::Options options;
  options.path = path_;
  options.on_error = [&errors](const absl::Status& s) { errors.emplace_back(s.message()); };
  auto opened = WriteAheadLog::Open(options, nullptr, &info);
  ASSERT_TRUE(opened.ok()) << opened.status();
  std::unique_ptr<WriteAheadLog> log = *std::move(opened);
  ASSERT_TRUE(log->Append("before").ok());
  const uint64_t good = FileSize(path_);

  // RLIMIT_FSIZE makes the kernel write up to the limit, then fail with EFBIG: a partial record.
  struct rlimit old_limit;
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
  struct rlimit limit = old_limit;
  limit.rlim_cur = good + 100;
  if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) GTEST_SKIP() << "cannot lower RLIMIT_FSIZE";
  auto failed = log->Append(std::string(1000, 'x'));
  const uint64_t size_after_failure = FileSize(path_);
  auto after = log->Append("small");  // fits under the limit
  ::setrlimit(RLIMIT_FSIZE, &old_limit);
  ::signal(SIGXFSZ, old_handler);

  ASSERT_FALSE(failed.ok());
  EXPECT_NE(failed.status().message().find(path_), std::string::npos) << failed.status();
  EXPECT_EQ(size_after_failure, good) << "the partial record must be cut off";
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(*after, 1u);  // the failed record took no sequence number
  EXPECT_EQ(errors.size(), 1u);
  auto rewrite = log->Rewrite({"before", "small"});
  EXPECT_TRUE(rewrite.ok()) << rewrite.status();
  ASSERT_TRUE(log->Append("last").ok());
  log.reset();

  log = OpenLog(path_, &replayed, &info);
  EXPECT_EQ(replayed, (std::vector<std::string>{"before", "small", "last"}));
  EXPECT_EQ(info.dropped_bytes, 0u);
}

TEST_F(WriteAheadLogTest, ProcessKillKeepsAcknowledgedRecords) {
  // kNone: an acknowledged record is in the page cache, so SIGKILL cannot lose it.
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(pipe_fds[0]);
    ::alarm(20);  // never outlive a broken parent
    WriteAheadLog::Options options;
    options.path = path_;
    options.sync = WalSyncPolicy::kNone;
    auto log = WriteAheadLog::Open(
        options, [](uint64_t, absl::string_view) { return absl::OkStatus(); }, nullptr);
    if (!log.ok()) ::_exit(2);
    for (uint64_t i = 0; i < 10000000; ++i) {
      auto seq = (*log)->Append(absl::StrCat("r", i, std::string(i % 97, '-')));
      if (!seq.ok() || *seq != i) ::_exit(3);
      if (::write(pipe_fds[1], &i, sizeof(i)) != sizeof(i)) ::_exit(4);
    }
    ::_exit(0);
  }
  ::close(pipe_fds[1]);
  uint64_t acked = 0, value;
  bool any = false;
  while (!any || acked < 2000) {
    ASSERT_EQ(::read(pipe_fds[0], &value, sizeof(value)), static_cast<ssize_t>(sizeof(value)));
    acked = value;
    any = true;
  }
  ::kill(pid, SIGKILL);
  int wstatus = 0;
  ASSERT_EQ(::waitpid(pid, &wstatus, 0), pid);
  EXPECT_TRUE(WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL) << wstatus;
  while (::read(pipe_fds[0], &value, sizeof(value)) == static_cast<ssize_t>(sizeof(value))) {
    acked = value;
  }
  ::close(pipe_fds[0]);

  std::vector<std::string> replayed;
  WalRecoveryInfo info;
  OpenLog(path_, &replayed, &info);
  ASSERT_GT(replayed.size(), acked);
  for (uint64_t i = 0; i < replayed.size(); ++i) {
    ASSERT_EQ(replayed[i], absl::StrCat("r", i, std::string(i % 97, '-')));
  }
}

}  // namespace
}  // namespace recall::server
