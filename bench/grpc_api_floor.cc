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
#include <csignal>
#include <fstream>
#include <iostream>
#include <memory>
#include <thread>
#include <vector>

#include "recall/v1/recall.grpc.pb.h"
#include "server/async_calls.h"

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

std::atomic<bool> g_stop{false};

// The async variants are served by recall-server's own pieces (server/async_calls.h), so what
// is measured is what the server runs.
template <typename Service, typename Started>
int ServeAsync(Service* service, grpc::ServerBuilder& builder, Started started) {
  using Call = recall::server::UnaryCall<Service, RecallRequest, RecallResponse>;
  recall::server::CompletionQueueThreads queues(builder, FLAGS_threads);
  builder.RegisterService(service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  started();
  const RecallResponse canned = CannedAnswer();
  // --handoff: the batcher's hand-off to a worker thread, without batching.
  std::unique_ptr<recall::server::BlockingCallPool> worker;
  if (FLAGS_handoff) worker = std::make_unique<recall::server::BlockingCallPool>(1);
  const typename Call::Handler answer = [&](Call* call) {
    auto finish = [&canned, call] {
      *call->response() = canned;
      call->Finish(grpc::Status::OK);
    };
    if (worker) {
      worker->Run(finish);
    } else {
      finish();
    }
  };
  for (const auto& cq : queues.queues()) {
    Call::Arm(service, &Service::RequestRecall, cq.get(), queues.live_ops(), &answer);
  }
  queues.Start();
  while (!g_stop.load()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  server->Shutdown();
  queues.Shutdown();
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
