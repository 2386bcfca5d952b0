#include "server/grpc_services.h"

#include <algorithm>
#include <atomic>
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
template <typename Call>
void FinishCall(Call* call, Metrics* metrics, const char* method, Clock::time_point start,
                const absl::Status& s) {
  grpc::Status gs = ToGrpcStatus(s);
  metrics->in_flight().Decrement();
  metrics->ObserveRequest(method, GrpcCodeName(gs.error_code()),
                          std::chrono::duration<double>(Clock::now() - start).count());
  call->Finish(gs);
}

// Runs `body` (returning absl::Status) on this thread and finishes the call; a call that
// fails `gate` (authorization) finishes with that status without running body.
template <typename Call, typename Body>
void Handle(Call* call, Metrics* metrics, const char* method, const absl::Status& gate,
            Body&& body) {
  const auto start = Clock::now();
  metrics->in_flight().Increment();
  FinishCall(call, metrics, method, start, gate.ok() ? Guarded(body) : gate);
}

// Finishes a call refused before any work (authorization), recording it like any other.
template <typename Call>
void Refuse(Call* call, Metrics* metrics, const char* method, const absl::Status& why) {
  Handle(call, metrics, method, why, [] { return absl::OkStatus(); });
}

absl::Status Authorize(const CallAuthorizer* auth, const grpc::ServerContext* ctx,
                       CallAuthorizer::Scope scope) {
  return auth == nullptr ? absl::OkStatus() : auth->Check(ctx->client_metadata(), scope);
}

constexpr auto kRead = CallAuthorizer::Scope::kRead;
constexpr auto kAdmin = CallAuthorizer::Scope::kAdmin;

