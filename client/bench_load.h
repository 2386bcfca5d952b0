// Load generation for recall-bench and recall-inprocess-bench: request pools, targets (a gRPC
// server over unary calls or bidirectional streams, or any in-process function: bench/ wraps
// the engine in one), closed-loop and open-loop runs, latency statistics, background writes.
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

// Background online writes: `items_per_sec` items written per second in calls of `batch`
// items (the calls are paced at batch / items_per_sec s), each call either an UpsertItems of
// raw unit vectors of `dim` for `model_version` or, with probability `delete_fraction`, a
// DeleteItems. An upserted item replaces a served item's vector with probability
// `replace_fraction` (an id drawn from `served_ids` not deleted since), else it is a new id
// cycling through [first_new_id, first_new_id + new_id_span), so the index grows by at most
// new_id_span items (plus hidden entries). A DeleteItems removes `batch` distinct ids drawn
// from the ids still live as far as the writer knows (served ids and ids it wrote). Ids are
// distinct within a call (the server refuses repeats). Calls are paced open-loop by `writers`
// threads taking every writers-th slot of the schedule, so a call that waits for the log's
// fsync does not hold back the next one (one synchronous caller reached 2,816 of 5,000
// writes/s against a server syncing every group commit).
struct WriteMix {
  double items_per_sec = 0;
  int batch = 50;
  int dim = 0;
  int64_t model_version = 0;
  std::vector<int64_t> served_ids;
  int64_t first_new_id = 0;
  int64_t new_id_span = 10000;
  double replace_fraction = 0.2;
  double delete_fraction = 0.1;
  uint64_t seed = 17;
  int deadline_ms = 5000;
  int writers = 4;
};

class UpsertLoad {
 public:
  UpsertLoad(const std::string& addr, WriteMix mix);
  ~UpsertLoad();  // stops
  void Stop();
  // Acknowledged work so far.
  int64_t items_ok() const { return items_ok_.load(); }           // upserted items
  int64_t replaced_ok() const { return replaced_ok_.load(); }     // of them: an id that was live
  int64_t deleted_ids_ok() const { return deleted_ids_ok_.load(); }  // ids sent in DeleteItems
  int64_t deleted_present() const { return deleted_present_.load(); }  // of them: were present
  int64_t calls_failed() const { return calls_failed_.load(); }   // UpsertItems calls
  int64_t delete_calls_failed() const { return delete_calls_failed_.load(); }

 private:
  class State;  // what the writers know is live, and their random stream (in the .cc)
  // Writer w's loop: calls w, w + writers, w + 2 writers, ... of the schedule.
  void RunWriter(int w, const std::string& addr);

  const WriteMix mix_;
  std::unique_ptr<State> state_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> items_ok_{0}, replaced_ok_{0}, deleted_ids_ok_{0}, deleted_present_{0},
      calls_failed_{0}, delete_calls_failed_{0};
  std::vector<std::thread> threads_;
};

}  // namespace recall::bench

#endif  // RECALL_CLIENT_BENCH_LOAD_H_
