// Operating recall-server over a real loopback channel: hot swaps under load, pinning
// (rollback) and unpinning, and retrain jobs (success, failure, cancel, quality gate).
#include <gtest/gtest.h>
#include <sched.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/server/server_process.h"
#include "tests/server/small_model.h"

namespace recall {
namespace {
namespace fs = std::filesystem;
using recall::v1::RecallRequest;
using recall::v1::RecallResponse;
using testing::Deadline;

class OperationsTest : public testing::SmallModelSuite<OperationsTest> {
 public:
  static constexpr char kTempName[] = "recall_ops";

 protected:

  // A model base holding versions 1..n of the trained model.
  std::string ModelBase(const std::string& name, int versions) {
    const std::string base = *dir_ + "/" + name;
    fs::remove_all(base);
    for (int v = 1; v <= versions; ++v) Publish(base, v);
    return base;
  }
  static void Publish(const std::string& base, int64_t version) {
    auto p = model_->Export(base, "Flat", version);
    ASSERT_TRUE(p.ok()) << p.status();
  }

  static RecallRequest RequestFor(int64_t user, int k) {
    RecallRequest req;
    req.set_k(k);
    req.mutable_user()->set_user_id(user);
    for (int64_t i : dataset_->train[user]) req.mutable_user()->add_history_item_ids(i);
    return req;
  }

  static int64_t ServedVersion(testing::ServerProcess& server) {
    RecallResponse resp;
    auto ctx = Deadline();
    grpc::Status s = server.Recall()->Recall(ctx.get(), RequestFor(1, 5), &resp);
    return s.ok() ? resp.model_version() : -1;
  }

