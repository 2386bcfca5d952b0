// Overload test (issue 6): a recall-server whose requests cost real work (exact search over
// 50,000 items) is flooded on loopback at 6x the load it sustains, for 10 s. Behaviour, every
// time: only answers and RESOURCE_EXHAUSTED refusals, most of the flood refused, every refusal
// handled by the server in under 1.6 ms (its own latency histogram), memory bounded, and full
// service back after the flood. Latency, against the unloaded p99 measured just before: the
// admitted p99 stays within 5x, refusals within 2x, full service within 2 s.
//
// Latency ratios on a shared, noisy machine can miss by chance (a slow moment in either phase,
// CPU taken by other tenants: one CI run saw an unloaded p99 of 9 ms where 2.5 ms is usual), so
// the measurement is repeated up to 3 times and passes when one attempt meets all three; the
// behaviour must hold in every attempt.
//
// Where a refusal's time goes (measured here, README "Overload"): the server handles it in
// microseconds; the rest is the trip through both gRPC stacks and the kernel, which on a busy
// core waits for a CPU time slice behind the batch that is running.
//
// Server and load generator are pinned to different cores (when there are two), so the flood
// does not win by starving the server of CPU, and the offered rate is measured, not assumed.
// Skipped in sanitizer builds, whose instrumentation makes latency ratios meaningless.
#include <gtest/gtest.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "client/bench_load.h"
#include "tests/server/server_process.h"
#include "tests/server/small_model.h"
#include "tests/testing/metrics_scrape.h"

namespace recall {
namespace {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

constexpr double kFloodSeconds = 10;
constexpr int kAttempts = 3;
constexpr double kOverloadFactor = 5;  // the bound on admitted p99 / unloaded p99
constexpr double kFloodFactor = 6;     // offered / sustainable: at least 5x, with a margin

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Resident set of a process in bytes (0 if it is gone).
int64_t RssBytes(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string key;
  while (in >> key) {
    if (key == "VmRSS:") {
      int64_t kb = 0;
      in >> kb;
      return kb * 1024;
    }
    std::getline(in, key);
  }
  return 0;
}

// Pins every thread of `pid` (threads it makes later inherit it) to `cpu`.
bool PinProcess(pid_t pid, int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  bool ok = true;
  for (const auto& t : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
    ok &= ::sched_setaffinity(std::stoi(t.path().filename().string()), sizeof(set), &set) == 0;
  }
  return ok;
}

// The server's own Recall latency histogram: cumulative count per upper bound (le, seconds).
std::map<double, double> RecallBuckets(int metrics_port) {
  std::map<double, double> out;
  const std::string text = testing::ScrapeMetrics(metrics_port);
  const std::string prefix = "recall_request_duration_seconds_bucket{method=\"Recall\",le=\"";
  for (size_t pos = text.find(prefix); pos != std::string::npos;
       pos = text.find(prefix, pos + 1)) {
    const size_t le_start = pos + prefix.size();
    const size_t le_end = text.find('"', le_start);
    const double le = text.compare(le_start, 4, "+Inf") == 0
                          ? std::numeric_limits<double>::infinity()
                          : std::strtod(text.c_str() + le_start, nullptr);
    out[le] = std::strtod(text.c_str() + text.find(' ', le_end) + 1, nullptr);
  }
  return out;
}

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())));
  return v[i];
}

class OverloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (kSanitized) GTEST_SKIP() << "latency ratios are not measured under sanitizers";
    dir_ = testing::FreshTempDir("recall_overload_test");
  }
  void TearDown() override {
    server_.Stop(SIGKILL);
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  std::string dir_;
  testing::ServerProcess server_;
};

