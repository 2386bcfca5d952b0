// RecallBatcher: coalesces concurrent Recall requests (unary and stream) into one
// RecallEngine::RecallBatch call, i.e. one user-tower forward and one batched index search.
//
// Policy (DESIGN.md request path, step 3): a worker takes the oldest queued request and waits
// until `max_batch_size` requests are queued or `max_wait_us` has passed since that request
// arrived, whichever is first, then answers all it took. So a request never waits in the queue
// for more than max_wait_us beyond the time a worker needs to become free, and under load the
// batch fills by itself (requests queue while the workers are busy) without any waiting.
// With `max_wait_us` = 0 a worker never waits: it takes what is queued.
//
// Overload (issue 6): the queue is bounded by `max_queued`. A request that finds it full is
// answered RESOURCE_EXHAUSTED at once, without work, instead of growing a queue whose every
// entry would wait longer than its caller will: shedding at the door keeps the latency of the
// admitted requests at about one batch round, and the server recovers as soon as the load
// drops. A request whose deadline has passed (on arrival, or while it waited) is answered
// DEADLINE_EXCEEDED and never reaches the tower or the index.
//
// Completion: `done` runs on a worker thread once the response is filled (or with the error);
// it must not block for long (gRPC calls only schedule a write or finish).
//
// Requests collected by the caller (Collect / RunCollected): a thread that polls for requests
// (a gRPC completion-queue thread) collects what one poll brought in, then hands it over at
// once. A lone request, while no worker is busy and none is queued, runs on the calling thread
// itself: at low load that saves the hand-off, two context switches per request on a core of
// its own (README "Performance"). Anything more goes to the workers, whose batches grow while
// the caller reads more. Collect refuses like Submit: a passed deadline, and max_queued counted
// over the workers' queue and what the Collected holds.
//
// Thread-safety: Submit may be called from any number of threads. The destructor answers what
// is queued, then joins the workers; no Submit may run concurrently with it.
#ifndef RECALL_SERVER_RECALL_BATCHER_H_
#define RECALL_SERVER_RECALL_BATCHER_H_

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "recall/v1/recall.pb.h"
#include "server/recall_engine.h"

namespace recall::server {

class RecallBatcher {
 public:
  struct Options {
    int max_batch_size = 32;
    int max_wait_us = 0;  // recall-server's default: bench/results/batching.md
    int num_workers = 1;
    // Most requests waiting for a worker (0 = unbounded). recall-server's default is one full
    // batch per worker (--max_queued_requests).
    int max_queued = 0;
    // Called once per batch, on the worker, after the batch ran (metrics: batch size and the
    // encode/tower/search stages, which belong to the batch, not to one request).
    std::function<void(int batch_size, const RecallTimings&)> on_batch;
  };
  // Called once per answered request: its status and the timings of the batch it was in
  // (queue_sec is this request's own wait), and the batch size.
  using Done = std::function<void(const absl::Status&, const RecallTimings&, int batch_size)>;

  RecallBatcher(const RecallEngine* engine, Options options);
  ~RecallBatcher();
  RecallBatcher(const RecallBatcher&) = delete;
  RecallBatcher& operator=(const RecallBatcher&) = delete;

  // Why a request was answered without work (metrics).
  enum class Shed { kQueueFull, kDeadline };
  using OnShed = std::function<void(Shed)>;

  using Clock = std::chrono::steady_clock;
  // Queues `req`; `req` and `resp` must stay valid until `done` has run. `deadline` (the
  // caller's; Clock::time_point::max() = none) passed -> DEADLINE_EXCEEDED without work. A full
  // queue -> RESOURCE_EXHAUSTED; in both cases `done` runs on the calling thread before Submit
  // returns.
  void Submit(const recall::v1::RecallRequest* req, recall::v1::RecallResponse* resp, Done done,
              Clock::time_point deadline = Clock::time_point::max());

 private:
  struct Pending {
    const recall::v1::RecallRequest* req;
    recall::v1::RecallResponse* resp;
    Done done;
    Clock::time_point arrived;
    Clock::time_point deadline;
  };

 public:
  // What one thread collected and has not run yet (Collect / RunCollected). Not thread-safe:
  // one per collecting thread.
  class Collected {
   public:
    bool empty() const { return items_.empty(); }

   private:
    friend class RecallBatcher;
    std::vector<Pending> items_;
  };
  // As Submit, but the request waits in `c` until this thread calls RunCollected(c); refusals
  // run `done` before Collect returns.
  void Collect(Collected& c, const recall::v1::RecallRequest* req,
               recall::v1::RecallResponse* resp, Done done,
               Clock::time_point deadline = Clock::time_point::max());
  // Empties `c`: a lone request runs on this thread if no worker is busy and none is queued;
  // otherwise everything goes to the workers' queue.
  void RunCollected(Collected& c);

  // Requests waiting for a worker now.
  int queued() const;
  void set_on_shed(OnShed f) { on_shed_ = std::move(f); }

  const Options& options() const { return options_; }

 private:
  void Work();
  // The engine call's argument vectors, reused by a worker across its batches.
  struct Scratch {
    std::vector<const recall::v1::RecallRequest*> reqs;
    std::vector<recall::v1::RecallResponse*> resps;
    std::vector<absl::Status> statuses;
  };
  // Answers `batch` on this thread: expired requests without work, the rest as one batch.
  void RunBatch(std::vector<Pending>& batch, Scratch& scratch) const;
  // The refusal for a request arriving now with `deadline` into a queue of `queued` (OK: none).
  absl::Status Refusal(Clock::time_point now, Clock::time_point deadline, size_t queued) const;
  bool QueueFullOrStopping() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const RecallEngine* const engine_;
  const Options options_;
  OnShed on_shed_;  // set before the first Submit
  mutable absl::Mutex mu_;
  std::deque<Pending> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int busy_ ABSL_GUARDED_BY(mu_) = 0;  // workers running a batch
  std::vector<std::thread> workers_;
};

}  // namespace recall::server

#endif  // RECALL_SERVER_RECALL_BATCHER_H_
