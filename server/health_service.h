// grpc.health.v1.Health on the completion-queue API (server/async_calls.h says why gRPC's own,
// a callback service, is not used). One status for the whole server, under the service name
// "" (the protocol's "overall health"); any other name is unknown.
//   - Check: SERVING / NOT_SERVING; NOT_FOUND for an unknown name (the protocol's answer).
//   - Watch: the status now, then every change, until the client cancels or Shutdown; an
//     unknown name is watched as SERVICE_UNKNOWN.
//   - Shutdown: NOT_SERVING for good; open watches get it and end OK, so the server's own
//     shutdown does not wait for them.
// Thread-safety: all methods are thread-safe.
#ifndef RECALL_SERVER_HEALTH_SERVICE_H_
#define RECALL_SERVER_HEALTH_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "server/async_calls.h"

namespace recall::server {

class HealthService {
 public:
  using Proto = grpc::health::v1::Health::AsyncService;
  class Watch;

  HealthService();
  ~HealthService();
  Proto* service() { return &service_; }  // register it with the builder
  // Requests the first calls on every queue (after BuildAndStart, before the queues' threads).
  void Arm(CompletionQueueThreads& queues);
  void SetServing(bool serving);
  void Shutdown();

 private:
  friend class Watch;
  using CheckCall = UnaryCall<Proto, grpc::health::v1::HealthCheckRequest,
                              grpc::health::v1::HealthCheckResponse>;
  void ArmWatch(grpc::ServerCompletionQueue* cq, LiveOps* live);
  int StatusOf(const std::string& name) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Proto service_;
  const CheckCall::Handler check_;
  mutable absl::Mutex mu_;
  bool serving_ ABSL_GUARDED_BY(mu_) = false;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_set<Watch*> watches_ ABSL_GUARDED_BY(mu_);
};

}  // namespace recall::server

#endif  // RECALL_SERVER_HEALTH_SERVICE_H_
