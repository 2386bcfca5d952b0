// Test helper: a real NATS JetStream cluster of `n` nats-server processes on loopback, on free
// ports, each with its own temp store dir; nodes can be killed (SIGKILL) and restarted on the
// same ports and store. Bounded waits everywhere; the destructor kills what is left.
#ifndef RECALL_TESTS_TESTING_NATS_CLUSTER_H_
#define RECALL_TESTS_TESTING_NATS_CLUSTER_H_

#include <arpa/inet.h>
#include <nats/nats.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/testing/child_process.h"
#include "tests/testing/free_port.h"

namespace recall::testing {

// The nats-server binary on PATH, or "" when it is not installed.
inline std::string NatsServerBinary() {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return "";
  std::string p = path;
  for (size_t start = 0; start <= p.size();) {
    size_t end = p.find(':', start);
    if (end == std::string::npos) end = p.size();
    const std::string candidate = p.substr(start, end - start) + "/nats-server";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return "";
}

class NatsCluster {
 public:
  ~NatsCluster() {
    for (auto& n : nodes_) {
      if (n.process) {
        n.process->Kill(SIGKILL);
        n.process->Wait();
      }
    }
  }

  // Starts n nodes (n = 1: a lone JetStream server, no cluster) under `dir` and waits until
  // JetStream answers on every node.
  bool Start(int n, const std::string& dir) {
    binary_ = NatsServerBinary();
    if (binary_.empty()) return false;
    dir_ = dir;
    nodes_.resize(n);
    for (auto& node : nodes_) {
      node.client_port = FreeLoopbackPort();
      node.cluster_port = FreeLoopbackPort();
    }
    for (int i = 0; i < n; ++i) {
      if (!StartNode(i)) return false;
    }
    for (int i = 0; i < n; ++i) {
      if (!WaitJetStream(i, std::chrono::seconds(30))) return false;
    }
    return true;
  }

  void Kill(int i) {
    if (nodes_[i].process) {
      nodes_[i].process->Kill(SIGKILL);
      nodes_[i].process->Wait();
      nodes_[i].process.reset();
    }
  }
  bool Restart(int i) {
    Kill(i);
    return StartNode(i) && WaitJetStream(i, std::chrono::seconds(30));
  }
  // Restarts every node that is down, then waits for JetStream (which needs a quorum of nodes
  // up, so nodes of a cluster that is entirely down must come back together).
  bool RestartAll() {
    for (int i = 0; i < size(); ++i) {
      if (!running(i) && !StartNode(i)) return false;
    }
    for (int i = 0; i < size(); ++i) {
      if (!WaitJetStream(i, std::chrono::seconds(30))) return false;
    }
    return true;
  }
  bool running(int i) const { return nodes_[i].process != nullptr; }
  int size() const { return static_cast<int>(nodes_.size()); }
  int client_port(int i) const { return nodes_[i].client_port; }
  std::string url(int i) const {
    return "nats://127.0.0.1:" + std::to_string(nodes_[i].client_port);
  }
  // Every node, comma-separated: a --write_log value.
  std::string urls() const {
    std::string out;
    for (int i = 0; i < size(); ++i) out += (i ? "," : "") + url(i);
    return out;
  }
  std::string log(int i) const { return dir_ + "/nats" + std::to_string(i) + ".log"; }

  // Waits until `stream` has a leader and every replica is current and online (what a kill of
  // one node must wait for, so that at most one peer is ever behind).
  bool WaitStreamCurrent(const std::string& stream, std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      for (int i = 0; i < size(); ++i) {
        if (running(i) && StreamCurrentVia(i, stream)) return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return false;
  }

 private:
  struct Node {
    int client_port = -1, cluster_port = -1;
    std::unique_ptr<ChildProcess> process;
  };

  bool StartNode(int i) {
    Node& node = nodes_[i];
    const std::string store = dir_ + "/nats" + std::to_string(i);
    std::filesystem::create_directories(store);
    std::vector<std::string> argv = {binary_,
                                     "-a", "127.0.0.1",
                                     "-p", std::to_string(node.client_port),
                                     "-n", "n" + std::to_string(i),
                                     "-js", "-sd", store};
    if (size() > 1) {
      std::string routes;
      for (int j = 0; j < size(); ++j) {
        if (j == i) continue;
        routes += (routes.empty() ? "" : ",") + std::string("nats://127.0.0.1:") +
                  std::to_string(nodes_[j].cluster_port);
      }
      argv.insert(argv.end(), {"--cluster_name", "recall-test", "--cluster",
                               "nats://127.0.0.1:" + std::to_string(node.cluster_port),
                               "--routes", routes});
    }
    node.process = std::make_unique<ChildProcess>();
    return node.process->Start(argv, log(i) + "." + std::to_string(++starts_));
  }

  // One JetStream account-info request through node i answers.
  bool WaitJetStream(int i, std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (!nodes_[i].process || !nodes_[i].process->running()) return false;
      natsConnection* nc = nullptr;
      if (natsConnection_ConnectTo(&nc, url(i).c_str()) == NATS_OK) {
        jsCtx* js = nullptr;
        jsOptions jo;
        jsOptions_Init(&jo);
        jo.Wait = 1000;
        bool ok = false;
        if (natsConnection_JetStream(&js, nc, &jo) == NATS_OK) {
          jsAccountInfo* ai = nullptr;
          jsErrCode je = static_cast<jsErrCode>(0);
          ok = js_GetAccountInfo(&ai, js, nullptr, &je) == NATS_OK;
          if (ai) jsAccountInfo_Destroy(ai);
          jsCtx_Destroy(js);
        }
        natsConnection_Destroy(nc);
        if (ok) return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return false;
  }

  bool StreamCurrentVia(int i, const std::string& stream) {
    natsConnection* nc = nullptr;
    if (natsConnection_ConnectTo(&nc, url(i).c_str()) != NATS_OK) return false;
    bool ok = false;
    jsCtx* js = nullptr;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 1000;
    if (natsConnection_JetStream(&js, nc, &jo) == NATS_OK) {
      jsStreamInfo* si = nullptr;
      jsErrCode je = static_cast<jsErrCode>(0);
      if (js_GetStreamInfo(&si, js, stream.c_str(), nullptr, &je) == NATS_OK) {
        ok = si->Cluster == nullptr ||
             (si->Cluster->Leader != nullptr && si->Cluster->Leader[0] != '\0');
        if (ok && si->Cluster != nullptr) {
          for (int r = 0; r < si->Cluster->ReplicasLen; ++r) {
            const jsPeerInfo* p = si->Cluster->Replicas[r];
            ok &= p->Current && !p->Offline;
          }
          ok &= si->Cluster->ReplicasLen + 1 == size();
        }
        jsStreamInfo_Destroy(si);
      }
      jsCtx_Destroy(js);
    }
    natsConnection_Destroy(nc);
    return ok;
  }

  std::string binary_, dir_;
  std::vector<Node> nodes_;
  int starts_ = 0;
};

}  // namespace recall::testing

#endif  // RECALL_TESTS_TESTING_NATS_CLUSTER_H_
