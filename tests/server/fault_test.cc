// Fault tests (issue 6), each against the real binaries: the write-ahead log on a full
// filesystem (a small tmpfs mounted by the test), damaged new model versions (flipped byte,
// truncated file, missing manifest), recall-train SIGKILLed in the middle of a publish, and
// SIGTERM while clients keep calling.
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/inotify.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include "model/version_dir.h"
#include "tests/server/server_process.h"
#include "tests/server/small_model.h"
#include "tests/testing/metrics_scrape.h"

namespace recall {
namespace {
namespace fs = std::filesystem;
using testing::Deadline;

using testing::MetricValue;
using testing::ScrapeMetrics;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

class FaultTest : public testing::SmallModelSuite<FaultTest> {
 public:
  static constexpr char kTempName[] = "recall_fault_test";

 protected:
  void SetUp() override {
    base_ = FreshTestDir();
    Publish(1);
  }
  void TearDown() override { server_.Stop(SIGKILL); }

  void Publish(int64_t version) {
    auto p = model_->Export(base_ + "/models", "Flat", version);
    ASSERT_TRUE(p.ok()) << p.status();
  }
  // One round of SigtermUnderLoadAnswersEveryAcceptedCall (behaviour asserted); returns how
  // many calls were in flight when SIGTERM landed.
  int RunSigtermRound();

  bool StartServer(std::vector<std::string> flags = {}) {
    flags.insert(flags.begin(), {"--poll_interval_s=0", "--max_k=5000"});
    return server_.Start(RECALL_SERVER_BIN, base_ + "/models", base_, flags);
  }

  // A valid Recall over every item (Flat index, k above its size): the live ids and version.
  std::optional<std::set<int64_t>> LiveIds(int64_t* version = nullptr) {
    return testing::LiveIds(server_, version);
  }

  // grpc.health.v1 through recall-cli (exit 0 = SERVING).
  bool HealthServing() {
    std::string out;
    return testing::RunCommand(
               {RECALL_CLI_BIN, "health", "--addr=127.0.0.1:" + std::to_string(server_.grpc_port())},
               &out) == 0;
  }

  // `n` raw unit vectors for ids [first, first + n) of model version 1.
  static recall::v1::UpsertItemsRequest RawUpsert(int64_t first, int n, int dim) {
    recall::v1::UpsertItemsRequest up;
    for (int i = 0; i < n; ++i) {
      auto* v = up.add_items()->mutable_vector();
      v->set_item_id(first + i);
      v->set_model_version(1);
      const float x = 1.0f / std::sqrt(static_cast<float>(dim));
      for (int d = 0; d < dim; ++d) v->add_values(d == i % dim ? -x : x);
    }
    return up;
  }

  std::string base_;
  testing::ServerProcess server_;
};

// The log on a 1 MiB tmpfs that a filler file has nearly filled: upserts are acknowledged until
// the disk is full, then refused UNAVAILABLE (counted in recall_wal_write_errors_total) and not
// applied, while Recall keeps answering. Freeing space makes writes work again without a
// restart (the failed append was cut off the log), and after a SIGKILL + restart exactly the
// acknowledged writes are there.
TEST_F(FaultTest, FullDiskRefusesWritesUnavailableAndReadsKeepServing) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a tmpfs for the log";
  const std::string mnt = base_ + "/walfs";
  fs::create_directories(mnt);
  if (::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=1m") != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs here (" << std::strerror(errno) << ")";
  }
  struct Unmount {
    std::string path;
    ~Unmount() { ::umount2(path.c_str(), MNT_DETACH); }
  } unmount{mnt};
  {
    // Leave ~64 KiB for the log.
    std::ofstream filler(mnt + "/filler", std::ios::binary);
    filler << std::string((1 << 20) - (64 << 10), 'x');
  }
  ASSERT_TRUE(StartServer({"--wal_path=" + mnt + "/online.wal", "--snapshot_every_writes=0"}))
      << server_.log();
  const int dim = model_->dim();
  std::set<int64_t> acked, refused;
  grpc::Status failure;
  int64_t next = 100000;
  for (int call = 0; call < 200 && failure.ok(); ++call, next += 20) {
    auto up = RawUpsert(next, 20, dim);  // ~5.5 KB a record
    recall::v1::UpsertItemsResponse resp;
    auto ctx = Deadline();
    grpc::Status s = server_.Recall()->UpsertItems(ctx.get(), up, &resp);
    for (int64_t id = next; id < next + 20; ++id) (s.ok() ? acked : refused).insert(id);
    if (!s.ok()) failure = s;
  }
  ASSERT_FALSE(failure.ok()) << "the disk never filled up";
  ASSERT_FALSE(acked.empty());
  EXPECT_EQ(failure.error_code(), grpc::StatusCode::UNAVAILABLE) << failure.error_message();
  EXPECT_NE(failure.error_message().find("No space left"), std::string::npos)
      << failure.error_message();