TEST_F(OverloadTest, FloodAtFiveTimesSustainableIsShedAndServiceRecovers) {
  // The test process (and every thread it starts from here on) runs on core 1, the server on 0.
  const bool pin = std::thread::hardware_concurrency() >= 2;
  if (pin) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(1, &set);
    ASSERT_EQ(::sched_setaffinity(0, sizeof(set), &set), 0);
  }
  const std::string models = dir_ + "/models";
  std::string out;
  ASSERT_EQ(testing::RunCommand({RECALL_TRAIN_BIN, "--preset=smoke", "--dataset=synthetic", "--synthetic_users=500",
                                 "--synthetic_items=50000", "--epochs=1", "--batch_size=256",
                                 "--skip_eval", "--index_factory=Flat", "--progress=none",
                                 "--threads=1", "--model_base=" + models},
                                &out, std::chrono::seconds(300)),
            0)
      << out;
  // One batch worker, one thread each for the tower and the search: what one core sustains.
  // The batch size and the queue bound are the latency budget's knobs under overload: an
  // admitted request waits for what is queued and running ahead of it, so its latency approaches
  // (queued + batch) x the per-request cost. FAISS scans a Flat index one query at a time below
  // 20 queries, so batching buys this scenario little (batches of 4 gave ~390 QPS, of 1 ~340),
  // and the test serves batches of 1 with 1 queued: two closed-loop callers keep the worker
  // busy (the sustainable rate), and an admitted request waits for at most one other. Measured
  // admitted p99 / unloaded p99: ~2.4x here; 2 queued ~3-5x; batches of 2 ~4-5x, of 4 ~7x, of
  // 8 ~12x, of 32 ~18x (README "Overload").
  ASSERT_TRUE(server_.Start(RECALL_SERVER_BIN, models, dir_,
                            {"--poll_interval_s=0", "--batch_workers=1", "--torch_threads=1",
                             "--faiss_threads=1", "--batch_max_size=1",
                             "--max_queued_requests=1"}))
      << server_.log();
  if (pin) {
    ASSERT_TRUE(PinProcess(server_.child()->pid(), 0));
  }
  const std::string addr = "127.0.0.1:" + std::to_string(server_.grpc_port());

  std::vector<int64_t> items;
  for (int64_t i = 0; i < 50000; ++i) items.push_back(i);
  const auto pool = bench::MakeRequests(2000, items, 500, 20, 50, 100, 7);
  auto target = bench::MakeUnaryTarget(addr, 4, 5000);

  std::vector<std::string> reports;
  bool latency_ok = false;
  for (int attempt = 1; attempt <= kAttempts && !latency_ok; ++attempt) {
    SCOPED_TRACE("attempt " + std::to_string(attempt));
    // Unloaded: one request at a time.
    const bench::LatencyStats idle = bench::RunClosedLoop(*target, pool, 1, 1, 3);
    ASSERT_EQ(idle.errors, 0);
    // Sustainable: the best closed-loop throughput without a single refusal.
    double sustainable = 0;
    for (int c : {1, 2, 4, 8}) {
      const bench::LatencyStats s = bench::RunClosedLoop(*target, pool, c, 1, 2);
      if (s.errors == 0) sustainable = std::max(sustainable, s.qps);
    }
    ASSERT_GT(sustainable, 0);
    const int64_t rss_before = RssBytes(server_.child()->pid());
    const std::map<double, double> buckets_before = RecallBuckets(server_.metrics_port());

    // The flood: an open loop at 6x, latency from each request's scheduled send time.
    const double rate = kFloodFactor * sustainable;
    struct Outcome {
      double latency;   // from the scheduled send time (what an open-loop caller sees)
      double rpc;       // from the moment the client actually sent it
      double send_lag;  // how late the client sent it
      int code;
    };
    std::mutex mu;
    std::vector<Outcome> outcomes;
    outcomes.reserve(static_cast<size_t>(rate * kFloodSeconds * 1.1));
    std::atomic<int> outstanding{0};
    int64_t sent = 0, backlog = 0;
    std::vector<int64_t> rss;
    std::atomic<bool> sampling{true};
    std::thread sampler([&] {
      while (sampling) {
        rss.push_back(RssBytes(server_.child()->pid()));
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
      }
    });
    const auto t0 = Clock::now();
    const auto end = t0 + std::chrono::duration_cast<Clock::duration>(
                              std::chrono::duration<double>(kFloodSeconds));
    const double interval = 1.0 / rate;
    for (int64_t i = 0;; ++i) {
      const auto scheduled = t0 + std::chrono::duration_cast<Clock::duration>(
                                      std::chrono::duration<double>(interval * i));
      if (scheduled >= end) break;
      std::this_thread::sleep_until(scheduled);
      if (outstanding.load() >= 20000) {  // the client's own bound: counted, never sent
        ++backlog;
        continue;
      }
      ++sent;
      ++outstanding;
      auto* resp = new recall::v1::RecallResponse;
      const auto sent_at = Clock::now();
      target->Call(&pool[i % pool.size()], resp,
                   [&, resp, scheduled, sent_at](const grpc::Status& s) {
                     const auto now = Clock::now();
                     delete resp;
                     {
                       std::lock_guard<std::mutex> l(mu);
                       outcomes.push_back({Seconds(now - scheduled), Seconds(now - sent_at),
                                           Seconds(sent_at - scheduled), s.error_code()});
                     }
                     --outstanding;
                   });
    }
    const double flood_sec = Seconds(Clock::now() - t0);
    const auto flood_end = Clock::now();

    // Recovery: one request every 20 ms from the moment the flood stops.
    std::vector<std::pair<double, double>> probes;  // (s after the flood, latency; -1 = error)
    while (Clock::now() - flood_end < std::chrono::seconds(4)) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
      recall::v1::RecallResponse resp;
      auto stub = server_.Recall();
      const auto t = Clock::now();
      grpc::Status s = stub->Recall(&ctx, pool[probes.size() % pool.size()], &resp);
      probes.emplace_back(Seconds(t - flood_end), s.ok() ? Seconds(Clock::now() - t) : -1);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    for (int i = 0; i < 600 && outstanding.load() > 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    sampling = false;
    sampler.join();
    ASSERT_EQ(outstanding.load(), 0);
    // The server's histogram over the flood and the probes (the probes are a few hundred calls
    // against tens of thousands; they only make the fast share look smaller).
    const std::map<double, double> buckets_after = RecallBuckets(server_.metrics_port());

    std::vector<double> admitted, refused, refused_rpc, send_lag;
    std::map<int, int64_t> codes;
    for (const Outcome& o : outcomes) {
      ++codes[o.code];
      send_lag.push_back(o.send_lag);
      if (o.code == grpc::StatusCode::OK) admitted.push_back(o.latency);
      if (o.code == grpc::StatusCode::RESOURCE_EXHAUSTED) {
        refused.push_back(o.latency);
        refused_rpc.push_back(o.rpc);
      }
    }
    // Where a refusal's time goes: the server's own handling (the share of calls it finished
    // within 1.6 ms against the share it refused), the client's lateness in sending, and the
    // rest: the trip through both gRPC stacks and the kernel, waits for a CPU included.
    const auto calls_within = [&](double le) {
      auto a = buckets_after.lower_bound(le);
      auto b = buckets_before.lower_bound(le);
      return (a == buckets_after.end() ? 0 : a->second) -
             (b == buckets_before.end() ? 0 : b->second);
    };
    const double total_calls = calls_within(std::numeric_limits<double>::infinity());
    const double fast_share = total_calls > 0 ? calls_within(1.6e-3) / total_calls : 0;
    const double refused_share =
        total_calls > 0 ? static_cast<double>(refused.size()) / total_calls : 0;

    const double idle_p99 = idle.p99_ms / 1e3;
    const double admitted_p99 = Percentile(admitted, 0.99);
    const double refused_p99 = Percentile(refused, 0.99);
    const int64_t rss_max = rss.empty() ? rss_before : *std::max_element(rss.begin(), rss.end());
    // Full service: the first probe from which on no probe fails and 95% are answered within
    // 5x the unloaded p99 (one slow probe on a noisy machine is not a lack of service).
    double recovered_at = -1;
    {
      size_t slow = 0;
      for (size_t i = probes.size(); i-- > 0;) {
        if (probes[i].second < 0) break;
        if (probes[i].second > kOverloadFactor * idle_p99) ++slow;
        if (slow > (probes.size() - i) / 20) break;
        recovered_at = probes[i].first;
      }
    }
    std::string summary;
    for (const auto& [code, n] : codes) {
      summary += " code" + std::to_string(code) + "=" + std::to_string(n);
    }
    const std::string report =
        "attempt " + std::to_string(attempt) + ": idle p99 " + std::to_string(idle.p99_ms) +
        " ms; sustainable " + std::to_string(sustainable) + " QPS; offered " +
        std::to_string(sent / flood_sec) + " QPS for " + std::to_string(flood_sec) +
        " s (client backlog " + std::to_string(backlog) + "); outcomes" + summary +
        "; admitted p99 " + std::to_string(admitted_p99 * 1e3) + " ms; refused p99 " +
        std::to_string(refused_p99 * 1e3) + " ms (from the actual send " +
        std::to_string(Percentile(refused_rpc, 0.99) * 1e3) + " ms; client send lag p99 " +
        std::to_string(Percentile(send_lag, 0.99) * 1e3) + " ms; the server finished " +
        std::to_string(100 * fast_share) + "% of the calls within 1.6 ms and refused " +
        std::to_string(100 * refused_share) + "%); RSS before " +
        std::to_string(rss_before >> 20) + " MiB, max " + std::to_string(rss_max >> 20) +
        " MiB; full service " + std::to_string(recovered_at) + " s after the flood";
    std::cout << report << std::endl;
    reports.push_back(report);

    // Behaviour, in every attempt. The load offered really was >= 5x what the server sustains.
    // (Not >= 5x what it admitted during the flood: with a request always queued its one worker
    // never waits for a caller's next request, so it serves up to ~1.4x the closed-loop rate;
    // a run here admitted 528 QPS against a closed-loop 389. Shedding is asserted below.)
    EXPECT_GE(sent / flood_sec, 0.95 * rate) << report;
    EXPECT_GE(sent / flood_sec, 5 * sustainable) << report;
    EXPECT_EQ(backlog, 0) << report;
    // Only answers and refusals: no timeouts, no internal errors.
    for (const auto& [code, n] : codes) {
      EXPECT_TRUE(code == grpc::StatusCode::OK || code == grpc::StatusCode::RESOURCE_EXHAUSTED)
          << n << " calls ended with code " << code << "; " << report;
    }
    ASSERT_FALSE(admitted.empty()) << report;
    EXPECT_GT(refused.size(), admitted.size()) << "5x overload must be shed, not queued; " << report;
    // Shedding itself is cheap: every refusal was handled by the server within 1.6 ms.
    EXPECT_GE(fast_share, refused_share) << report;
    EXPECT_LE(rss_max, rss_before + (256 << 20)) << report;
    EXPECT_GE(recovered_at, 0) << "service never returned; " << report;

    // Latency against the unloaded baseline of this attempt.
    latency_ok = admitted_p99 <= kOverloadFactor * idle_p99 &&
                 // "Quickly": under twice an unloaded answer (a refusal waits for gRPC's threads
                 // on a saturated core, never for the queue).
                 refused_p99 <= 2 * idle_p99 && recovered_at >= 0 && recovered_at <= 2.0;
  }
  std::string all;
  for (const auto& r : reports) all += "\n  " + r;
  RecordProperty("overload_report", all);
  EXPECT_TRUE(latency_ok) << "no attempt kept admitted p99 <= 5x, refusals <= 2x the unloaded "
                             "p99 and full service within 2 s:"
                          << all;
}

}  // namespace
}  // namespace recall
