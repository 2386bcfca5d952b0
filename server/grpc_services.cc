#include "server/grpc_services.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace recall::server {
namespace {

using Clock = std::chrono::steady_clock;

// body(), with any exception turned into INTERNAL.
template <typename Body>
absl::Status Guarded(Body&& body) {
  try {
    return body();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("unexpected exception: ", e.what()));
  }
}

// Records the call's metrics (it entered in flight at `start`) and finishes it with `s`.
void FinishCall(grpc::ServerUnaryReactor* reactor, Metrics* metrics, const char* method,
                Clock::time_point start, const absl::Status& s) {
  grpc::Status gs = ToGrpcStatus(s);
  metrics->in_flight().Decrement();
  metrics->ObserveRequest(method, GrpcCodeName(gs.error_code()),
                          std::chrono::duration<double>(Clock::now() - start).count());
  reactor->Finish(gs);
}

// Runs `body` (returning absl::Status) on this thread and finishes the call; a call that
// fails `gate` (authorization) finishes with that status without running body.
template <typename Body>
grpc::ServerUnaryReactor* Handle(grpc::CallbackServerContext* ctx, Metrics* metrics,
                                 const char* method, const absl::Status& gate, Body&& body) {
  const auto start = Clock::now();
  metrics->in_flight().Increment();
  auto* reactor = ctx->DefaultReactor();
  FinishCall(reactor, metrics, method, start, gate.ok() ? Guarded(body) : gate);
  return reactor;
}

// Finishes a call refused before any work (authorization), recording it like any other.
grpc::ServerUnaryReactor* Refuse(grpc::CallbackServerContext* ctx, Metrics* metrics,
                                 const char* method, const absl::Status& why) {
  return Handle(ctx, metrics, method, why, [] { return absl::OkStatus(); });
}

absl::Status Authorize(const CallAuthorizer* auth, const grpc::CallbackServerContext* ctx,
                       CallAuthorizer::Scope scope) {
  return auth == nullptr ? absl::OkStatus() : auth->Check(ctx->client_metadata(), scope);
}

constexpr auto kRead = CallAuthorizer::Scope::kRead;
constexpr auto kAdmin = CallAuthorizer::Scope::kAdmin;

// The call's deadline on the steady clock (max() = none).
Clock::time_point SteadyDeadline(const grpc::CallbackServerContext* ctx) {
  const auto deadline = ctx->deadline();
  const auto now = std::chrono::system_clock::now();
  // gRPC reports "no deadline" as a far-future time; anything beyond a day counts as none.
  if (deadline - now > std::chrono::hours(24)) return Clock::time_point::max();
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(deadline - now);
}

// How long a call may wait for something (a write sequence, a log acknowledgement) before it
// answers: up to `cap` (a call without a deadline must not wait for ever), and ending a little
// before the call's own deadline, so that the caller gets our answer, which names what was
// missing, rather than its own DEADLINE_EXCEEDED.
absl::Time WaitDeadline(Clock::time_point deadline, absl::Duration cap) {
  const absl::Time now = absl::Now();
  if (deadline == Clock::time_point::max()) return now + cap;
  const absl::Duration left = absl::FromChrono(deadline - Clock::now());
  return now + std::min(cap, left - std::min(absl::Milliseconds(100), left / 10));
}

absl::Status DeadlinePassed() {
  return absl::DeadlineExceededError("the call's deadline passed before it was handled");
}

// Admission of work run on the calling thread: refused (and counted as shed) when the call's
// deadline has passed or `limit` is full; on OK the caller holds a slot of `limit` to Release.
absl::Status Admit(Metrics* metrics, InFlightLimit& limit, const char* flag,
                   Clock::time_point deadline) {
  if (deadline <= Clock::now()) {
    metrics->AddShed("deadline");
    return DeadlinePassed();
  }
  if (!limit.TryAcquire()) {
    metrics->AddShed("in_flight");
    return absl::ResourceExhaustedError(absl::StrCat(
        "server overloaded: ", limit.limit(), " calls of this kind in flight (", flag, ")"));
  }
  return absl::OkStatus();
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
  if (absl::Status gate = Authorize(auth_, ctx, kRead); !gate.ok()) {
    return Refuse(ctx, metrics_, "Recall", gate);
  }
  const Clock::time_point deadline = SteadyDeadline(ctx);
  if (req->min_write_sequence() > 0) {
    // Read-your-writes: the call waits (without a thread) until this replica has applied the
    // sequence, then runs as any other.
    const auto start = Clock::now();
    metrics_->in_flight().Increment();
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    engine_->WhenApplied(
        req->min_write_sequence(), WaitDeadline(deadline, limits_.max_sequence_wait),
        [this, reactor, req, resp, start, deadline](const absl::Status& s) {
          if (!s.ok()) return FinishCall(reactor, metrics_, "Recall", start, s);
          RunRecall(reactor, req, resp, start, deadline);
        });
    return reactor;
  }
  if (batcher_ == nullptr) {
    if (absl::Status admit = Admit(metrics_, recalls_, "--max_in_flight_recalls", deadline);
        !admit.ok()) {
      return Refuse(ctx, metrics_, "Recall", admit);
    }
    auto* reactor = Handle(ctx, metrics_, "Recall", absl::OkStatus(), [&] {
      RecallTimings t;
      absl::Status s = engine_->Recall(*req, resp, &t);
      if (s.ok()) {
        metrics_->ObserveStages(t.encode_sec, t.tower_sec, t.search_sec);
        metrics_->ObserveBatch(1);
      }
      return s;
    });
    recalls_.Release();
    return reactor;
  }
  const auto start = Clock::now();
  metrics_->in_flight().Increment();
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  RunRecall(reactor, req, resp, start, deadline);
  return reactor;
}