  static recall::v1::RetrainJob WaitForJob(testing::ServerProcess& server, const std::string& id,
                                           int timeout_s = 180) {
    recall::v1::RetrainJob job;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    while (std::chrono::steady_clock::now() < deadline) {
      recall::v1::GetRetrainJobRequest req;
      req.set_job_id(id);
      auto ctx = Deadline();
      if (server.Training()->GetRetrainJob(ctx.get(), req, &job).ok() &&
          job.state() != recall::v1::QUEUED && job.state() != recall::v1::RUNNING) {
        return job;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ADD_FAILURE() << "job " << id << " did not finish in " << timeout_s << " s";
    return job;
  }

  // Small synthetic retrain overrides on the smoke preset, matching the served model's data and
  // size.
  static recall::v1::TrainConfig SmallRetrain() {
    recall::v1::TrainConfig c;
    c.set_synthetic_users(400);
    c.set_synthetic_items(300);
    c.set_synthetic_categories(6);
    c.set_epochs(3);
    c.set_batch_size(128);
    c.set_history_length(20);
    c.set_seed(7);
    c.set_threads(1);
    c.set_index_factory("Flat");
    return c;
  }
  static std::string Trigger(testing::ServerProcess& server, const std::string& dataset,
                             const recall::v1::TrainConfig& overrides,
                             grpc::Status* status = nullptr) {
    recall::v1::TriggerRetrainRequest req;
    req.set_dataset(dataset);
    req.set_preset("smoke");
    *req.mutable_config() = overrides;
    recall::v1::TriggerRetrainResponse resp;
    auto ctx = Deadline();
    grpc::Status s = server.Training()->TriggerRetrain(ctx.get(), req, &resp);
    if (status) *status = s;
    return resp.job_id();
  }
};


// Concurrent Recall callers that record every failure and every answering version.
class RecallLoad {
 public:
  RecallLoad(testing::ServerProcess& server, const trainer::Dataset& d, int threads) {
    for (int t = 0; t < threads; ++t) {
      threads_.emplace_back([this, &server, &d, t] {
        auto stub = server.Recall();
        int64_t last = 0;
        for (int64_t i = 0; !stop_; ++i) {
          const int64_t user = (t * 97 + i) % d.num_users;
          RecallRequest req;
          req.set_k(10);
          req.mutable_user()->set_user_id(user);
          for (int64_t item : d.train[user]) req.mutable_user()->add_history_item_ids(item);
          RecallResponse resp;
          auto ctx = Deadline(10);
          grpc::Status s = stub->Recall(ctx.get(), req, &resp);
          std::lock_guard<std::mutex> l(mu_);
          ++calls_;
          if (!s.ok() || resp.items_size() != 10) {
            ++errors_;
            if (first_error_.empty()) first_error_ = s.error_message();
            continue;
          }
          ++by_version_[resp.model_version()];
          last = resp.model_version();
        }
        (void)last;
      });
    }
  }
  void Stop() {
    stop_ = true;
    for (auto& t : threads_) t.join();
    threads_.clear();
  }
  ~RecallLoad() { if (!threads_.empty()) Stop(); }
  int64_t calls() { std::lock_guard<std::mutex> l(mu_); return calls_; }
  int64_t errors() { std::lock_guard<std::mutex> l(mu_); return errors_; }
  std::map<int64_t, int64_t> by_version() { std::lock_guard<std::mutex> l(mu_); return by_version_; }
  std::string first_error() { std::lock_guard<std::mutex> l(mu_); return first_error_; }

 private:
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
  std::mutex mu_;
  int64_t calls_ = 0, errors_ = 0;
  std::map<int64_t, int64_t> by_version_;
  std::string first_error_;
};

template <typename Pred>
bool WaitUntil(Pred pred, int timeout_s = 60) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

TEST_F(OperationsTest, HotSwapUnderLoadHasZeroErrorsAndRollsBackAndForth) {
  const std::string base = ModelBase("swap", 1);
  testing::ServerProcess server;
  ASSERT_TRUE(server.Start(RECALL_SERVER_BIN, base, *dir_, {"--poll_interval_s=1"}))
      << "see " << server.log();
  ASSERT_EQ(ServedVersion(server), 1);

  RecallLoad load(server, *dataset_, 4);
  ASSERT_TRUE(WaitUntil([&] { return load.calls() > 50; }));
  Publish(base, 2);  // the poller finds it, loads, warms and swaps while the load runs
  ASSERT_TRUE(WaitUntil([&] { return load.by_version()[2] > 50; })) << "never served v2";

  auto training = server.Training();
  recall::v1::SetServingVersionRequest pin;
  recall::v1::SetServingVersionResponse pin_resp;
  pin.set_version(1);  // rollback
  {
    auto ctx = Deadline();
    ASSERT_TRUE(training->SetServingVersion(ctx.get(), pin, &pin_resp).ok());
  }
  EXPECT_EQ(pin_resp.serving_version(), 1);
  const int64_t v1_before = load.by_version()[1];
  ASSERT_TRUE(WaitUntil([&] { return load.by_version()[1] > v1_before + 50; }));

  recall::v1::ListVersionsResponse list;
  {
    auto ctx = Deadline();
    ASSERT_TRUE(training->ListVersions(ctx.get(), {}, &list).ok());
  }
  EXPECT_EQ(list.serving_version(), 1);
  EXPECT_EQ(list.pinned_version(), 1);
  ASSERT_EQ(list.versions_size(), 2);
  EXPECT_EQ(list.versions(0).state(), "serving");
  EXPECT_EQ(list.versions(1).state(), "available");
  EXPECT_GT(list.versions(1).eval().metrics().at("recall@20"), 0);

  // A newer version does not displace the pin.
  Publish(base, 3);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  EXPECT_EQ(ServedVersion(server), 1);

  // Pinning an unknown version fails and changes nothing.
  pin.set_version(99);
  {
    auto ctx = Deadline();
    grpc::Status s = training->SetServingVersion(ctx.get(), pin, &pin_resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
  }
  EXPECT_EQ(ServedVersion(server), 1);

  pin.set_version(0);  // unpin: back to the newest
  {
    auto ctx = Deadline();
    ASSERT_TRUE(training->SetServingVersion(ctx.get(), pin, &pin_resp).ok());
  }
  EXPECT_EQ(pin_resp.serving_version(), 3);
  ASSERT_TRUE(WaitUntil([&] { return load.by_version()[3] > 50; }));
  load.Stop();

  EXPECT_EQ(load.errors(), 0) << "first error: " << load.first_error();
  for (const auto& [v, n] : load.by_version()) {
    EXPECT_TRUE(v >= 1 && v <= 3) << "version " << v;
  }
  EXPECT_GT(load.calls(), 300);
  EXPECT_EQ(server.Stop(), 0);
}

TEST_F(OperationsTest, ReloadVersionsServesANewVersionWithoutPolling) {
  const std::string base = ModelBase("reload", 1);
  testing::ServerProcess server;
  ASSERT_TRUE(server.Start(RECALL_SERVER_BIN, base, *dir_, {"--poll_interval_s=0",
                                                            "--keep_versions=2"}));
  Publish(base, 2);
  Publish(base, 3);
  EXPECT_EQ(ServedVersion(server), 1);  // no polling
  recall::v1::ListVersionsResponse list;
  auto ctx = Deadline();
  ASSERT_TRUE(server.Training()->ReloadVersions(ctx.get(), {}, &list).ok());
  EXPECT_EQ(list.serving_version(), 3);
  EXPECT_EQ(ServedVersion(server), 3);
  // keep_versions=2: version 1 was removed from disk after the swap.
  EXPECT_FALSE(fs::exists(base + "/1"));
  EXPECT_TRUE(fs::exists(base + "/2"));
}

// The processes whose parent is `parent` (from /proc/<pid>/stat: "pid (comm) state ppid ...").
std::vector<pid_t> ChildPids(pid_t parent) {
  std::vector<pid_t> children;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(e.path() / "stat");
    std::string stat;
    std::getline(in, stat);
    const size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 1));
    std::string state;
    pid_t ppid = 0;
    if (rest >> state >> ppid && ppid == parent) children.push_back(std::stoi(name));
  }
  return children;
}

TEST_F(OperationsTest, RetrainJobsSucceedFailCancelAndAreGated) {
  const std::string base = ModelBase("retrain", 1);
  testing::ServerProcess server;
  ASSERT_TRUE(server.Start(RECALL_SERVER_BIN, base, *dir_,
                           {"--poll_interval_s=0", "--retrain_gate_margin=0.3",
                            std::string("--retrain_command=") + RECALL_TRAIN_BIN,
                            "--cpu_sched=batch"}))
      << server.log();
  ASSERT_EQ(ServedVersion(server), 1);

  // Success: the new version is published and served with no other action (no polling).
  const std::string ok_id = Trigger(server, "synthetic", SmallRetrain());
  ASSERT_FALSE(ok_id.empty());
  recall::v1::RetrainJob job = WaitForJob(server, ok_id);
  ASSERT_EQ(job.state(), recall::v1::SUCCEEDED) << job.message();
  EXPECT_EQ(job.result_version(), 2);
  EXPECT_DOUBLE_EQ(job.progress(), 1.0);
  EXPECT_FALSE(job.log_tail().empty());
  EXPECT_FALSE(job.finished_at().empty());
  EXPECT_EQ(ServedVersion(server), 2);

  // Failure: a bad dataset path fails with the trainer's reason; version 2 keeps serving.
  const std::string bad_id = Trigger(server, "lightgcn:/nonexistent/gowalla", SmallRetrain());
  job = WaitForJob(server, bad_id);
  EXPECT_EQ(job.state(), recall::v1::FAILED);
  EXPECT_NE(job.message().find("exited with code"), std::string::npos) << job.message();
  EXPECT_NE(job.message().find("/nonexistent/gowalla"), std::string::npos) << job.message();
  EXPECT_EQ(ServedVersion(server), 2);

  // Cancel: a long job is stopped; one job at a time while it runs.
  auto long_job = SmallRetrain();
  long_job.set_epochs(100000);
  const std::string cancel_id = Trigger(server, "synthetic", long_job);
  ASSERT_TRUE(WaitUntil([&] {
    recall::v1::GetRetrainJobRequest r;
    r.set_job_id(cancel_id);
    recall::v1::RetrainJob j;
    auto ctx = Deadline();
    return server.Training()->GetRetrainJob(ctx.get(), r, &j).ok() && j.progress() > 0;
  }));
  // The trainer runs at the default scheduling policy, not the serving threads' batch one.
  EXPECT_EQ(sched_getscheduler(server.pid()), SCHED_BATCH);
  const std::vector<pid_t> trainers = ChildPids(server.pid());
  ASSERT_EQ(trainers.size(), 1u);
  EXPECT_EQ(sched_getscheduler(trainers[0]), SCHED_OTHER);
  grpc::Status second;
  Trigger(server, "synthetic", SmallRetrain(), &second);
  EXPECT_EQ(second.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << second.error_message();
  recall::v1::CancelRetrainRequest cancel;
  cancel.set_job_id(cancel_id);
  recall::v1::CancelRetrainResponse cancelled;
  {
    auto ctx = Deadline();
    ASSERT_TRUE(server.Training()->CancelRetrain(ctx.get(), cancel, &cancelled).ok());
  }
  EXPECT_EQ(cancelled.job().state(), recall::v1::CANCELLED) << cancelled.job().message();
  EXPECT_EQ(ServedVersion(server), 2);

  // Quality gate: a model that barely trained (lr ~ 0) is rejected with both figures.
  auto weak = SmallRetrain();
  weak.set_learning_rate(0.0000001);
  weak.set_epochs(1);
  const std::string gated_id = Trigger(server, "synthetic", weak);
  job = WaitForJob(server, gated_id);
  EXPECT_EQ(job.state(), recall::v1::REJECTED) << job.message();
  EXPECT_NE(job.message().find("quality gate"), std::string::npos) << job.message();
  EXPECT_EQ(job.result_version(), 0);
  EXPECT_EQ(ServedVersion(server), 2);

  // Nothing but the successful job reached model_base: no staging dirs left behind.
  std::vector<std::string> entries;
  for (const auto& e : fs::directory_iterator(base)) {
    if (e.is_directory()) entries.push_back(e.path().filename().string());
  }
  std::sort(entries.begin(), entries.end());
  EXPECT_EQ(entries, (std::vector<std::string>{"1", "2"}));

  // An override of a field an operator may not set is refused, naming it.
  grpc::Status refused;
  recall::v1::TrainConfig contract;
  contract.mutable_tower()->set_l2_normalize(false);
  Trigger(server, "synthetic", contract, &refused);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(refused.error_message().find("config.tower.l2_normalize"), std::string::npos)
      << refused.error_message();
  EXPECT_EQ(server.Stop(), 0);
}

}  // namespace
}  // namespace recall
