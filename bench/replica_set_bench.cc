// replica-set-bench: online writes through the three write logs, side by side in one run.
//
//   bash bench/replica_set.sh throughput [rounds]   (trains the model, builds, runs this)
//
// For each log -- the local WAL of one recall-server, and a NATS JetStream stream at R=1 and at
// R=3 shared by 3 replicas on a 3-node cluster (nats-server processes on loopback) -- it runs
// `--writers` closed-loop writers (one raw-vector upsert per call, round-robin over the
// replicas) for `--duration_s` and reports acknowledged writes/s, the writers' acknowledgement
// latency, and the visibility lag (a write's storage in the log to its application, from every
// replica's recall_write_visibility_lag_seconds histogram, merged). With R=3 it then measures
// Recall p99 with NATS up and with every NATS node killed (no writes). Loopback only; the
// processes it starts are killed at the end.
#include <gflags/gflags.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "recall/v1/recall.grpc.pb.h"
#include "tests/testing/child_process.h"
#include "tests/testing/metrics_scrape.h"
#include "tests/testing/nats_cluster.h"

DEFINE_string(server_bin, "", "recall-server binary (required)");
DEFINE_string(model_base, "", "a model base with one version (required; copied per scenario)");
DEFINE_string(work_dir, "/tmp/recall_replica_bench", "scratch directory (emptied)");
DEFINE_int32(writers, 16, "closed-loop writers");
DEFINE_double(duration_s, 10, "measured seconds per scenario");
DEFINE_int32(recall_concurrency, 4, "closed-loop Recall callers for the NATS up/down figure");
DEFINE_string(scenarios, "local,r1,r3", "which logs to run");
DEFINE_string(json_out, "", "also write the results here (JSON)");

namespace {
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;
namespace rv1 = recall::v1;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
}

struct Replica {
  std::unique_ptr<recall::testing::ChildProcess> process;
  int grpc_port = 0, metrics_port = 0;
  std::shared_ptr<grpc::Channel> channel;
};

bool StartReplica(Replica& r, const std::string& base, const std::string& work, int i,
                  const std::vector<std::string>& flags) {
  fs::create_directories(work);
  const std::string ports = work + "/ports";
  fs::remove(ports);
  std::vector<std::string> argv = {FLAGS_server_bin, "--model_base=" + base, "--port=0",
                                   "--metrics_port=0", "--port_file=" + ports,
                                   "--poll_interval_s=0"};
  argv.insert(argv.end(), flags.begin(), flags.end());
  r.process = std::make_unique<recall::testing::ChildProcess>();
  if (!r.process->Start(argv, work + "/server.log")) return false;
  if (!recall::testing::WaitForPorts(ports, *r.process, &r.grpc_port, &r.metrics_port)) {
    return false;
  }
  r.channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(r.grpc_port),
                                  grpc::InsecureChannelCredentials());
  return true;
}

// Cumulative counts of recall_write_visibility_lag_seconds by upper bound.
std::map<double, double> LagBuckets(int metrics_port) {
  std::map<double, double> out;
  const std::string text = recall::testing::ScrapeMetrics(metrics_port);
  const std::string prefix = "recall_write_visibility_lag_seconds_bucket{le=\"";
  for (size_t pos = text.find(prefix); pos != std::string::npos; pos = text.find(prefix, pos + 1)) {
    const size_t le_start = pos + prefix.size();
    const double le = text.compare(le_start, 4, "+Inf") == 0
                          ? std::numeric_limits<double>::infinity()
                          : std::strtod(text.c_str() + le_start, nullptr);
    out[le] = std::strtod(text.c_str() + text.find(' ', le_start) + 1, nullptr);
  }
  return out;
}

// The q-quantile of a cumulative histogram, interpolated linearly inside its bucket (as
// Prometheus' histogram_quantile does).
double HistogramQuantile(const std::map<double, double>& cumulative, double q) {
  if (cumulative.empty()) return 0;
  const double total = cumulative.rbegin()->second;
  if (total <= 0) return 0;
  const double rank = q * total;
  double prev_le = 0, prev_count = 0;
  for (const auto& [le, count] : cumulative) {
    if (count >= rank) {
      if (std::isinf(le)) return prev_le;
      return prev_le + (le - prev_le) * (rank - prev_count) / std::max(1e-9, count - prev_count);
    }
    prev_le = le;
    prev_count = count;
  }
  return prev_le;
}

