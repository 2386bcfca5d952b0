#include "server/grpc_services.h"

#include <chrono>

#include "absl/strings/str_cat.h"

namespace recall::server {
namespace {

using Clock = std::chrono::steady_clock;

// Runs `body` (returning absl::Status) with exception safety, finishes the reactor and records
// the request's metrics.
template <typename Body>
grpc::ServerUnaryReactor* Handle(grpc::CallbackServerContext* ctx, Metrics* metrics,
                                 const char* method, Body&& body) {
  const auto start = Clock::now();
  metrics->in_flight().Increment();
  absl::Status s;
  try {
    s = body();
  } catch (const std::exception& e) {
    s = absl::InternalError(absl::StrCat("unexpected exception: ", e.what()));
  }
  grpc::Status gs = ToGrpcStatus(s);
  metrics->in_flight().Decrement();
  metrics->ObserveRequest(method, GrpcCodeName(gs.error_code()),
                          std::chrono::duration<double>(Clock::now() - start).count());
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(gs);
  return reactor;
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  // absl::StatusCode and grpc::StatusCode share their numbering (both follow google.rpc.Code).
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

std::string GrpcCodeName(grpc::StatusCode code) {
  static const char* kNames[] = {"OK",
                                 "CANCELLED",
                                 "UNKNOWN",
                                 "INVALID_ARGUMENT",
                                 "DEADLINE_EXCEEDED",
                                 "NOT_FOUND",
                                 "ALREADY_EXISTS",
                                 "PERMISSION_DENIED",
                                 "RESOURCE_EXHAUSTED",
                                 "FAILED_PRECONDITION",
                                 "ABORTED",
                                 "OUT_OF_RANGE",
                                 "UNIMPLEMENTED",
                                 "INTERNAL",
                                 "UNAVAILABLE",
                                 "DATA_LOSS",
                                 "UNAUTHENTICATED"};
  const int c = static_cast<int>(code);
  return c >= 0 && c <= 16 ? kNames[c] : "UNKNOWN";
}

grpc::ServerUnaryReactor* RecallServiceImpl::Recall(grpc::CallbackServerContext* ctx,
                                                    const recall::v1::RecallRequest* req,
                                                    recall::v1::RecallResponse* resp) {
  return Handle(ctx, metrics_, "Recall", [&] {
    RecallTimings t;
    absl::Status s = engine_->Recall(*req, resp, &t);
    if (s.ok()) metrics_->ObserveStages(t.encode_sec, t.tower_sec, t.search_sec);
    return s;
  });
}

grpc::ServerUnaryReactor* RecallServiceImpl::UpsertItems(
    grpc::CallbackServerContext* ctx, const recall::v1::UpsertItemsRequest* req,
    recall::v1::UpsertItemsResponse* resp) {
  return Handle(ctx, metrics_, "UpsertItems", [&] {
    absl::Status s = engine_->UpsertItems(*req, resp);
    if (s.ok()) {
      metrics_->AddUpserts(resp->upserted());
      metrics_->SetIndexItems(engine_->LiveItems());
    }
    return s;
  });
}

grpc::ServerUnaryReactor* RecallServiceImpl::DeleteItems(
    grpc::CallbackServerContext* ctx, const recall::v1::DeleteItemsRequest* req,
    recall::v1::DeleteItemsResponse* resp) {
  return Handle(ctx, metrics_, "DeleteItems", [&] {
    absl::Status s = engine_->DeleteItems(*req, resp);
    if (s.ok()) {
      metrics_->AddDeletes(resp->deleted());
      metrics_->SetIndexItems(engine_->LiveItems());
    }
    return s;
  });
}

grpc::ServerUnaryReactor* RecallServiceImpl::GetIndexInfo(
    grpc::CallbackServerContext* ctx, const recall::v1::GetIndexInfoRequest*,
    recall::v1::GetIndexInfoResponse* resp) {
  return Handle(ctx, metrics_, "GetIndexInfo", [&] {
    absl::Status s = engine_->GetIndexInfo(resp);
    if (s.ok()) metrics_->SetIndexItems(resp->num_items());
    return s;
  });
}

// One reactor per stream: read a request, answer it, write the response, read the next. One
// request is in flight per stream at a time, so responses leave in request order.
class RecallStreamReactor
    : public grpc::ServerBidiReactor<recall::v1::RecallRequest, recall::v1::RecallResponse> {
 public:
  RecallStreamReactor(const RecallEngine* engine, Metrics* metrics)
      : engine_(engine), metrics_(metrics) {
    StartRead(&req_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the client half-closed: every request has been answered
      Finish(grpc::Status::OK);
      return;
    }
    const auto start = Clock::now();
    resp_.Clear();
    absl::Status s;
    RecallTimings t;
    try {
      s = engine_->Recall(req_, &resp_, &t);
    } catch (const std::exception& e) {
      s = absl::InternalError(absl::StrCat("unexpected exception: ", e.what()));
    }
    grpc::Status gs = ToGrpcStatus(s);
    metrics_->ObserveRequest("RecallStream", GrpcCodeName(gs.error_code()),
                             std::chrono::duration<double>(Clock::now() - start).count());
    if (!s.ok()) {
      Finish(gs);  // an invalid request ends the stream with its status
      return;
    }
    metrics_->ObserveStages(t.encode_sec, t.tower_sec, t.search_sec);
    StartWrite(&resp_);
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "stream write failed"));
      return;
    }
    StartRead(&req_);
  }