// The call's deadline on the steady clock (max() = none).
Clock::time_point SteadyDeadline(const grpc::ServerContext* ctx) {
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


RecallServiceImpl::RecallServiceImpl(const RecallEngine* engine, Metrics* metrics,
                                     RecallBatcher* batcher, const CallAuthorizer* auth,
                                     ServiceLimits limits)
    : engine_(engine),
      metrics_(metrics),
      batcher_(batcher),
      auth_(auth),
      limits_(limits),
      recalls_(limits.max_in_flight_recalls),
      writes_(limits.max_in_flight_writes),
      on_recall_([this](RecallCall* call) { Recall(call); }),
      on_upsert_([this](UpsertCall* call) {
        HandleWrite(call, "UpsertItems", [this, call](absl::Time deadline) {
          absl::Status s = engine_->UpsertItems(call->request(), call->response(), deadline);
          if (s.ok()) {
            metrics_->AddUpserts(call->response()->upserted());
            engine_->ReportIndexSize(metrics_);
          }
          return s;
        });
      }),
      on_delete_([this](DeleteCall* call) {
        HandleWrite(call, "DeleteItems", [this, call](absl::Time deadline) {
          absl::Status s = engine_->DeleteItems(call->request(), call->response(), deadline);
          if (s.ok()) {
            metrics_->AddDeletes(call->response()->deleted());
            engine_->ReportIndexSize(metrics_);
          }
          return s;
        });
      }),
      on_info_([this](InfoCall* call) {
        Handle(call, metrics_, "GetIndexInfo", Authorize(auth_, call->context(), kRead), [&] {
          absl::Status s = engine_->GetIndexInfo(call->request(), call->response());
          if (s.ok()) {
            metrics_->SetIndexItems(call->response()->num_items(), call->response()->num_hidden());
          }
          return s;
        });
      }),
      write_pool_(limits.max_in_flight_writes > 0 ? limits.max_in_flight_writes : 64) {}

void RecallServiceImpl::Recall(RecallCall* call) {
  grpc::ServerContext* ctx = call->context();
  if (absl::Status gate = Authorize(auth_, ctx, kRead); !gate.ok()) {
    return Refuse(call, metrics_, "Recall", gate);
  }
  const Clock::time_point deadline = SteadyDeadline(ctx);
  const auto start = Clock::now();
  metrics_->in_flight().Increment();
  if (call->request().min_write_sequence() > 0) {
    // Read-your-writes: the call waits (without a thread) until this replica has applied the
    // sequence, then runs as any other.
    engine_->WhenApplied(call->request().min_write_sequence(),
                         WaitDeadline(deadline, limits_.max_sequence_wait),
                         [this, call, start, deadline](const absl::Status& s) {
                           if (!s.ok()) return FinishCall(call, metrics_, "Recall", start, s);
                           RunRecall(call, start, deadline);
                         });
    return;
  }
  RunRecall(call, start, deadline);
}

void RecallServiceImpl::RunRecall(RecallCall* call, Clock::time_point start,
                                  Clock::time_point deadline) {
  if (batcher_ != nullptr) {
    Batch(
        &call->request(), call->response(),
        [this, call, start](const absl::Status& s, const RecallTimings& t, int) {
          if (s.ok()) metrics_->ObserveQueueWait(t.queue_sec);
          FinishCall(call, metrics_, "Recall", start, s);
        },
        deadline);
    return;
  }
  absl::Status s = Admit(metrics_, recalls_, "--max_in_flight_recalls", deadline);
  if (s.ok()) {
    RecallTimings t;
    s = Guarded([&] { return engine_->Recall(call->request(), call->response(), &t); });
    recalls_.Release();
    if (s.ok()) {
      metrics_->ObserveStages(t.encode_sec, t.tower_sec, t.search_sec);
      metrics_->ObserveBatch(1);
    }
  }
  FinishCall(call, metrics_, "Recall", start, s);
}

void RecallServiceImpl::Batch(const recall::v1::RecallRequest* req,
                              recall::v1::RecallResponse* resp, RecallBatcher::Done done,
                              Clock::time_point deadline) {
  const int q = queues_ != nullptr ? queues_->CurrentQueue() : -1;
  if (q >= 0 && q < static_cast<int>(collected_.size())) {
    batcher_->Collect(*collected_[q], req, resp, std::move(done), deadline);
  } else {
    batcher_->Submit(req, resp, std::move(done), deadline);
  }
}

template <typename Call, typename Body>
void RecallServiceImpl::HandleWrite(Call* call, const char* method, Body body) {
  if (absl::Status gate = Authorize(auth_, call->context(), kAdmin); !gate.ok()) {
    return Refuse(call, metrics_, method, gate);
  }
  if (absl::Status admit = Admit(metrics_, writes_, "--max_in_flight_writes",
                                 Clock::time_point::max());
      !admit.ok()) {
    return Refuse(call, metrics_, method, admit);
  }
  const auto start = Clock::now();
  metrics_->in_flight().Increment();
  const absl::Time deadline =
      WaitDeadline(SteadyDeadline(call->context()), limits_.max_write_wait);
  write_pool_.Run([this, call, method, start, deadline, body = std::move(body)] {
    const absl::Status s = Guarded([&] { return body(deadline); });
    writes_.Release();
    FinishCall(call, metrics_, method, start, s);
  });
}

// One RecallStream call: read a request, answer it, write the response, read the next. One
// request is in flight per stream at a time, so responses leave in request order, and one
// operation is pending on the call at a time, so `this` is its only tag. A cancelled call
// shows as a failed read or write; the call then finishes, and goes when that tag is back.
class RecallServiceImpl::StreamCall final : public AsyncOp {
 public:
  StreamCall(RecallServiceImpl* service, grpc::ServerCompletionQueue* cq, LiveOps* live)
      : AsyncOp(live), service_(service), cq_(cq), stream_(&ctx_) {
    service_->service_.RequestRecallStream(&ctx_, &stream_, cq_, cq_, this);
  }

  void Proceed(bool ok) override {
    switch (state_.load(std::memory_order_acquire)) {
      case State::kRequested:
        if (!ok) break;  // no call came (shutdown)
        new StreamCall(service_, cq_, live());
        if (absl::Status gate = Authorize(service_->auth_, &ctx_, kRead); !gate.ok()) {
          service_->metrics_->ObserveRequest(
              "RecallStream", GrpcCodeName(ToGrpcStatus(gate).error_code()), 0);
          return Finish(ToGrpcStatus(gate));
        }
        deadline_ = SteadyDeadline(&ctx_);
        return Read();
      case State::kReading:
        if (!ok) return Finish(grpc::Status::OK);  // half-closed: every request was answered
        return OnRequest();
      case State::kWriting:
        if (!ok) return Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "stream write failed"));
        return Read();
      case State::kFinishing:
        break;
    }
    delete this;
  }

 private:
  enum class State { kRequested, kReading, kWriting, kFinishing };

  // The state is stored with release before each operation starts: Answer runs on a batch
  // worker, and the queue thread that gets the operation's tag reads it (and the response).
  void Read() {
    state_.store(State::kReading, std::memory_order_release);
    stream_.Read(&req_, this);
  }

  void Finish(const grpc::Status& status) {
    state_.store(State::kFinishing, std::memory_order_release);
    stream_.Finish(status, this);
  }

  void OnRequest() {
    const auto start = Clock::now();
    resp_.Clear();
    if (req_.min_write_sequence() > 0) {
      service_->engine_->WhenApplied(
          req_.min_write_sequence(),
          WaitDeadline(deadline_, service_->limits_.max_sequence_wait),
          [this, start](const absl::Status& s) {
            if (!s.ok()) return Answer(s, start);
            Run(start);
          });
      return;
    }
    Run(start);
  }

  void Run(Clock::time_point start) {
    Metrics* metrics = service_->metrics_;
    if (service_->batcher_ != nullptr) {
      // req_ and resp_ stay untouched until the answer: the next read starts after the write.
      service_->Batch(
          &req_, &resp_,
          [this, start, metrics](const absl::Status& s, const RecallTimings& t, int) {
            if (s.ok()) metrics->ObserveQueueWait(t.queue_sec);
            Answer(s, start);
          },
          deadline_);
      return;
    }
    InFlightLimit& limit = service_->recalls_;
    if (absl::Status admit = Admit(metrics, limit, "--max_in_flight_recalls", deadline_);
        !admit.ok()) {
      return Answer(admit, start);
    }
    RecallTimings t;
    const absl::Status s = Guarded([&] { return service_->engine_->Recall(req_, &resp_, &t); });
    limit.Release();
    if (s.ok()) {
      metrics->ObserveStages(t.encode_sec, t.tower_sec, t.search_sec);
      metrics->ObserveBatch(1);
    }
    Answer(s, start);
  }

  void Answer(const absl::Status& s, Clock::time_point start) {
    grpc::Status gs = ToGrpcStatus(s);
    service_->metrics_->ObserveRequest("RecallStream", GrpcCodeName(gs.error_code()),
                                       std::chrono::duration<double>(Clock::now() - start).count());
    if (!s.ok()) return Finish(gs);  // an invalid request ends the stream with its status
    state_.store(State::kWriting, std::memory_order_release);
    stream_.Write(resp_, this);
  }

  RecallServiceImpl* const service_;
  grpc::ServerCompletionQueue* const cq_;
  grpc::ServerContext ctx_;
  grpc::ServerAsyncReaderWriter<recall::v1::RecallResponse, recall::v1::RecallRequest> stream_;
  std::atomic<State> state_{State::kRequested};
  Clock::time_point deadline_ = Clock::time_point::max();
  recall::v1::RecallRequest req_;
  recall::v1::RecallResponse resp_;
};