struct Result {
  std::string name;
  int replicas = 0;
  double writes_per_sec = 0, ack_p50_ms = 0, ack_p99_ms = 0;
  double lag_p50_ms = 0, lag_p99_ms = 0;
  int64_t writes = 0, failed = 0;
  double recall_p99_up_ms = -1, recall_p99_down_ms = -1;
  int64_t recall_errors_down = 0;
};

int Dim(Replica& r) {
  auto stub = rv1::RecallService::NewStub(r.channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  rv1::GetIndexInfoResponse info;
  return stub->GetIndexInfo(&ctx, {}, &info).ok() ? info.dim() : 0;
}

// Closed-loop writers for --duration_s; fills writes/s and acknowledgement latency.
void RunWriters(std::vector<Replica>& replicas, int dim, Result* res) {
  std::atomic<bool> stop{false};
  std::vector<std::vector<double>> lat(FLAGS_writers);
  std::atomic<int64_t> failed{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < FLAGS_writers; ++w) {
    threads.emplace_back([&, w] {
      std::mt19937_64 rng(w + 1);
      std::normal_distribution<float> n;
      std::vector<std::unique_ptr<rv1::RecallService::Stub>> stubs;
      for (auto& r : replicas) stubs.push_back(rv1::RecallService::NewStub(r.channel));
      for (int64_t i = 0; !stop; ++i) {
        rv1::UpsertItemsRequest req;
        auto* v = req.add_items()->mutable_vector();
        v->set_item_id(1000000 + static_cast<int64_t>(rng() % 100000));
        v->set_model_version(1);
        double norm = 0;
        std::vector<float> x(dim);
        for (float& f : x) {
          f = n(rng);
          norm += f * f;
        }
        for (float f : x) v->add_values(static_cast<float>(f / std::sqrt(norm)));
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
        rv1::UpsertItemsResponse resp;
        const auto t = Clock::now();
        auto& stub = stubs[(w + i) % stubs.size()];
        if (stub->UpsertItems(&ctx, req, &resp).ok()) {
          lat[w].push_back(Seconds(Clock::now() - t));
        } else {
          ++failed;
        }
      }
    });
  }
  const auto t0 = Clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(FLAGS_duration_s));
  stop = true;
  for (auto& t : threads) t.join();
  const double wall = Seconds(Clock::now() - t0);
  std::vector<double> all;
  for (auto& l : lat) all.insert(all.end(), l.begin(), l.end());
  res->writes = static_cast<int64_t>(all.size());
  res->failed = failed;
  res->writes_per_sec = static_cast<double>(all.size()) / wall;
  res->ack_p50_ms = 1e3 * Percentile(all, 0.5);
  res->ack_p99_ms = 1e3 * Percentile(all, 0.99);
}