  void OnDone() override { delete this; }
  void OnCancel() override {}

 private:
  const RecallEngine* engine_;
  Metrics* metrics_;
  recall::v1::RecallRequest req_;
  recall::v1::RecallResponse resp_;
};

grpc::ServerBidiReactor<recall::v1::RecallRequest, recall::v1::RecallResponse>*
RecallServiceImpl::RecallStream(grpc::CallbackServerContext*) {
  return new RecallStreamReactor(engine_, metrics_);
}

grpc::ServerUnaryReactor* TrainingServiceImpl::Unimplemented(grpc::CallbackServerContext* ctx,
                                                             const char* method) {
  return Handle(ctx, metrics_, method, [&] {
    return absl::UnimplementedError(absl::StrCat(
        method, " is not implemented in this release: version management and retrain jobs "
                "come with the operations milestone (issue 4)"));
  });
}

grpc::ServerUnaryReactor* TrainingServiceImpl::TriggerRetrain(
    grpc::CallbackServerContext* ctx, const recall::v1::TriggerRetrainRequest*,
    recall::v1::TriggerRetrainResponse*) {
  return Unimplemented(ctx, "TriggerRetrain");
}
grpc::ServerUnaryReactor* TrainingServiceImpl::GetRetrainJob(
    grpc::CallbackServerContext* ctx, const recall::v1::GetRetrainJobRequest*,
    recall::v1::RetrainJob*) {
  return Unimplemented(ctx, "GetRetrainJob");
}
grpc::ServerUnaryReactor* TrainingServiceImpl::CancelRetrain(
    grpc::CallbackServerContext* ctx, const recall::v1::CancelRetrainRequest*,
    recall::v1::CancelRetrainResponse*) {
  return Unimplemented(ctx, "CancelRetrain");
}
grpc::ServerUnaryReactor* TrainingServiceImpl::ListVersions(
    grpc::CallbackServerContext* ctx, const recall::v1::ListVersionsRequest*,
    recall::v1::ListVersionsResponse*) {
  return Unimplemented(ctx, "ListVersions");
}
grpc::ServerUnaryReactor* TrainingServiceImpl::SetServingVersion(
    grpc::CallbackServerContext* ctx, const recall::v1::SetServingVersionRequest*,
    recall::v1::SetServingVersionResponse*) {
  return Unimplemented(ctx, "SetServingVersion");
}

}  // namespace recall::server
