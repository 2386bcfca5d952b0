// gRPC edge of recall-server (callback API): maps requests to RecallEngine, statuses to gRPC
// codes, and records metrics. No request can crash the process: every handler turns
// exceptions into INTERNAL.
#ifndef RECALL_SERVER_GRPC_SERVICES_H_
#define RECALL_SERVER_GRPC_SERVICES_H_

#include <grpcpp/grpcpp.h>

#include <deque>
#include <functional>
#include <thread>

#include "absl/status/status.h"
#include "recall/v1/recall.grpc.pb.h"
#include "server/call_auth.h"
#include "server/metrics.h"
#include "server/recall_batcher.h"
#include "server/recall_engine.h"
#include "server/retrain_jobs.h"
#include "server/version_manager.h"

namespace recall::server {

grpc::Status ToGrpcStatus(const absl::Status& s);
std::string GrpcCodeName(grpc::StatusCode code);

class RecallServiceImpl final : public recall::v1::RecallService::CallbackService {
 public:
  // `batcher` (nullable): Recall and RecallStream requests go through it; without it each
  // request runs alone on the gRPC thread that received it. `auth` (nullable = every call
  // allowed): Recall, RecallStream and GetIndexInfo need the read scope, writes the admin one.
  RecallServiceImpl(const RecallEngine* engine, Metrics* metrics,
                    RecallBatcher* batcher = nullptr, const CallAuthorizer* auth = nullptr)
      : engine_(engine), metrics_(metrics), batcher_(batcher), auth_(auth) {}

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
  const RecallEngine* engine_;
  Metrics* metrics_;
  RecallBatcher* batcher_;
  const CallAuthorizer* auth_;
};

// Training and version RPCs. Those that wait for a model load or a child process
// (SetServingVersion, ReloadVersions, CancelRetrain) run on an admin thread of their own, so a
// slow load never holds a gRPC thread that requests need.
class TrainingServiceImpl final : public recall::v1::TrainingService::CallbackService {
 public:
  // `auth` (nullable): TriggerRetrain, CancelRetrain, SetServingVersion and ReloadVersions need
  // the admin scope; GetRetrainJob and ListVersions the read scope.
  TrainingServiceImpl(VersionManager* versions, RetrainJobs* jobs, Metrics* metrics,
                      const CallAuthorizer* auth = nullptr);
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
  absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread admin_;
};

}  // namespace recall::server

#endif  // RECALL_SERVER_GRPC_SERVICES_H_
