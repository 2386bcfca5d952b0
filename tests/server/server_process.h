// Test helpers for loopback tests of recall-server: the real server binary as a child process
// on free loopback ports (the model it serves: tests/server/small_model.h).
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

namespace recall::testing {

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
    if (!WaitForPorts(port_file_, *child_, &grpc_port_, &metrics_port_)) {
      // The log lives in a temp dir the suite removes: show why it did not start.
      PrintLogTail("recall-server did not start");
      return false;
    }
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
    if (sig == SIGTERM && rc != 0) PrintLogTail("recall-server exited " + std::to_string(rc));
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
  pid_t pid() const { return child_ ? child_->pid() : -1; }
  int grpc_port() const { return grpc_port_; }
  ChildProcess* child() { return child_.get(); }

 private:
  void PrintLogTail(const std::string& what) const {
    std::ifstream in(log_);
    std::deque<std::string> tail;
    for (std::string line; std::getline(in, line);) {
      tail.push_back(std::move(line));
      if (tail.size() > 400) tail.pop_front();
    }
    std::cerr << what << "; the last " << tail.size() << " lines of "
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