void RecallServiceImpl::Arm(CompletionQueueThreads& queues) {
  if (batcher_ != nullptr && limits_.batch_on_queue_threads &&
      batcher_->options().max_wait_us == 0) {
    queues_ = &queues;
    for (size_t i = 0; i < queues.queues().size(); ++i) {
      collected_.push_back(std::make_unique<RecallBatcher::Collected>());
    }
    queues.AddIdleHook([this](int q) {
      if (!collected_[q]->empty()) batcher_->RunCollected(*collected_[q]);
    });
  }
  LiveOps* live = queues.live_ops();
  for (const auto& q : queues.queues()) {
    grpc::ServerCompletionQueue* cq = q.get();
    RecallCall::Arm(&service_, &Proto::RequestRecall, cq, live, &on_recall_);
    UpsertCall::Arm(&service_, &Proto::RequestUpsertItems, cq, live, &on_upsert_);
    DeleteCall::Arm(&service_, &Proto::RequestDeleteItems, cq, live, &on_delete_);
    InfoCall::Arm(&service_, &Proto::RequestGetIndexInfo, cq, live, &on_info_);
    new StreamCall(this, cq, live);
  }
}

TrainingServiceImpl::TrainingServiceImpl(VersionManager* versions, RetrainJobs* jobs,
                                         Metrics* metrics, const CallAuthorizer* auth,
                                         ReplicaSet* replicas)
    : versions_(versions),
      jobs_(jobs),
      metrics_(metrics),
      auth_(auth),
      replicas_(replicas),
      on_trigger_([this](TriggerCall* call) {
        Handle(call, metrics_, "TriggerRetrain", Authorize(auth_, call->context(), kAdmin), [&] {
          auto id = jobs_->Trigger(call->request());
          if (!id.ok()) return id.status();
          call->response()->set_job_id(*id);
          return absl::OkStatus();
        });
      }),
      on_get_job_([this](GetJobCall* call) {
        Handle(call, metrics_, "GetRetrainJob", Authorize(auth_, call->context(), kRead), [&] {
          auto job = jobs_->Get(call->request().job_id());
          if (!job.ok()) return job.status();
          *call->response() = *std::move(job);
          return absl::OkStatus();
        });
      }),
      on_cancel_([this](CancelCall* call) {
        OnAdminThread(call, "CancelRetrain", [this, call] {
          auto job = jobs_->Cancel(call->request().job_id());
          if (!job.ok()) return job.status();
          *call->response()->mutable_job() = *std::move(job);
          return absl::OkStatus();
        });
      }),
      on_list_([this](ListCall* call) {
        Handle(call, metrics_, "ListVersions", Authorize(auth_, call->context(), kRead), [&] {
          FillVersions(call->response());
          return absl::OkStatus();
        });
      }),
      on_set_([this](SetCall* call) {
        OnAdminThread(call, "SetServingVersion", [this, call] {
          const int64_t version = call->request().version();
          absl::Status s = replicas_ != nullptr ? replicas_->SetServingVersion(version)
                                                : versions_->SetServingVersion(version);
          if (!s.ok()) return s;
          call->response()->set_serving_version(versions_->serving_version());
          return absl::OkStatus();
        });
      }),
      on_reload_([this](ReloadCall* call) {
        OnAdminThread(call, "ReloadVersions", [this, call] {
          absl::Status s = versions_->Reconcile();
          FillVersions(call->response());
          return s;
        });
      }) {}

