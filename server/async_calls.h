// The serving edge's calls on gRPC's completion-queue API: the pieces recall-server's services
// are made of (server/grpc_services.h, server/health_service.h).
//
// Why not the callback API: in gRPC 1.51 (Debian 12) a process with any callback service
// drives it from a callback queue with its own "nexting" threads, which also poll. A lone
// request then hops between gRPC's threads: 3.9 context switches per unary call against 0.4-1.0
// on a completion queue that one thread polls and answers from, and 63-163 against 18-31 µs of
// the server's CPU per call at 1,700-3,400 calls/s on this 2-core VM, where a switch is dear
// (`bash bench/grpc_api_floor.sh`, README "Performance"). A single callback service (gRPC's own
// health service is one) brings the hops back, so every service of recall-server is served here.
//
// The pieces:
//   - AsyncOp: what every tag on a queue is. The queue's thread calls Proceed(ok).
//   - CompletionQueueThreads: the threads, one per queue; each runs Proceed for its tags. A
//     Proceed must not block: work that waits goes to a BlockingCallPool. After each poll, once
//     the tags that were ready have run, the thread runs the idle hooks: what a handler
//     deferred to the end of the poll (a batch of the Recalls it brought in) runs there, on the
//     same thread.
//   - UnaryCall: one unary method's pending call: requested, handled (now or later, from any
//     thread, by Finish), answered, freed. It re-arms its method before its handler runs, so a
//     method always has a request outstanding while the server runs.
//   - BlockingCallPool: threads for handlers that wait (an online write waits for its log's
//     acknowledgement): grown on demand up to a cap, never shrunk.
//
// Shutdown order (the owner's): grpc::Server::Shutdown (finishes or cancels every call, while
// the queues' threads still run), then CompletionQueueThreads::Shutdown, which waits until no
// AsyncOp is left before it shuts the queues down: an operation started on a shut-down queue
// aborts the process (a cancelled call's end-of-call notice can still be queued after the
// server's Shutdown returned, and its handler then finishes the call).
#ifndef RECALL_SERVER_ASYNC_CALLS_H_
#define RECALL_SERVER_ASYNC_CALLS_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace recall::server {

// How many AsyncOps are alive on a set of queues. Thread-safe.
class LiveOps {
 public:
  void Add() {
    absl::MutexLock lock(&mu_);
    ++n_;
  }
  void Remove() {
    absl::MutexLock lock(&mu_);
    --n_;
  }
  int count() const {
    absl::MutexLock lock(&mu_);
    return n_;
  }
  // True once none is alive; false if `timeout` passed first.
  bool WaitForNone(absl::Duration timeout) const {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(
                                    +[](const int* n) { return *n == 0; }, &n_),
                                timeout);
  }

 private:
  mutable absl::Mutex mu_;
  int n_ ABSL_GUARDED_BY(mu_) = 0;
};

// A tag on a completion queue. Proceed runs on the queue's thread; `ok` is gRPC's: false when
// the operation failed (the call was cancelled, or the server is shutting down). An op that
// owns a call counts in its queues' LiveOps (`live`, nullable for a tag that is part of
// another op) from construction to destruction.
class AsyncOp {
 public:
  explicit AsyncOp(LiveOps* live) : live_(live) {
    if (live_ != nullptr) live_->Add();
  }
  virtual ~AsyncOp() {
    if (live_ != nullptr) live_->Remove();
  }
  AsyncOp(const AsyncOp&) = delete;
  AsyncOp& operator=(const AsyncOp&) = delete;
  virtual void Proceed(bool ok) = 0;

 protected:
  LiveOps* live() const { return live_; }

 private:
  LiveOps* const live_;
};

