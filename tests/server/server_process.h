// Test helpers for loopback tests of recall-server: a small synthetic model trained in-process
// and the real server binary as a child process on free loopback ports.
#ifndef RECALL_TESTS_SERVER_SERVER_PROCESS_H_
#define RECALL_TESTS_SERVER_SERVER_PROCESS_H_

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <deque>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "recall/v1/recall.grpc.pb.h"
#include "tests/testing/child_process.h"
#include "trainer/synthetic.h"
#include "trainer/trainer.h"

namespace recall::testing {

// 400 users, 300 items in 6 categories, 3 epochs: trains in about a second.
inline trainer::SyntheticConfig SmallSyntheticConfig() {
  trainer::SyntheticConfig sc;
  sc.num_users = 400;
  sc.num_items = 300;
  sc.num_categories = 6;
  sc.seed = 7;
  return sc;
}

inline trainer::TrainConfig SmallTrainConfig() {
  trainer::TrainConfig tc;
  tc.epochs = 3;
  tc.batch_size = 128;
  tc.history_length = 20;
  tc.seed = 7;
  return tc;
}

// A fresh directory under the temp dir, unique per process and name; removed by the caller.
inline std::string FreshTempDir(const std::string& name) {
  namespace fs = std::filesystem;
  const fs::path p = fs::temp_directory_path() / (name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

// A fresh temp dir, the small synthetic dataset and a model trained on it: what the loopback
// suites share (make one in SetUpTestSuite, delete it in TearDownTestSuite).
struct SmallTrainedModel {
  explicit SmallTrainedModel(const std::string& name,
                             const trainer::TrainConfig& config = SmallTrainConfig())
      : dir(FreshTempDir(name)), dataset(trainer::GenerateSynthetic(SmallSyntheticConfig())) {
    auto t = trainer::Trainer::Create(dataset, config);
    if (!t.ok()) {
      ADD_FAILURE() << t.status();
      return;
    }
    trainer = std::move(*t);
    if (!trainer->Train().ok()) {
      ADD_FAILURE() << "training the small model failed";
      trainer.reset();
      return;
    }
    metrics = trainer->Evaluate();
  }
  ~SmallTrainedModel() { std::filesystem::remove_all(dir); }

  std::string dir;
  trainer::Dataset dataset;  // the trainer keeps a reference: declared before it
  std::unique_ptr<trainer::Trainer> trainer;
  trainer::RankingMetrics metrics;
};

// Fixture base of a suite that shares one SmallTrainedModel: Derived names its temp dir with
// `static constexpr char kTempName[]` and may train another config by defining its own
// `static trainer::TrainConfig ModelConfig()`. A suite that needs more set-up calls these first.
template <typename Derived>
class SmallModelSuite : public ::testing::Test {
 protected:
  static trainer::TrainConfig ModelConfig() { return SmallTrainConfig(); }
  static void SetUpTestSuite() {
    model_ = new SmallTrainedModel(Derived::kTempName, Derived::ModelConfig());
    ASSERT_NE(model_->trainer, nullptr);
    dir_ = &model_->dir;
    dataset_ = &model_->dataset;
    trainer_ = model_->trainer.get();
    metrics_ = &model_->metrics;
  }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }

  // <suite dir>/<current test's name>, emptied: a fresh model base for each test.
  static std::string FreshTestDir() {
    const std::string d =
        *dir_ + "/" + ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(d);
    std::filesystem::create_directories(d);
    return d;
  }

  static inline SmallTrainedModel* model_ = nullptr;
  static inline std::string* dir_ = nullptr;
  static inline trainer::Dataset* dataset_ = nullptr;
  static inline trainer::Trainer* trainer_ = nullptr;
  static inline trainer::RankingMetrics* metrics_ = nullptr;
};

// recall-server as a child process on free loopback ports.
class ServerProcess {
 public:
  // `flags` come after --model_base/--port/--metrics_port/--port_file.
  bool Start(const std::string& server_bin, const std::string& model_base,
             const std::string& work_dir, const std::vector<std::string>& flags) {
    port_file_ = work_dir + "/ports." + std::to_string(++starts_);
    log_ = work_dir + "/server." + std::to_string(starts_) + ".log";
    std::vector<std::string> argv = {server_bin, "--model_base=" + model_base, "--port=0",
                                     "--metrics_port=0", "--port_file=" + port_file_};
    argv.insert(argv.end(), flags.begin(), flags.end());
    // Another ServerProcess in the same work_dir may have left this name behind.
    std::filesystem::remove(port_file_);
    child_ = std::make_unique<ChildProcess>();
    if (!child_->Start(argv, log_)) return false;
    if (!WaitForPorts(port_file_, *child_, &grpc_port_, &metrics_port_)) return false;
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(grpc_port_),
                                   grpc::InsecureChannelCredentials());
    return true;
  }
  // SIGTERM (clean) or SIGKILL (crash); waits for the exit and returns its status.
  // Drop every stub first: an open connection makes a graceful shutdown wait for it.
  // A clean stop that exits non-zero copies the end of the server's log to stderr: the log
  // lives in a temp dir the suite removes, and a sanitizer report (exit 66) is only there.
  int Stop(int sig = SIGTERM) {
    if (!child_) return -1;
    channel_.reset();
    child_->Kill(sig);
    const int rc = child_->Wait();
    child_.reset();
    if (sig == SIGTERM && rc != 0) PrintLogTail(rc);
    return rc;
  }
  std::unique_ptr<recall::v1::RecallService::Stub> Recall() {
    return recall::v1::RecallService::NewStub(channel_);
  }
  std::unique_ptr<recall::v1::TrainingService::Stub> Training() {
    return recall::v1::TrainingService::NewStub(channel_);
  }
  const std::string& log() const { return log_; }
  int metrics_port() const { return metrics_port_; }
  int grpc_port() const { return grpc_port_; }
  ChildProcess* child() { return child_.get(); }

 private:
  void PrintLogTail(int rc) const {
    std::ifstream in(log_);
    std::deque<std::string> tail;
    for (std::string line; std::getline(in, line);) {
      tail.push_back(std::move(line));
      if (tail.size() > 400) tail.pop_front();
    }
    std::cerr << "recall-server exited " << rc << "; the last " << tail.size() << " lines of "
              << log_ << ":\n";
    for (const auto& line : tail) std::cerr << "  | " << line << "\n";
  }

  std::unique_ptr<ChildProcess> child_;
  std::shared_ptr<grpc::Channel> channel_;
  std::string port_file_, log_;
  int starts_ = 0, grpc_port_ = 0, metrics_port_ = 0;
};

// A ClientContext with a deadline, for one call.
inline std::unique_ptr<grpc::ClientContext> Deadline(int seconds = 30) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  return ctx;
}

// Every live item id of the served index, read back through one Recall with k = 5000 (the
// tests' indexes are Flat and smaller; start the server with --max_k=5000), and the version
// that answered. nullopt, after recording a test failure, if the call fails.
inline std::optional<std::set<int64_t>> LiveIds(ServerProcess& server, int64_t* version = nullptr) {
  recall::v1::RecallRequest req;
  req.set_k(5000);
  req.mutable_user()->set_user_id(3);
  recall::v1::RecallResponse resp;
  auto ctx = Deadline();
  grpc::Status s = server.Recall()->Recall(ctx.get(), req, &resp);
  if (!s.ok()) {
    ADD_FAILURE() << s.error_code() << " " << s.error_message() << "; see " << server.log();
    return std::nullopt;
  }
  if (version) *version = resp.model_version();
  std::set<int64_t> ids;
  for (const auto& it : resp.items()) ids.insert(it.item_id());
  return ids;
}

}  // namespace recall::testing

#endif  // RECALL_TESTS_SERVER_SERVER_PROCESS_H_