void RecallServiceImpl::RunRecall(grpc::ServerUnaryReactor* reactor,
                                  const recall::v1::RecallRequest* req,
                                  recall::v1::RecallResponse* resp, Clock::time_point start,
                                  Clock::time_point deadline) {
  if (batcher_ != nullptr) {
    batcher_->Submit(
        req, resp,
        [this, reactor, start](const absl::Status& s, const RecallTimings& t, int) {
          if (s.ok()) metrics_->ObserveQueueWait(t.queue_sec);
          FinishCall(reactor, metrics_, "Recall", start, s);
        },
        deadline);
    return;
  }
  // Without the batcher (after a write-sequence wait): admitted like any other call.
  absl::Status s = Admit(metrics_, recalls_, "--max_in_flight_recalls", deadline);
  if (s.ok()) {
    RecallTimings t;
    s = Guarded([&] { return engine_->Recall(*req, resp, &t); });
    recalls_.Release();
    if (s.ok()) {
      metrics_->ObserveStages(t.encode_sec, t.tower_sec, t.search_sec);
      metrics_->ObserveBatch(1);
    }
  }
  FinishCall(reactor, metrics_, "Recall", start, s);
}

// An admin write (UpsertItems, DeleteItems): authorized, admitted under --max_in_flight_writes,
// then run on this thread.
template <typename Body>
grpc::ServerUnaryReactor* RecallServiceImpl::HandleWrite(grpc::CallbackServerContext* ctx,
                                                         const char* method, Body&& body) {
  if (absl::Status gate = Authorize(auth_, ctx, kAdmin); !gate.ok()) {
    return Refuse(ctx, metrics_, method, gate);
  }
  if (absl::Status admit = Admit(metrics_, writes_, "--max_in_flight_writes",
                                 Clock::time_point::max());
      !admit.ok()) {
    return Refuse(ctx, metrics_, method, admit);
  }
  grpc::ServerUnaryReactor* reactor = Handle(ctx, metrics_, method, absl::OkStatus(), body);
  writes_.Release();
  return reactor;
}

grpc::ServerUnaryReactor* RecallServiceImpl::UpsertItems(
    grpc::CallbackServerContext* ctx, const recall::v1::UpsertItemsRequest* req,
    recall::v1::UpsertItemsResponse* resp) {
  const absl::Time deadline = WaitDeadline(SteadyDeadline(ctx), limits_.max_write_wait);
  return HandleWrite(ctx, "UpsertItems", [&] {
    absl::Status s = engine_->UpsertItems(*req, resp, deadline);
    if (s.ok()) {
      metrics_->AddUpserts(resp->upserted());
      engine_->ReportIndexSize(metrics_);
    }
    return s;
  });
}

grpc::ServerUnaryReactor* RecallServiceImpl::DeleteItems(
    grpc::CallbackServerContext* ctx, const recall::v1::DeleteItemsRequest* req,
    recall::v1::DeleteItemsResponse* resp) {
  const absl::Time deadline = WaitDeadline(SteadyDeadline(ctx), limits_.max_write_wait);
  return HandleWrite(ctx, "DeleteItems", [&] {
    absl::Status s = engine_->DeleteItems(*req, resp, deadline);
    if (s.ok()) {
      metrics_->AddDeletes(resp->deleted());
      engine_->ReportIndexSize(metrics_);
    }
    return s;
  });
}