// Recall p99 of a closed loop of --recall_concurrency callers against replica 0 for 5 s.
double RecallP99(Replica& r, int64_t* errors) {
  std::atomic<bool> stop{false};
  std::vector<std::vector<double>> lat(FLAGS_recall_concurrency);
  std::atomic<int64_t> err{0};
  std::vector<std::thread> threads;
  for (int c = 0; c < FLAGS_recall_concurrency; ++c) {
    threads.emplace_back([&, c] {
      auto stub = rv1::RecallService::NewStub(r.channel);
      for (int64_t i = 0; !stop; ++i) {
        rv1::RecallRequest req;
        req.mutable_user()->set_user_id((c * 7919 + i) % 1000);
        req.set_k(100);
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
        rv1::RecallResponse resp;
        const auto t = Clock::now();
        if (stub->Recall(&ctx, req, &resp).ok()) {
          lat[c].push_back(Seconds(Clock::now() - t));
        } else {
          ++err;
        }
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::seconds(5));
  stop = true;
  for (auto& t : threads) t.join();
  std::vector<double> all;
  for (auto& l : lat) all.insert(all.end(), l.begin(), l.end());
  if (errors) *errors = err;
  return 1e3 * Percentile(all, 0.99);
}

bool RunScenario(const std::string& name, Result* res) {
  const std::string dir = FLAGS_work_dir + "/" + name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string base = dir + "/models";
  fs::copy(FLAGS_model_base, base, fs::copy_options::recursive);
  recall::testing::NatsCluster nats;
  std::vector<Replica> replicas(name == "local" ? 1 : 3);
  std::vector<std::string> flags;
  if (name != "local") {
    if (!nats.Start(3, dir)) {
      std::cerr << "the NATS cluster did not start (nats-server installed?)\n";
      return false;
    }
    flags = {"--write_log=" + nats.urls(),
             std::string("--write_stream_replicas=") + (name == "r3" ? "3" : "1")};
  }
  for (size_t i = 0; i < replicas.size(); ++i) {
    std::vector<std::string> f = flags;
    if (name != "local") f.push_back("--replica_id=r" + std::to_string(i));
    if (!StartReplica(replicas[i], base, dir + "/r" + std::to_string(i), static_cast<int>(i), f)) {
      std::cerr << name << ": replica " << i << " did not start; see " << dir << "\n";
      return false;
    }
  }
  res->name = name == "local" ? "local WAL (fdatasync), 1 server"
                              : "JetStream R=" + std::string(name == "r3" ? "3" : "1") +
                                    ", 3 replicas";
  res->replicas = static_cast<int>(replicas.size());
  const int dim = Dim(replicas[0]);
  std::vector<std::map<double, double>> before;
  for (auto& r : replicas) before.push_back(LagBuckets(r.metrics_port));
  RunWriters(replicas, dim, res);
  // Let every replica apply the tail before reading the lag histograms.
  std::this_thread::sleep_for(std::chrono::seconds(1));
  std::map<double, double> merged;
  for (size_t i = 0; i < replicas.size(); ++i) {
    for (const auto& [le, c] : LagBuckets(replicas[i].metrics_port)) {
      merged[le] += c - before[i][le];
    }
  }
  res->lag_p50_ms = 1e3 * HistogramQuantile(merged, 0.5);
  res->lag_p99_ms = 1e3 * HistogramQuantile(merged, 0.99);
  if (name == "r3") {
    res->recall_p99_up_ms = RecallP99(replicas[0], nullptr);
    for (int n = 0; n < 3; ++n) nats.Kill(n);
    std::this_thread::sleep_for(std::chrono::seconds(1));
    res->recall_p99_down_ms = RecallP99(replicas[0], &res->recall_errors_down);
  }
  for (auto& r : replicas) {
    r.process->Kill(SIGKILL);
    r.process->Wait();
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage("replica-set-bench --server_bin=... --model_base=... [flags]");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  if (FLAGS_server_bin.empty() || FLAGS_model_base.empty()) {
    std::cerr << "--server_bin and --model_base are required\n";
    return 64;
  }
  std::vector<Result> results;
  for (const std::string name : {"local", "r1", "r3"}) {
    if (FLAGS_scenarios.find(name) == std::string::npos) continue;
    Result r;
    if (!RunScenario(name, &r)) return 1;
    results.push_back(r);
    std::cerr << r.name << ": " << r.writes_per_sec << " writes/s" << std::endl;
  }
  std::cout << "| write log | acknowledged writes/s | ack p50 / p99 (ms) | visibility lag p50 / "
               "p99 (ms) | Recall p99 NATS up / down (ms) |\n|---|---|---|---|---|\n";
  char line[512];
  for (const auto& r : results) {
    std::snprintf(line, sizeof(line), "| %s | %.0f | %.2f / %.2f | %.2f / %.2f | %s |\n",
                  r.name.c_str(), r.writes_per_sec, r.ack_p50_ms, r.ack_p99_ms, r.lag_p50_ms,
                  r.lag_p99_ms,
                  r.recall_p99_up_ms < 0
                      ? "-"
                      : (std::to_string(r.recall_p99_up_ms).substr(0, 5) + " / " +
                         std::to_string(r.recall_p99_down_ms).substr(0, 5) + " (" +
                         std::to_string(r.recall_errors_down) + " errors)")
                            .c_str());
    std::cout << line;
  }
  if (!FLAGS_json_out.empty()) {
    std::ofstream out(FLAGS_json_out);
    out << "[";
    for (size_t i = 0; i < results.size(); ++i) {
      const auto& r = results[i];
      out << (i ? ",\n " : "") << "{\"log\":\"" << r.name << "\",\"replicas\":" << r.replicas
          << ",\"writes\":" << r.writes << ",\"failed\":" << r.failed
          << ",\"writes_per_sec\":" << r.writes_per_sec << ",\"ack_p50_ms\":" << r.ack_p50_ms
          << ",\"ack_p99_ms\":" << r.ack_p99_ms << ",\"lag_p50_ms\":" << r.lag_p50_ms
          << ",\"lag_p99_ms\":" << r.lag_p99_ms << ",\"recall_p99_up_ms\":" << r.recall_p99_up_ms
          << ",\"recall_p99_down_ms\":" << r.recall_p99_down_ms
          << ",\"recall_errors_down\":" << r.recall_errors_down << "}";
    }
    out << "]\n";
  }
  return 0;
}
