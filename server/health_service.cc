#include "server/health_service.h"

namespace recall::server {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

// One Watch call. Its tags: `this` for the request and then each write and the finish (one at a
// time), and `done_` for gRPC's end-of-call notice (the client cancelled, or the call ended).
// Once the request matched a call, the object goes when both chains have ended. All its state
// is guarded by the service's mutex: SetServing writes from any thread.
class HealthService::Watch final : public AsyncOp {
 public:
  Watch(HealthService* health, grpc::ServerCompletionQueue* cq, LiveOps* live)
      : AsyncOp(live), health_(health), cq_(cq), writer_(&ctx_), done_(this) {
    ctx_.AsyncNotifyWhenDone(&done_);
    health_->service_.RequestWatch(&ctx_, &request_, &writer_, cq_, cq_, this);
  }

  void Proceed(bool ok) override {
    bool release = false;
    {
      absl::MutexLock lock(&health_->mu_);
      if (!matched_) {
        if (!ok) {  // no call came: shutdown (the done notice never comes either)
          release = true;
        } else {
          matched_ = true;
          if (!health_->shut_down_) health_->ArmWatch(cq_, live());
          health_->watches_.insert(this);
          NextLocked();
        }
      } else if (finishing_) {
        ops_ended_ = true;
        release = ended_;
      } else {  // a write completed
        writing_ = false;
        if (!ok || ended_) {
          FinishLocked(grpc::Status::CANCELLED);
        } else {
          NextLocked();
        }
      }
    }
    if (release) delete this;
  }

  // The status changed (or the service is shutting down): sends it unless a write is in flight,
  // whose completion sends the newest.
  void NotifyLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(health_->mu_) {
    if (!writing_ && !finishing_) NextLocked();
  }

 private:
  struct Done final : AsyncOp {
    explicit Done(Watch* w) : AsyncOp(nullptr), watch(w) {}
    void Proceed(bool) override { watch->Ended(); }
    Watch* const watch;
  };

  void Ended() {
    bool release = false;
    {
      absl::MutexLock lock(&health_->mu_);
      ended_ = true;
      health_->watches_.erase(this);
      if (!writing_ && !finishing_) FinishLocked(grpc::Status::CANCELLED);
      release = ops_ended_;
    }
    if (release) delete this;
  }

  // With no write in flight: sends the status if it is not the one last sent; after Shutdown,
  // once the last status is out, ends the call.
  void NextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(health_->mu_) {
    const int now = health_->StatusOf(request_.service());
    if (now != sent_) {
      WriteLocked(now);
    } else if (health_->shut_down_) {
      FinishLocked(grpc::Status::OK);
    }
  }

  void WriteLocked(int status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(health_->mu_) {
    sent_ = status;
    response_.set_status(static_cast<HealthCheckResponse::ServingStatus>(sent_));
    writing_ = true;
    writer_.Write(response_, this);
  }

  void FinishLocked(const grpc::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(health_->mu_) {
    finishing_ = true;
    health_->watches_.erase(this);
    writer_.Finish(status, this);
  }

  HealthService* const health_;
  grpc::ServerCompletionQueue* const cq_;
  grpc::ServerContext ctx_;
  HealthCheckRequest request_;
  HealthCheckResponse response_;
  grpc::ServerAsyncWriter<HealthCheckResponse> writer_;
  Done done_;
  bool matched_ = false;    // the request became a call
  bool writing_ = false;    // a write is in flight
  bool finishing_ = false;  // Finish was called: the op chain's last tag is pending
  bool ops_ended_ = false;  // ... and it came back
  bool ended_ = false;      // gRPC's done notice came
  int sent_ = -1;           // the status last written
};

HealthService::HealthService()
    : check_([this](CheckCall* call) {
        int status;
        {
          absl::MutexLock lock(&mu_);
          status = StatusOf(call->request().service());
        }
        if (status == HealthCheckResponse::SERVICE_UNKNOWN) {
          call->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown service"));
          return;
        }
        call->response()->set_status(static_cast<HealthCheckResponse::ServingStatus>(status));
        call->Finish(grpc::Status::OK);
      }) {}

HealthService::~HealthService() = default;

void HealthService::Arm(CompletionQueueThreads& queues) {
  for (const auto& cq : queues.queues()) {
    CheckCall::Arm(&service_, &Proto::RequestCheck, cq.get(), queues.live_ops(), &check_);
    absl::MutexLock lock(&mu_);
    ArmWatch(cq.get(), queues.live_ops());
  }
}

void HealthService::ArmWatch(grpc::ServerCompletionQueue* cq, LiveOps* live) {
  new Watch(this, cq, live);
}

int HealthService::StatusOf(const std::string& name) const {
  if (!name.empty()) return HealthCheckResponse::SERVICE_UNKNOWN;
  return serving_ && !shut_down_ ? HealthCheckResponse::SERVING : HealthCheckResponse::NOT_SERVING;
}

void HealthService::SetServing(bool serving) {
  absl::MutexLock lock(&mu_);
  if (shut_down_ || serving_ == serving) return;
  serving_ = serving;
  // A copy: NotifyLocked may finish a watch, which leaves the set.
  const std::vector<Watch*> watches(watches_.begin(), watches_.end());
  for (Watch* w : watches) w->NotifyLocked();
}

void HealthService::Shutdown() {
  absl::MutexLock lock(&mu_);
  if (shut_down_) return;
  shut_down_ = true;
  const std::vector<Watch*> watches(watches_.begin(), watches_.end());
  for (Watch* w : watches) w->NotifyLocked();
}

}  // namespace recall::server