grpc::ServerUnaryReactor* RecallServiceImpl::GetIndexInfo(
    grpc::CallbackServerContext* ctx, const recall::v1::GetIndexInfoRequest* req,
    recall::v1::GetIndexInfoResponse* resp) {
  return Handle(ctx, metrics_, "GetIndexInfo", Authorize(auth_, ctx, kRead), [&] {
    absl::Status s = engine_->GetIndexInfo(*req, resp);
    if (s.ok()) metrics_->SetIndexItems(resp->num_items(), resp->num_hidden());
    return s;
  });
}

// One reactor per stream: read a request, answer it, write the response, read the next. One
// request is in flight per stream at a time, so responses leave in request order.
class RecallStreamReactor
    : public grpc::ServerBidiReactor<recall::v1::RecallRequest, recall::v1::RecallResponse> {
 public:
  RecallStreamReactor(const RecallEngine* engine, Metrics* metrics, RecallBatcher* batcher,
                      InFlightLimit* limit, const absl::Status& gate, Clock::time_point deadline,
                      absl::Duration max_sequence_wait)
      : engine_(engine),
        metrics_(metrics),
        batcher_(batcher),
        limit_(limit),
        deadline_(deadline),
        max_sequence_wait_(max_sequence_wait) {
    if (!gate.ok()) {
      metrics_->ObserveRequest("RecallStream", GrpcCodeName(ToGrpcStatus(gate).error_code()), 0);
      Finish(ToGrpcStatus(gate));
      return;
    }
    StartRead(&req_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the client half-closed: every request has been answered
      Finish(grpc::Status::OK);
      return;
    }
    const auto start = Clock::now();
    resp_.Clear();
    if (req_.min_write_sequence() > 0) {
      engine_->WhenApplied(req_.min_write_sequence(), WaitDeadline(deadline_, max_sequence_wait_),
                           [this, start](const absl::Status& s) {
                             if (!s.ok()) return Answer(s, start);
                             Run(start);
                           });
      return;
    }
    Run(start);
  }

  void Run(Clock::time_point start) {
    if (batcher_ != nullptr) {
      // req_ and resp_ stay untouched until the answer: the next read starts after the write.
      batcher_->Submit(
          &req_, &resp_,
          [this, start](const absl::Status& s, const RecallTimings& t, int) {
            if (s.ok()) metrics_->ObserveQueueWait(t.queue_sec);
            Answer(s, start);
          },
          deadline_);
      return;
    }
    if (absl::Status admit = Admit(metrics_, *limit_, "--max_in_flight_recalls", deadline_);
        !admit.ok()) {
      Answer(admit, start);
      return;
    }
    RecallTimings t;
    const absl::Status s = Guarded([&] { return engine_->Recall(req_, &resp_, &t); });
    limit_->Release();
    if (s.ok()) {
      metrics_->ObserveStages(t.encode_sec, t.tower_sec, t.search_sec);
      metrics_->ObserveBatch(1);
    }
    Answer(s, start);
  }

  void Answer(const absl::Status& s, Clock::time_point start) {
    grpc::Status gs = ToGrpcStatus(s);
    metrics_->ObserveRequest("RecallStream", GrpcCodeName(gs.error_code()),
                             std::chrono::duration<double>(Clock::now() - start).count());
    if (!s.ok()) {
      Finish(gs);  // an invalid request ends the stream with its status
      return;
    }
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
  RecallBatcher* batcher_;
  InFlightLimit* limit_;
  const Clock::time_point deadline_;
  const absl::Duration max_sequence_wait_;
  recall::v1::RecallRequest req_;
  recall::v1::RecallResponse resp_;
};

grpc::ServerBidiReactor<recall::v1::RecallRequest, recall::v1::RecallResponse>*
RecallServiceImpl::RecallStream(grpc::CallbackServerContext* ctx) {
  return new RecallStreamReactor(engine_, metrics_, batcher_, &recalls_,
                                 Authorize(auth_, ctx, kRead), SteadyDeadline(ctx),
                                 limits_.max_sequence_wait);
}

TrainingServiceImpl::TrainingServiceImpl(VersionManager* versions, RetrainJobs* jobs,
                                         Metrics* metrics, const CallAuthorizer* auth,
                                         ReplicaSet* replicas)
    : versions_(versions), jobs_(jobs), metrics_(metrics), auth_(auth), replicas_(replicas) {
  admin_ = std::thread([this] {
    absl::MutexLock lock(&mu_);
    while (true) {
      mu_.Await(absl::Condition(
          +[](TrainingServiceImpl* t) ABSL_NO_THREAD_SAFETY_ANALYSIS {
            return t->stop_ || !t->queue_.empty();
          },
          this));
      if (queue_.empty()) return;  // stop_ and drained
      auto f = std::move(queue_.front());
      queue_.pop_front();
      mu_.Unlock();
      f();
      mu_.Lock();
    }
  });
}

TrainingServiceImpl::~TrainingServiceImpl() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  admin_.join();
}

