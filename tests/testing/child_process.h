// Test helpers: run a binary as a child process (argv, no shell), wait for it, and read a
// small file that a server writes once it listens. Loopback only, bounded waits.
#ifndef RECALL_TESTS_TESTING_CHILD_PROCESS_H_
#define RECALL_TESTS_TESTING_CHILD_PROCESS_H_

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace recall::testing {

class ChildProcess {
 public:
  ChildProcess() = default;
  ChildProcess(const ChildProcess&) = delete;
  ~ChildProcess() { Kill(SIGKILL); Wait(); }

  // Starts argv[0] with argv; stdout/stderr go to `log_path` when given. The child inherits
  // OMP_WAIT_POLICY=passive: recall-server and recall-train re-execute themselves to set it
  // when it is missing (model/openmp_env.h), and loading LibTorch twice doubled every test's
  // server start (the deploy and bench smoke tests start the binaries without it, so the
  // re-execution stays covered).
  bool Start(const std::vector<std::string>& argv, const std::string& log_path = "") {
    ::setenv("OMP_WAIT_POLICY", "passive", /*overwrite=*/0);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    if (!log_path.empty()) {
      posix_spawn_file_actions_addopen(&actions, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      posix_spawn_file_actions_adddup2(&actions, 1, 2);
    }
    const int rc = posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    exited_ = false;
    return rc == 0;
  }

  void Kill(int sig) {
    if (pid_ > 0 && !exited_) ::kill(pid_, sig);
  }

  // Waits up to `timeout` for the child to exit; returns its exit status (-1 if still running,
  // 128+signal if killed by a signal).
  int Wait(std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    if (pid_ <= 0) return -1;
    if (exited_) return status_;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      int st = 0;
      pid_t r = ::waitpid(pid_, &st, WNOHANG);
      if (r == pid_) {
        exited_ = true;
        status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        return status_;
      }
      if (std::chrono::steady_clock::now() > deadline) return -1;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  bool running() {
    if (pid_ <= 0 || exited_) return false;
    return Wait(std::chrono::milliseconds(0)) == -1;
  }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  bool exited_ = true;
  int status_ = -1;
};

// Runs a command to completion (bounded), returning its exit status and captured output.
inline int RunCommand(const std::vector<std::string>& argv, std::string* output,
                      std::chrono::seconds timeout = std::chrono::seconds(60)) {
  char path[] = "/tmp/recall_cmd_XXXXXX";
  int fd = ::mkstemp(path);
  ::close(fd);
  ChildProcess child;
  if (!child.Start(argv, path)) return -1;
  int rc = child.Wait(timeout);
  if (rc == -1) {
    child.Kill(SIGKILL);
    child.Wait();
  }
  if (output) {
    std::ifstream in(path);
    output->assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  ::unlink(path);
  return rc;
}

// Reads "<grpc_port> <metrics_port>" written by recall-server --port_file, waiting up to
// `timeout` for it to appear. Returns false if the child exits or time runs out.
inline bool WaitForPorts(const std::string& path, ChildProcess& child, int* grpc_port,
                         int* metrics_port,
                         std::chrono::seconds timeout = std::chrono::seconds(60)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    std::ifstream in(path);
    if (in >> *grpc_port >> *metrics_port) return true;
    if (!child.running()) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

}  // namespace recall::testing

#endif  // RECALL_TESTS_TESTING_CHILD_PROCESS_H_
