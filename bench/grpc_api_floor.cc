// grpc-api-floor: what gRPC 1.51 itself costs per unary Recall on this machine, by API, with no
// engine behind it. It serves RecallService.Recall with a canned answer of --k items (the size
// of a real one) and nothing else, so that `recall-bench --target=grpc` against it measures the
// RPC alone:
//   --api=callback  the callback API, as recall-server serves today (gRPC runs the reactors on
//                   its own callback-queue threads);
//   --api=async     the completion-queue API: --threads threads, each polling its own queue and
//                   answering inline, so a lone request needs no hand-off between threads;
//   --api=mixed     async Recall beside callback methods (RecallStream etc.), as recall-server
//                   would run it: the callback queue's threads exist and poll too.
// bench/grpc_api_floor.sh runs the three side by side.
#include <gflags/gflags.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <csignal>
#include <fstream>
#include <iostream>
#include <memory>
#include <thread>
#include <vector>

#include "recall/v1/recall.grpc.pb.h"

DEFINE_string(api, "callback", "callback, async or mixed");
DEFINE_int32(threads, 1, "async: threads, each with its own completion queue");
DEFINE_int32(k, 100, "items in the canned answer");
DEFINE_bool(handoff, false,
            "async: answer on a worker thread (as recall-server's batcher does), not inline");
DEFINE_bool(health, false, "also gRPC's default health service, as recall-server has");
DEFINE_bool(reflection, false, "also server reflection, as recall-server has");
DEFINE_string(port_file, "", "where the bound port is written");

namespace {

using recall::v1::RecallRequest;
using recall::v1::RecallResponse;
using recall::v1::RecallService;

RecallResponse CannedAnswer() {
  RecallResponse r;
  for (int i = 0; i < FLAGS_k; ++i) {
    auto* item = r.add_items();
    item->set_item_id(1000003 + 7919 * i);
    item->set_score(0.9f - 0.001f * i);
  }
  r.set_model_version(1);
  return r;
}

class CallbackImpl final : public RecallService::CallbackService {
 public:
  grpc::ServerUnaryReactor* Recall(grpc::CallbackServerContext* ctx, const RecallRequest*,
                                   RecallResponse* resp) override {
    *resp = canned_;
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  const RecallResponse canned_ = CannedAnswer();
};

// Async Recall; the other methods stay callback ones (their reactors are never called here).
// Recall must never get a callback handler: gRPC 1.51 drops only a sync handler when a method
// is marked async, and serves a method with a handler as callback (its async requests crash).
using MixedBase = RecallService::WithAsyncMethod_Recall<RecallService::WithCallbackMethod_RecallStream<
    RecallService::WithCallbackMethod_UpsertItems<RecallService::WithCallbackMethod_DeleteItems<
        RecallService::WithCallbackMethod_GetIndexInfo<RecallService::Service>>>>>;

// A worker thread that runs what it is given in order: the batcher's hand-off, without batching.
class Worker {
 public:
  Worker() : thread_([this] { Run(); }) {}
  ~Worker() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }
  void Post(std::function<void()> f) {
    {
      std::lock_guard<std::mutex> l(mu_);
      queue_.push_back(std::move(f));
    }
    cv_.notify_one();
  }

 private:
  void Run() {
    std::unique_lock<std::mutex> l(mu_);
    for (;;) {
      cv_.wait(l, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;
      auto f = std::move(queue_.front());
      queue_.pop_front();
      l.unlock();
      f();
      l.lock();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stop_ = false;
  std::thread thread_;
};
Worker* g_worker = nullptr;

// One pending Recall on a completion queue: requested, then answered, then freed.
template <typename Service>
class AsyncCall {
 public:
  AsyncCall(Service* service, grpc::ServerCompletionQueue* cq, const RecallResponse* canned)
      : service_(service), cq_(cq), canned_(canned), writer_(&ctx_) {
    service_->RequestRecall(&ctx_, &req_, &writer_, cq_, cq_, this);
  }
  // The queue delivered this call's tag: `ok` false = shutting down.
  void Proceed(bool ok) {
    if (!answered_ && ok) {
      new AsyncCall(service_, cq_, canned_);  // keep one request outstanding
      answered_ = true;
      auto answer = [this] {
        resp_ = *canned_;
        writer_.Finish(resp_, grpc::Status::OK, this);
      };
      if (g_worker != nullptr) {
        g_worker->Post(answer);
      } else {
        answer();
      }
      return;
    }
    delete this;
  }

 private:
  Service* const service_;
  grpc::ServerCompletionQueue* const cq_;
  const RecallResponse* const canned_;
  grpc::ServerContext ctx_;
  RecallRequest req_;
  RecallResponse resp_;
  grpc::ServerAsyncResponseWriter<RecallResponse> writer_;
  bool answered_ = false;
};

template <typename Service>
void Poll(Service* service, grpc::ServerCompletionQueue* cq, const RecallResponse* canned) {
  new AsyncCall<Service>(service, cq, canned);
  void* tag;
  bool ok;
  while (cq->Next(&tag, &ok)) static_cast<AsyncCall<Service>*>(tag)->Proceed(ok);
}

std::atomic<bool> g_stop{false};

template <typename Service, typename Started>
int ServeAsync(Service* service, grpc::ServerBuilder& builder, Started started) {
  std::vector<std::unique_ptr<grpc::ServerCompletionQueue>> cqs;
  for (int i = 0; i < FLAGS_threads; ++i) cqs.push_back(builder.AddCompletionQueue());
  builder.RegisterService(service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  started();
  const RecallResponse canned = CannedAnswer();
  std::unique_ptr<Worker> worker;
  if (FLAGS_handoff) g_worker = (worker = std::make_unique<Worker>()).get();
  std::vector<std::thread> threads;
  for (auto& cq : cqs) threads.emplace_back(Poll<Service>, service, cq.get(), &canned);
  while (!g_stop.load()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  server->Shutdown();
  for (auto& cq : cqs) cq->Shutdown();
  for (auto& t : threads) t.join();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  std::signal(SIGTERM, [](int) { g_stop.store(true); });
  std::signal(SIGINT, [](int) { g_stop.store(true); });
  if (FLAGS_health) grpc::EnableDefaultHealthCheckService(true);
  if (FLAGS_reflection) grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.SetMaxReceiveMessageSize(64 << 20);
  // The port is known once the server has started.
  auto write_port = [&] {
    if (!FLAGS_port_file.empty()) std::ofstream(FLAGS_port_file) << port << "\n";
    std::cerr << "grpc-api-floor: --api=" << FLAGS_api << " on 127.0.0.1:" << port << "\n";
  };
  if (FLAGS_api == "callback") {
    CallbackImpl service;
    builder.RegisterService(&service);
    std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
    write_port();
    while (!g_stop.load()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    server->Shutdown();
    return 0;
  }
  if (FLAGS_api == "async" || FLAGS_api == "mixed") {
    if (FLAGS_api == "async") {
      RecallService::AsyncService service;
      return ServeAsync(&service, builder, write_port);
    }
    MixedBase service;
    return ServeAsync(&service, builder, write_port);
  }
  std::cerr << "error: --api must be callback, async or mixed\n";
  return 64;
}