grpc::ServerUnaryReactor* TrainingServiceImpl::OnAdminThread(grpc::CallbackServerContext* ctx,
                                                             const char* method,
                                                             std::function<absl::Status()> body) {
  if (absl::Status gate = Authorize(auth_, ctx, kAdmin); !gate.ok()) {
    return Refuse(ctx, metrics_, method, gate);
  }
  auto* reactor = ctx->DefaultReactor();
  const auto start = Clock::now();
  metrics_->in_flight().Increment();
  absl::MutexLock lock(&mu_);
  queue_.push_back([this, reactor, method, start, body = std::move(body)] {
    FinishCall(reactor, metrics_, method, start, Guarded(body));
  });
  return reactor;
}

void TrainingServiceImpl::FillVersions(recall::v1::ListVersionsResponse* resp) const {
  for (const VersionStatus& v : versions_->List()) {
    auto* out = resp->add_versions();
    out->set_version(v.version);
    out->set_state(v.state);
    out->set_created_at(v.manifest.created_at());
    *out->mutable_eval() = v.manifest.eval();
    out->set_index_factory(v.manifest.index_factory());
    *out->mutable_index_search_params() = v.manifest.index_search_params();
    if (v.manifest.has_index_tuning()) {
      const recall::v1::IndexTuning& t = v.manifest.index_tuning();
      if (t.chosen() >= 0 && t.chosen() < t.points_size()) {
        out->set_index_recall(t.points(t.chosen()).recall());
      }
      out->set_index_recall_k(t.k());
      out->set_index_recall_target(t.recall_target());
    }
  }
  resp->set_serving_version(versions_->serving_version());
  resp->set_pinned_version(versions_->pinned_version());
  if (replicas_ != nullptr) {
    for (auto& r : replicas_->Replicas()) *resp->add_replicas() = std::move(r);
  }
}

grpc::ServerUnaryReactor* TrainingServiceImpl::TriggerRetrain(
    grpc::CallbackServerContext* ctx, const recall::v1::TriggerRetrainRequest* req,
    recall::v1::TriggerRetrainResponse* resp) {
  return Handle(ctx, metrics_, "TriggerRetrain", Authorize(auth_, ctx, kAdmin), [&] {
    auto id = jobs_->Trigger(*req);
    if (!id.ok()) return id.status();
    resp->set_job_id(*id);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* TrainingServiceImpl::GetRetrainJob(
    grpc::CallbackServerContext* ctx, const recall::v1::GetRetrainJobRequest* req,
    recall::v1::RetrainJob* resp) {
  return Handle(ctx, metrics_, "GetRetrainJob", Authorize(auth_, ctx, kRead), [&] {
    auto job = jobs_->Get(req->job_id());
    if (!job.ok()) return job.status();
    *resp = *std::move(job);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* TrainingServiceImpl::CancelRetrain(
    grpc::CallbackServerContext* ctx, const recall::v1::CancelRetrainRequest* req,
    recall::v1::CancelRetrainResponse* resp) {
  return OnAdminThread(ctx, "CancelRetrain", [this, req, resp] {
    auto job = jobs_->Cancel(req->job_id());
    if (!job.ok()) return job.status();
    *resp->mutable_job() = *std::move(job);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* TrainingServiceImpl::ListVersions(
    grpc::CallbackServerContext* ctx, const recall::v1::ListVersionsRequest*,
    recall::v1::ListVersionsResponse* resp) {
  return Handle(ctx, metrics_, "ListVersions", Authorize(auth_, ctx, kRead), [&] {
    FillVersions(resp);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* TrainingServiceImpl::SetServingVersion(
    grpc::CallbackServerContext* ctx, const recall::v1::SetServingVersionRequest* req,
    recall::v1::SetServingVersionResponse* resp) {
  return OnAdminThread(ctx, "SetServingVersion", [this, req, resp] {
    absl::Status s = replicas_ != nullptr ? replicas_->SetServingVersion(req->version())
                                          : versions_->SetServingVersion(req->version());
    if (!s.ok()) return s;
    resp->set_serving_version(versions_->serving_version());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* TrainingServiceImpl::ReloadVersions(
    grpc::CallbackServerContext* ctx, const recall::v1::ReloadVersionsRequest*,
    recall::v1::ListVersionsResponse* resp) {
  return OnAdminThread(ctx, "ReloadVersions", [this, resp] {
    absl::Status s = versions_->Reconcile();
    FillVersions(resp);
    return s;
  });
}

}  // namespace recall::server
