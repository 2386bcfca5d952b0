#include "server/async_calls.h"

#include <glog/logging.h>

namespace recall::server {

CompletionQueueThreads::CompletionQueueThreads(grpc::ServerBuilder& builder, int n) {
  for (int i = 0; i < std::max(1, n); ++i) queues_.push_back(builder.AddCompletionQueue());
}

namespace {
// Which queue thread this is: its owner and the queue's index.
thread_local const CompletionQueueThreads* current_owner = nullptr;
thread_local int current_queue = -1;
}  // namespace

int CompletionQueueThreads::CurrentQueue() const {
  return current_owner == this ? current_queue : -1;
}

void CompletionQueueThreads::Start() {
  for (size_t i = 0; i < queues_.size(); ++i) {
    threads_.emplace_back([this, i, cq = queues_[i].get()] {
      current_owner = this;
      current_queue = static_cast<int>(i);
      void* tag = nullptr;
      bool ok = false;
      while (cq->Next(&tag, &ok)) {
        static_cast<AsyncOp*>(tag)->Proceed(ok);
        if (hooks_.empty()) continue;  // nothing waits for the poll's end: no extra syscall
        // The rest of what is ready now, without blocking.
        for (int n = 1; n < kMaxTagsPerPoll; ++n) {
          if (cq->AsyncNext(&tag, &ok, gpr_time_0(GPR_CLOCK_REALTIME)) !=
              grpc::CompletionQueue::GOT_EVENT) {
            break;
          }
          static_cast<AsyncOp*>(tag)->Proceed(ok);
        }
        for (const auto& hook : hooks_) hook(static_cast<int>(i));
      }
    });
  }
}

void CompletionQueueThreads::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  if (!threads_.empty() && !live_.WaitForNone(absl::Minutes(1))) {
    LOG(ERROR) << live_.count() << " gRPC calls still pending a minute after the server's "
               << "shutdown; shutting their queues down anyway";
  }
  for (auto& q : queues_) q->Shutdown();
  for (auto& t : threads_) t.join();
  if (threads_.empty()) {  // never started: free what the services armed
    for (auto& q : queues_) {
      void* tag = nullptr;
      bool ok = false;
      while (q->Next(&tag, &ok)) static_cast<AsyncOp*>(tag)->Proceed(false);
    }
  }
  threads_.clear();
}

BlockingCallPool::~BlockingCallPool() {
  std::vector<std::thread> threads;
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    threads.swap(threads_);
  }
  for (auto& t : threads) t.join();
}

void BlockingCallPool::Run(std::function<void()> task) {
  absl::MutexLock lock(&mu_);
  queue_.push_back(std::move(task));
  // A thread that went idle is counted until it takes a task; start one more only when every
  // idle thread is already spoken for.
  if (idle_ < static_cast<int>(queue_.size()) && static_cast<int>(threads_.size()) < max_threads_) {
    threads_.emplace_back([this] { Work(); });
  }
}

int BlockingCallPool::threads() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(threads_.size());
}

void BlockingCallPool::Work() {
  absl::MutexLock lock(&mu_);
  for (;;) {
    ++idle_;
    mu_.Await(absl::Condition(
        +[](BlockingCallPool* p) ABSL_NO_THREAD_SAFETY_ANALYSIS {
          return p->stop_ || !p->queue_.empty();
        },
        this));
    --idle_;
    if (queue_.empty()) return;  // stopping, and nothing left to run
    std::function<void()> task = std::move(queue_.front());
    queue_.pop_front();
    mu_.Unlock();
    task();
    mu_.Lock();
  }
}

}  // namespace recall::server
