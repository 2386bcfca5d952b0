// gRPC edge of recall-server (callback API): maps requests to RecallEngine, statuses to gRPC
// codes, and records metrics. No request can crash the process: every handler turns
// exceptions into INTERNAL.
#ifndef RECALL_SERVER_GRPC_SERVICES_H_
#define RECALL_SERVER_GRPC_SERVICES_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <deque>
#include <functional>
#include <thread>

#include "absl/status/status.h"
#include "recall/v1/recall.grpc.pb.h"
#include "server/call_auth.h"
#include "server/metrics.h"
#include "server/recall_batcher.h"
#include "server/recall_engine.h"
#include "server/replica_set.h"
#include "server/retrain_jobs.h"
#include "server/version_manager.h"

namespace recall::server {

grpc::Status ToGrpcStatus(const absl::Status& s);
std::string GrpcCodeName(grpc::StatusCode code);

// Bounds the calls of one kind that are being handled at once (admission control): beyond the
// limit a call is refused RESOURCE_EXHAUSTED before any work, so overload costs the caller a
// fast retry elsewhere instead of a queue that grows without bound. 0 = no limit. Thread-safe.
class InFlightLimit {
 public:
  explicit InFlightLimit(int limit) : limit_(limit) {}
  bool TryAcquire() {
    int cur = count_.load(std::memory_order_relaxed);
    do {
      if (limit_ > 0 && cur >= limit_) return false;
    } while (!count_.compare_exchange_weak(cur, cur + 1, std::memory_order_acq_rel));
    return true;
  }
  void Release() { count_.fetch_sub(1, std::memory_order_acq_rel); }
  int limit() const { return limit_; }

 private:
  const int limit_;
  std::atomic<int> count_{0};
};

// The service's admission limits (recall-server flags). Recall requests through the batcher
// are bounded by its queue (RecallBatcher::Options::max_queued) instead.
struct ServiceLimits {
  int max_in_flight_recalls = 0;  // Recall / RecallStream requests without the batcher
  int max_in_flight_writes = 0;   // UpsertItems + DeleteItems
  // Longest a Recall waits for its min_write_sequence when the call has no (or a later)
  // deadline.
  absl::Duration max_sequence_wait = absl::Seconds(5);
  // Longest a write waits for its log acknowledgement and application, likewise.
  absl::Duration max_write_wait = absl::Seconds(30);
};

class RecallServiceImpl final : public recall::v1::RecallService::CallbackService {
 public:
  // `batcher` (nullable): Recall and RecallStream requests go through it; without it each
  // request runs alone on the gRPC thread that received it. `auth` (nullable = every call
  // allowed): Recall, RecallStream and GetIndexInfo need the read scope, writes the admin one.
  RecallServiceImpl(const RecallEngine* engine, Metrics* metrics,
                    RecallBatcher* batcher = nullptr, const CallAuthorizer* auth = nullptr,
                    ServiceLimits limits = {})
      : engine_(engine),
        metrics_(metrics),
        batcher_(batcher),
        auth_(auth),
        limits_(limits),
        recalls_(limits.max_in_flight_recalls),
        writes_(limits.max_in_flight_writes) {}

  grpc::ServerUnaryReactor* Recall(grpc::CallbackServerContext* ctx,
                                   const recall::v1::RecallRequest* req,
                                   recall::v1::RecallResponse* resp) override;
  grpc::ServerBidiReactor<recall::v1::RecallRequest, recall::v1::RecallResponse>* RecallStream(
      grpc::CallbackServerContext* ctx) override;
  grpc::ServerUnaryReactor* UpsertItems(grpc::CallbackServerContext* ctx,
                                        const recall::v1::UpsertItemsRequest* req,
                                        recall::v1::UpsertItemsResponse* resp) override;
  grpc::ServerUnaryReactor* DeleteItems(grpc::CallbackServerContext* ctx,
                                        const recall::v1::DeleteItemsRequest* req,
                                        recall::v1::DeleteItemsResponse* resp) override;
  grpc::ServerUnaryReactor* GetIndexInfo(grpc::CallbackServerContext* ctx,
                                         const recall::v1::GetIndexInfoRequest* req,
                                         recall::v1::GetIndexInfoResponse* resp) override;