// Threads that drive completion queues, one thread per queue. Thread-safe.
class CompletionQueueThreads {
 public:
  // Adds `n` queues to `builder` (call before BuildAndStart).
  CompletionQueueThreads(grpc::ServerBuilder& builder, int n);
  ~CompletionQueueThreads() { Shutdown(); }
  const std::vector<std::unique_ptr<grpc::ServerCompletionQueue>>& queues() const {
    return queues_;
  }
  // `hook(i)` runs on queue i's thread whenever a poll's ready tags have run (at most
  // kMaxTagsPerPoll of them). Add hooks before Start.
  void AddIdleHook(std::function<void(int queue)> hook) { hooks_.push_back(std::move(hook)); }
  static constexpr int kMaxTagsPerPoll = 64;
  // The index of this object's queue whose thread is calling, or -1 on any other thread.
  int CurrentQueue() const;
  // Starts the threads (after BuildAndStart and after the services armed their requests).
  void Start();
  // What the services' ops count in (pass it to UnaryCall::Arm and the like).
  LiveOps* live_ops() { return &live_; }
  // Waits (up to a minute) until no op is alive, shuts the queues down, runs every tag left
  // with ok = false, joins. Call after the server's Shutdown. Idempotent.
  void Shutdown();

 private:
  std::vector<std::unique_ptr<grpc::ServerCompletionQueue>> queues_;
  LiveOps live_;
  std::vector<std::function<void(int)>> hooks_;
  std::vector<std::thread> threads_;
  bool shut_down_ = false;
};

// Threads for handlers that block. Run never blocks: a task waits for a free thread, and a new
// thread starts while fewer than `max_threads` exist and none is free. The destructor runs
// what is queued, then joins. Thread-safe.
class BlockingCallPool {
 public:
  explicit BlockingCallPool(int max_threads) : max_threads_(max_threads < 1 ? 1 : max_threads) {}
  ~BlockingCallPool();
  void Run(std::function<void()> task);
  int threads() const;

 private:
  friend class BlockingCallPoolTestAccess;
  void Work();

  const int max_threads_;
  mutable absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  int idle_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
};

// One pending call of a unary method of `Service` (a generated ...::AsyncService, or a class
// with WithAsyncMethod_ of that method). Made by Arm; frees itself once answered.
//   - handler(call) runs on the queue's thread when a call arrives; it fills call->response()
//     and calls call->Finish(status) exactly once, now or later from any thread.
//   - The request, response and context stay valid until Finish's answer has been sent.
template <typename Service, typename Request, typename Response>
class UnaryCall final : public AsyncOp {
 public:
  using RequestMethod = void (Service::*)(grpc::ServerContext*, Request*,
                                          grpc::ServerAsyncResponseWriter<Response>*,
                                          grpc::CompletionQueue*, grpc::ServerCompletionQueue*,
                                          void*);
  using Handler = std::function<void(UnaryCall*)>;

  // Requests the method's next call on `cq`, counted in `live`; `handler` must outlive the
  // server.
  static void Arm(Service* service, RequestMethod method, grpc::ServerCompletionQueue* cq,
                  LiveOps* live, const Handler* handler) {
    new UnaryCall(service, method, cq, live, handler);
  }

  grpc::ServerContext* context() { return &ctx_; }
  const Request& request() const { return request_; }
  Response* response() { return &response_; }
  void Finish(const grpc::Status& status) {
    // Release: Finish may run on another thread than the queue's, and the queue thread that
    // gets the answer's tag reads this and frees the call (gRPC's own hand-off is invisible to
    // TSan: Debian's libgrpc is not instrumented).
    finishing_.store(true, std::memory_order_release);
    if (status.ok()) {
      writer_.Finish(response_, status, this);
    } else {
      writer_.FinishWithError(status, this);
    }
  }

  void Proceed(bool ok) override {
    if (finishing_.load(std::memory_order_acquire) || !ok) {  // answered, or no call (shutdown)
      delete this;
      return;
    }
    Arm(service_, method_, cq_, live(), handler_);
    (*handler_)(this);
  }

 private:
  UnaryCall(Service* service, RequestMethod method, grpc::ServerCompletionQueue* cq,
            LiveOps* live, const Handler* handler)
      : AsyncOp(live),
        service_(service),
        method_(method),
        cq_(cq),
        handler_(handler),
        writer_(&ctx_) {
    (service_->*method_)(&ctx_, &request_, &writer_, cq_, cq_, this);
  }

  Service* const service_;
  const RequestMethod method_;
  grpc::ServerCompletionQueue* const cq_;
  const Handler* const handler_;
  grpc::ServerContext ctx_;
  Request request_;
  Response response_;
  grpc::ServerAsyncResponseWriter<Response> writer_;
  std::atomic<bool> finishing_{false};
};

}  // namespace recall::server

#endif  // RECALL_SERVER_ASYNC_CALLS_H_