  // Reads keep serving, and the refused write was not applied.
  ASSERT_TRUE(HealthServing());
  auto live = LiveIds();
  ASSERT_TRUE(live.has_value());
  for (int64_t id : acked) EXPECT_TRUE(live->count(id)) << "acknowledged id " << id << " missing";
  for (int64_t id : refused) EXPECT_FALSE(live->count(id)) << "refused id " << id << " served";
  const std::string m = ScrapeMetrics(server_.metrics_port());
  EXPECT_GE(MetricValue(m, "recall_wal_write_errors_total"), 1.0) << m;
  EXPECT_GE(MetricValue(m, "recall_requests_total{code=\"UNAVAILABLE\",method=\"UpsertItems\"}"),
            1.0);

  // Space comes back: the same server accepts writes again.
  fs::remove(mnt + "/filler");
  {
    auto up = RawUpsert(next, 20, dim);
    recall::v1::UpsertItemsResponse resp;
    auto ctx = Deadline();
    grpc::Status s = server_.Recall()->UpsertItems(ctx.get(), up, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    for (int64_t id = next; id < next + 20; ++id) acked.insert(id);
  }

  // The log holds exactly the acknowledged writes: a crash and a replay bring back all of them
  // and none of the refused ones.
  server_.Stop(SIGKILL);
  ASSERT_TRUE(StartServer({"--wal_path=" + mnt + "/online.wal", "--snapshot_every_writes=0"}))
      << server_.log();
  live = LiveIds();
  ASSERT_TRUE(live.has_value());
  for (int64_t id : acked) EXPECT_TRUE(live->count(id)) << "acknowledged id " << id << " lost";
  for (int64_t id : refused) EXPECT_FALSE(live->count(id)) << "refused id " << id << " replayed";
  EXPECT_EQ(ReadFile(server_.log()).find("dropped a torn"), std::string::npos)
      << "the log should end on a record boundary";
}

// A new version that is damaged on disk (flipped byte, truncated file, no manifest) is refused
// with its state naming the file; the old version keeps serving; a good version after them is
// served.
TEST_F(FaultTest, DamagedNewVersionsAreRefusedAndTheOldVersionKeepsServing) {
  ASSERT_TRUE(StartServer()) << server_.log();
  struct Damage {
    std::string what, file;
    std::function<void(const std::string&)> apply;
  };
  const std::vector<Damage> damages = {
      {"flipped byte", kIndexFile,
       [](const std::string& p) {
         std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
         f.seekg(static_cast<std::streamoff>(fs::file_size(p) / 2));
         char c;
         f.get(c);
         f.seekp(static_cast<std::streamoff>(fs::file_size(p) / 2));
         f.put(static_cast<char>(c ^ 0x40));
       }},
      {"truncated file", kUserTowerFile,
       [](const std::string& p) { fs::resize_file(p, fs::file_size(p) / 2); }},
      {"missing manifest", kManifestFile, [](const std::string& p) { fs::remove(p); }},
  };
  int64_t version = 1;
  for (const Damage& d : damages) {
    SCOPED_TRACE(d.what);
    Publish(++version);
    d.apply(VersionPath(base_ + "/models", version) + "/" + d.file);
    recall::v1::ListVersionsResponse listed;
    auto ctx = Deadline(60);
    grpc::Status s = server_.Training()->ReloadVersions(ctx.get(), {}, &listed);
    // Reload may report the refusal as its status; either way the listing says why.
    if (!s.ok()) {
      auto ctx2 = Deadline();
      ASSERT_TRUE(server_.Training()->ListVersions(ctx2.get(), {}, &listed).ok());
    }
    EXPECT_EQ(listed.serving_version(), 1);
    bool found = false;
    for (const auto& v : listed.versions()) {
      if (v.version() != version) continue;
      found = true;
      EXPECT_EQ(v.state().rfind("invalid", 0), 0u) << v.state();
      EXPECT_NE(v.state().find(d.file), std::string::npos) << v.state();
    }
    EXPECT_TRUE(found) << "version " << version << " not listed";
    int64_t served = 0;
    ASSERT_TRUE(LiveIds(&served).has_value());
    EXPECT_EQ(served, 1);
    ASSERT_TRUE(HealthServing());
  }
  Publish(++version);
  recall::v1::ListVersionsResponse listed;
  auto ctx = Deadline(60);
  ASSERT_TRUE(server_.Training()->ReloadVersions(ctx.get(), {}, &listed).ok());
  int64_t served = 0;
  ASSERT_TRUE(LiveIds(&served).has_value());
  EXPECT_EQ(served, version);
}

// recall-train is SIGKILLed while it publishes (the moment its staging dir appears, seen through
// inotify): no new version exists, the staging dir is never served or listed, and the next
// recall-train run removes it and publishes normally.
TEST_F(FaultTest, TrainerKilledDuringPublishLeavesNoVersion) {
  const std::string models = base_ + "/models";
  const std::vector<std::string> train = {
      RECALL_TRAIN_BIN, "--preset=smoke", "--dataset=synthetic", "--synthetic_users=300",
      "--synthetic_items=20000", "--epochs=1", "--batch_size=256", "--skip_eval",
      "--index_factory=Flat", "--progress=none", "--threads=1", "--model_base=" + models};
  int killed_mid_publish = 0;
  for (int attempt = 0; attempt < 5 && killed_mid_publish == 0; ++attempt) {
    const int ino = ::inotify_init1(IN_CLOEXEC);
    ASSERT_GE(ino, 0);
    ASSERT_GE(::inotify_add_watch(ino, models.c_str(), IN_CREATE), 0);
    testing::ChildProcess trainer;
    ASSERT_TRUE(trainer.Start(train, base_ + "/train.log"));
    bool killed = false;
    alignas(inotify_event) char buf[4096];
    while (!killed) {
      const ssize_t n = ::read(ino, buf, sizeof(buf));  // blocks until an entry is created
      ASSERT_GT(n, 0);
      for (char* p = buf; p < buf + n;) {
        auto* ev = reinterpret_cast<inotify_event*>(p);
        if (ev->len > 0 && std::string(ev->name).rfind(".tmp-", 0) == 0) {
          trainer.Kill(SIGKILL);
          killed = true;
          break;
        }
        p += sizeof(inotify_event) + ev->len;
      }
    }
    ::close(ino);
    ASSERT_EQ(trainer.Wait(std::chrono::seconds(120)), 128 + SIGKILL);
    const std::vector<int64_t> versions = ListVersionNumbers(models);
    bool staging_left = false;
    for (const auto& e : fs::directory_iterator(models)) {
      staging_left |= e.path().filename().string().rfind(".tmp-", 0) == 0;
    }
    if (versions == std::vector<int64_t>{1} && staging_left) {
      ++killed_mid_publish;
    } else {
      // The kill came after the rename (possible, not what this test is after): undo, retry.
      ASSERT_EQ(versions.back(), 2) << "unexpected versions";
      fs::remove_all(VersionPath(models, 2));
    }
  }
  ASSERT_EQ(killed_mid_publish, 1) << "never caught recall-train inside its publish";

  // The server lists and serves version 1 only.
  ASSERT_TRUE(StartServer()) << server_.log();
  recall::v1::ListVersionsResponse listed;
  {
    auto ctx = Deadline();
    ASSERT_TRUE(server_.Training()->ListVersions(ctx.get(), {}, &listed).ok());
  }
  ASSERT_EQ(listed.versions_size(), 1);
  EXPECT_EQ(listed.versions(0).version(), 1);
  int64_t served = 0;
  ASSERT_TRUE(LiveIds(&served).has_value());
  EXPECT_EQ(served, 1);

  // A complete run clears the dead publisher's staging dir and publishes version 2.
  std::string out;
  ASSERT_EQ(testing::RunCommand(train, &out, std::chrono::seconds(300)), 0) << out;
  for (const auto& e : fs::directory_iterator(models)) {
    EXPECT_NE(e.path().filename().string().rfind(".tmp-", 0), 0u) << e.path();
  }
  EXPECT_EQ(ListVersionNumbers(models), (std::vector<int64_t>{1, 2}));
  EXPECT_TRUE(VerifyVersionDir(VersionPath(models, 2)).ok());
}

// SIGTERM while 8 clients keep calling: the server refuses new calls, answers every call it had
// accepted, and exits 0. Every call the server handled reached its client as OK (the server's
// own count of answered Recalls equals the clients' OK count, and it answered nothing else).
// Calls it never accepted fail UNAVAILABLE, or CANCELLED for those gRPC core had received but
// not yet handed to a handler when the shutdown began (grpc/grpc#41785: core ends such a
// never-started call with "CANCELLED"; the counts above prove no started call was cut off).
int FaultTest::RunSigtermRound() {
  // Batches of up to 16 that wait 20 ms for more, for 8 closed-loop clients: every call spends
  // ~20 ms in the server and a client turns around in well under that, so calls are in flight
  // whenever the signal lands. (Batches of 4 with a 2 ms wait filled at once and ran in
  // microseconds: under ASan on a busy CI machine the clients were the bottleneck and the
  // signal once found nothing in flight.)
  if (!StartServer({"--batch_max_size=16", "--batch_workers=1", "--batch_max_wait_us=20000",
                    "--max_queued_requests=16", "--shutdown_grace_s=20"})) {
    ADD_FAILURE() << server_.log();
    return 0;
  }
  if (!LiveIds().has_value()) return 0;
  constexpr int kClients = 8;
  std::atomic<bool> stop{false};
  std::atomic<int64_t> ok{0};
  std::mutex mu;
  std::map<int, int64_t> failures;  // code -> count
  std::map<int, std::string> messages;  // code -> first message
  std::vector<std::thread> clients;
  const std::string addr = "127.0.0.1:" + std::to_string(server_.grpc_port());
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      grpc::ChannelArguments args;
      args.SetInt("grpc.use_local_subchannel_pool", 1);  // a connection of its own
      auto stub = recall::v1::RecallService::NewStub(
          grpc::CreateCustomChannel(addr, grpc::InsecureChannelCredentials(), args));
      const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
      for (int i = 0; !stop && std::chrono::steady_clock::now() < give_up; ++i) {
        recall::v1::RecallRequest req;
        req.set_k(20);
        req.mutable_user()->set_user_id((c * 131 + i) % 400);
        recall::v1::RecallResponse resp;
        auto ctx = Deadline(10);
        grpc::Status s = stub->Recall(ctx.get(), req, &resp);
        if (s.ok()) {
          ++ok;
          continue;
        }
        std::lock_guard<std::mutex> l(mu);
        if (++failures[s.error_code()] == 1) messages[s.error_code()] = s.error_message();
        if (s.error_code() == grpc::StatusCode::UNAVAILABLE) return;  // the server is going
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  const int64_t before = ok.load();
  server_.child()->Kill(SIGTERM);
  const int rc = server_.child()->Wait(std::chrono::seconds(60));
  stop = true;
  for (auto& t : clients) t.join();
  EXPECT_EQ(rc, 0) << ReadFile(server_.log());
  EXPECT_GT(before, 0);
  for (const auto& [code, n] : failures) {
    EXPECT_TRUE(code == grpc::StatusCode::UNAVAILABLE ||
                (code == grpc::StatusCode::CANCELLED && messages[code] == "CANCELLED"))
        << n << " calls failed with code " << code << ": " << messages[code];
  }
  const std::string log = ReadFile(server_.log());
  // The health checks of StartServer are not Recalls; the only Recall before the load is
  // LiveIds' one.
  const size_t counts = log.find("calls answered: ");
  if (counts == std::string::npos) {
    ADD_FAILURE() << log;
    return 0;
  }
  const std::string answered = log.substr(counts, log.find('\n', counts) - counts);
  EXPECT_EQ(answered, "calls answered: Recall/OK=" + std::to_string(ok.load() + 1)) << log;
  EXPECT_NE(log.find("calls left unanswered: 0"), std::string::npos) << log;
  const size_t at = log.find("refusing new calls, draining ");
  if (at == std::string::npos) {
    ADD_FAILURE() << log;
    return 0;
  }
  return std::atoi(log.c_str() + at + std::strlen("refusing new calls, draining "));
}


TEST_F(FaultTest, SigtermUnderLoadAnswersEveryAcceptedCall) {
  // The signal must land on calls in flight, or this would only test an idle shutdown. Whether
  // it does is timing (8 clients on a machine shared with other tests can all be between calls
  // at that instant), so up to 3 rounds; the behaviour is asserted in every round.
  int draining = 0;
  for (int round = 1; round <= 3 && draining == 0 && !HasFailure(); ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    draining = RunSigtermRound();
  }
  RecordProperty("in_flight_at_sigterm", draining);
  EXPECT_GT(draining, 0) << "no round had a call in flight at the signal";
}

}  // namespace
}  // namespace recall