TrainingServiceImpl::~TrainingServiceImpl() = default;

void TrainingServiceImpl::Arm(CompletionQueueThreads& queues) {
  LiveOps* live = queues.live_ops();
  for (const auto& q : queues.queues()) {
    grpc::ServerCompletionQueue* cq = q.get();
    TriggerCall::Arm(&service_, &Proto::RequestTriggerRetrain, cq, live, &on_trigger_);
    GetJobCall::Arm(&service_, &Proto::RequestGetRetrainJob, cq, live, &on_get_job_);
    CancelCall::Arm(&service_, &Proto::RequestCancelRetrain, cq, live, &on_cancel_);
    ListCall::Arm(&service_, &Proto::RequestListVersions, cq, live, &on_list_);
    SetCall::Arm(&service_, &Proto::RequestSetServingVersion, cq, live, &on_set_);
    ReloadCall::Arm(&service_, &Proto::RequestReloadVersions, cq, live, &on_reload_);
  }
}

template <typename Call>
void TrainingServiceImpl::OnAdminThread(Call* call, const char* method,
                                        std::function<absl::Status()> body) {
  if (absl::Status gate = Authorize(auth_, call->context(), kAdmin); !gate.ok()) {
    return Refuse(call, metrics_, method, gate);
  }
  const auto start = Clock::now();
  metrics_->in_flight().Increment();
  admin_.Run([this, call, method, start, body = std::move(body)] {
    FinishCall(call, metrics_, method, start, Guarded(body));
  });
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

}  // namespace recall::server
