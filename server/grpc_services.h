// gRPC edge of recall-server (callback API): maps requests to RecallEngine, statuses to gRPC
// codes, and records metrics. No request can crash the process: every handler turns
// exceptions into INTERNAL.
#ifndef RECALL_SERVER_GRPC_SERVICES_H_
#define RECALL_SERVER_GRPC_SERVICES_H_

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "recall/v1/recall.grpc.pb.h"
#include "server/metrics.h"
#include "server/recall_engine.h"

namespace recall::server {

grpc::Status ToGrpcStatus(const absl::Status& s);
std::string GrpcCodeName(grpc::StatusCode code);

class RecallServiceImpl final : public recall::v1::RecallService::CallbackService {
 public:
  RecallServiceImpl(const RecallEngine* engine, Metrics* metrics)
      : engine_(engine), metrics_(metrics) {}

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
};

// Training and version RPCs: the server answers UNIMPLEMENTED until the version manager and
// retrain jobs land (issue 4); the messages say so.
class TrainingServiceImpl final : public recall::v1::TrainingService::CallbackService {
 public:
  explicit TrainingServiceImpl(Metrics* metrics) : metrics_(metrics) {}
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

 private:
  grpc::ServerUnaryReactor* Unimplemented(grpc::CallbackServerContext* ctx, const char* method);
  Metrics* metrics_;
};

}  // namespace recall::server

#endif  // RECALL_SERVER_GRPC_SERVICES_H_