 private:
  // Runs an admitted Recall (through the batcher, or on this thread) and finishes the call.
  void RunRecall(grpc::ServerUnaryReactor* reactor, const recall::v1::RecallRequest* req,
                 recall::v1::RecallResponse* resp, std::chrono::steady_clock::time_point start,
                 std::chrono::steady_clock::time_point deadline);
  template <typename Body>
  grpc::ServerUnaryReactor* HandleWrite(grpc::CallbackServerContext* ctx, const char* method,
                                        Body&& body);

  const RecallEngine* engine_;
  Metrics* metrics_;
  RecallBatcher* batcher_;
  const CallAuthorizer* auth_;
  const ServiceLimits limits_;
  InFlightLimit recalls_;  // only without the batcher
  InFlightLimit writes_;
};

// Training and version RPCs. Those that wait for a model load or a child process
// (SetServingVersion, ReloadVersions, CancelRetrain) run on an admin thread of their own, so a
// slow load never holds a gRPC thread that requests need.
class TrainingServiceImpl final : public recall::v1::TrainingService::CallbackService {
 public:
  // `auth` (nullable): TriggerRetrain, CancelRetrain, SetServingVersion and ReloadVersions need
  // the admin scope; GetRetrainJob and ListVersions the read scope. `replicas` (nullable: a
  // lone server): SetServingVersion pins the whole replica set, ListVersions lists it.
  TrainingServiceImpl(VersionManager* versions, RetrainJobs* jobs, Metrics* metrics,
                      const CallAuthorizer* auth = nullptr, ReplicaSet* replicas = nullptr);
  ~TrainingServiceImpl() override;  // finishes queued admin calls, joins the admin thread

  grpc::ServerUnaryReactor* TriggerRetrain(grpc::CallbackServerContext* ctx,
                                           const recall::v1::TriggerRetrainRequest*,
                                           recall::v1::TriggerRetrainResponse*) override;
  grpc::ServerUnaryReactor* GetRetrainJob(grpc::CallbackServerContext* ctx,
                                          const recall::v1::GetRetrainJobRequest*,
                                          recall::v1::RetrainJob*) override;
  grpc::ServerUnaryReactor* CancelRetrain(grpc::CallbackServerContext* ctx,
                                          const recall::v1::CancelRetrainRequest*,
                                          recall::v1::CancelRetrainResponse*) override;
  grpc::ServerUnaryReactor* ListVersions(grpc::CallbackServerContext* ctx,
                                         const recall::v1::ListVersionsRequest*,
                                         recall::v1::ListVersionsResponse*) override;
  grpc::ServerUnaryReactor* SetServingVersion(grpc::CallbackServerContext* ctx,
                                              const recall::v1::SetServingVersionRequest*,
                                              recall::v1::SetServingVersionResponse*) override;
  grpc::ServerUnaryReactor* ReloadVersions(grpc::CallbackServerContext* ctx,
                                           const recall::v1::ReloadVersionsRequest*,
                                           recall::v1::ListVersionsResponse*) override;

 private:
  // Runs `body` on the admin thread and finishes the call from there.
  grpc::ServerUnaryReactor* OnAdminThread(grpc::CallbackServerContext* ctx, const char* method,
                                          std::function<absl::Status()> body);
  void FillVersions(recall::v1::ListVersionsResponse* resp) const;

  VersionManager* const versions_;
  RetrainJobs* const jobs_;
  Metrics* const metrics_;
  const CallAuthorizer* const auth_;
  ReplicaSet* const replicas_;
  absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread admin_;
};

}  // namespace recall::server

#endif  // RECALL_SERVER_GRPC_SERVICES_H_
