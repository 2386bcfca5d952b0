// Load generation for recall-bench: request pools, targets (a gRPC server over unary calls or
// bidirectional streams, or the engine in-process), closed-loop and open-loop runs, latency
// statistics.
//
// Closed loop: C virtual users, each sends its next request when the previous one is answered;
// the throughput at the best C is the "max sustainable QPS". Open loop: requests are scheduled
// at a fixed rate whatever the answers do, and each latency is measured from the request's
// scheduled time, not from when it was actually sent, so a stalled server cannot hide its queue
// (no coordinated omission). Outstanding requests are capped; a request that finds the cap full
// is counted as an error ("client_backlog") instead of growing memory.
//
// Thread-safety: a Target may be called from many threads; a run function drives one target at
// a time.
#ifndef RECALL_CLIENT_BENCH_LOAD_H_
#define RECALL_CLIENT_BENCH_LOAD_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "recall/v1/recall.grpc.pb.h"

namespace recall::bench {

struct LatencyStats {
  int64_t ok = 0;
  int64_t errors = 0;
  std::map<std::string, int64_t> errors_by_code;
  double wall_sec = 0;
  double qps = 0;  // answered OK per second of the measured window
  double mean_ms = 0, p50_ms = 0, p95_ms = 0, p99_ms = 0, p999_ms = 0, max_ms = 0;
};

// Nearest-rank percentiles of latencies (seconds) over ok answers.
LatencyStats Summarize(std::vector<double> latencies_sec, int64_t errors,
                       std::map<std::string, int64_t> errors_by_code, double wall_sec);
std::string StatsJson(const LatencyStats& s);

// `n` requests of synthetic users: user ids in [0, num_users), histories of a length uniform in
// [history_min, history_max] drawn from `item_ids` (most recent last), top `k`.
std::vector<recall::v1::RecallRequest> MakeRequests(int n, const std::vector<int64_t>& item_ids,
                                                    int64_t num_users, int history_min,
                                                    int history_max, int k, uint64_t seed);

// A known user for realistic requests: what a caller would send for it (its external id, its
// history oldest first, its features).
struct BenchUser {
  int64_t user_id = 0;
  std::vector<int64_t> history;
  std::map<std::string, std::string> categorical;
  std::map<std::string, float> numeric;
};

// `n` requests of users drawn uniformly (with replacement) from `users`, each carrying the
// user's id, features and its last history_max history items (most recent last), top `k`.
// Queries then look like the traffic the towers were trained for; MakeRequests' random
// histories and ids do not. `users` must not be empty.
std::vector<recall::v1::RecallRequest> MakeRequestsForUsers(int n,
                                                            const std::vector<BenchUser>& users,
                                                            int history_max, int k,
                                                            uint64_t seed);

// Something that answers Recall requests asynchronously.
class Target {
 public:
  virtual ~Target() = default;
  // Answers req into *resp, then calls done (on any thread). req and resp stay valid until then.
  virtual void Call(const recall::v1::RecallRequest* req, recall::v1::RecallResponse* resp,
                    std::function<void(const grpc::Status&)> done) = 0;
  virtual std::string name() const = 0;
};

// Unary Recall over `channels` separate HTTP/2 connections, round-robin.
std::unique_ptr<Target> MakeUnaryTarget(const std::string& addr, int channels, int deadline_ms);
// An in-process function (e.g. the engine through its batcher), no network.
std::unique_ptr<Target> MakeFunctionTarget(
    std::string name, std::function<void(const recall::v1::RecallRequest*,
                                         recall::v1::RecallResponse*,
                                         std::function<void(const grpc::Status&)>)> fn);

// Closed loop over unary-style targets: `concurrency` virtual users for warmup + duration; only
// the duration window is measured.
LatencyStats RunClosedLoop(Target& target, const std::vector<recall::v1::RecallRequest>& pool,
                           int concurrency, double warmup_sec, double duration_sec);
// Closed loop over `concurrency` bidirectional RecallStream streams (one request in flight per
// stream), spread over `channels` connections.
LatencyStats RunStreamClosedLoop(const std::string& addr, int channels,
                                 const std::vector<recall::v1::RecallRequest>& pool,
                                 int concurrency, double warmup_sec, double duration_sec);
// Open loop at `rate` requests/s for warmup + duration, at most `max_outstanding` in flight.
LatencyStats RunOpenLoop(Target& target, const std::vector<recall::v1::RecallRequest>& pool,
                         double rate, double warmup_sec, double duration_sec,
                         int max_outstanding);

// Background UpsertItems load: `items_per_sec` raw unit vectors of `dim` for `model_version`,
// `batch` items per call, ids cycling through [first_id, first_id + span) so that they replace
// each other (the index grows by at most `span` items, plus hidden entries).
class UpsertLoad {
 public:
  UpsertLoad(const std::string& addr, int dim, int64_t model_version, double items_per_sec,
             int batch, int64_t first_id, int64_t span);
  ~UpsertLoad();  // stops
  void Stop();
  int64_t items_ok() const { return items_ok_.load(); }
  int64_t calls_failed() const { return calls_failed_.load(); }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> items_ok_{0}, calls_failed_{0};
  std::thread thread_;
};

}  // namespace recall::bench

#endif  // RECALL_CLIENT_BENCH_LOAD_H_
