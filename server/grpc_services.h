// gRPC edge of recall-server, on the completion-queue API (server/async_calls.h says why): maps
// requests to RecallEngine, statuses to gRPC codes, and records metrics. No request can crash
// the process: every handler turns exceptions into INTERNAL. A handler never blocks the queue's
// thread: Recalls go to the batcher, writes to a pool of their own, slow admin calls to the
// admin thread.
//
// Use: register service() with the builder, BuildAndStart, Arm(queues), then start the queues'
// threads (CompletionQueueThreads). Shut the server down before these objects go.
#ifndef RECALL_SERVER_GRPC_SERVICES_H_
#define RECALL_SERVER_GRPC_SERVICES_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "recall/v1/recall.grpc.pb.h"
#include "server/async_calls.h"
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
  // A Recall that arrives on a completion-queue thread is collected there
  // (RecallBatcher::Collect): alone and with the workers idle it runs on that thread, else it
  // goes to the workers. Only with a batch wait of 0. Off by default (--batch_on_queue_threads).
  bool batch_on_queue_threads = false;
};

class RecallServiceImpl {
 public:
  using Proto = recall::v1::RecallService::AsyncService;

  // `batcher` (nullable): Recall and RecallStream requests go through it; without it each
  // request runs alone on the queue's thread that received it. `auth` (nullable = every call
  // allowed): Recall, RecallStream and GetIndexInfo need the read scope, writes the admin one.
  RecallServiceImpl(const RecallEngine* engine, Metrics* metrics,
                    RecallBatcher* batcher = nullptr, const CallAuthorizer* auth = nullptr,
                    ServiceLimits limits = {});
  RecallServiceImpl(const RecallServiceImpl&) = delete;
  RecallServiceImpl& operator=(const RecallServiceImpl&) = delete;

  Proto* service() { return &service_; }
  // Requests the first call of every method on every queue, and adds the hook that runs the
  // Recalls each queue's thread collected (ServiceLimits::batch_on_queue_threads).
  void Arm(CompletionQueueThreads& queues);

 private:
  class StreamCall;
  using RecallCall = UnaryCall<Proto, recall::v1::RecallRequest, recall::v1::RecallResponse>;
  using UpsertCall =
      UnaryCall<Proto, recall::v1::UpsertItemsRequest, recall::v1::UpsertItemsResponse>;
  using DeleteCall =
      UnaryCall<Proto, recall::v1::DeleteItemsRequest, recall::v1::DeleteItemsResponse>;
  using InfoCall =
      UnaryCall<Proto, recall::v1::GetIndexInfoRequest, recall::v1::GetIndexInfoResponse>;

  void Recall(RecallCall* call);
  // Hands an admitted request to the batcher: collected by this queue thread, or queued for a
  // worker.
  void Batch(const recall::v1::RecallRequest* req, recall::v1::RecallResponse* resp,
             RecallBatcher::Done done, std::chrono::steady_clock::time_point deadline);
  // Runs an admitted Recall (through the batcher, or on this thread) and finishes the call.
  void RunRecall(RecallCall* call, std::chrono::steady_clock::time_point start,
                 std::chrono::steady_clock::time_point deadline);
  // An admin write: authorized, admitted under --max_in_flight_writes, then body(deadline) on
  // the write pool, `deadline` being how long it may wait for the log (ServiceLimits).
  template <typename Call, typename Body>
  void HandleWrite(Call* call, const char* method, Body body);

  const RecallEngine* engine_;
  Metrics* metrics_;
  RecallBatcher* batcher_;
  const CallAuthorizer* auth_;
  const ServiceLimits limits_;
  InFlightLimit recalls_;  // only without the batcher
  InFlightLimit writes_;
  Proto service_;
  const RecallCall::Handler on_recall_;
  const UpsertCall::Handler on_upsert_;
  const DeleteCall::Handler on_delete_;
  const InfoCall::Handler on_info_;
  // Per queue thread: the Recalls it collected during its current poll.
  const CompletionQueueThreads* queues_ = nullptr;
  std::vector<std::unique_ptr<RecallBatcher::Collected>> collected_;
  // Writes wait for their log's acknowledgement and application: they run here, as many at
  // once as --max_in_flight_writes admits (64 when unbounded).
  BlockingCallPool write_pool_;
};

// Training and version RPCs. Those that wait for a model load or a child process
// (SetServingVersion, ReloadVersions, CancelRetrain) run on an admin thread of their own, so a
// slow load never holds a thread that requests need.
class TrainingServiceImpl {
 public:
  using Proto = recall::v1::TrainingService::AsyncService;

  // `auth` (nullable): TriggerRetrain, CancelRetrain, SetServingVersion and ReloadVersions need
  // the admin scope; GetRetrainJob and ListVersions the read scope. `replicas` (nullable: a
  // lone server): SetServingVersion pins the whole replica set, ListVersions lists it.
  TrainingServiceImpl(VersionManager* versions, RetrainJobs* jobs, Metrics* metrics,
                      const CallAuthorizer* auth = nullptr, ReplicaSet* replicas = nullptr);
  ~TrainingServiceImpl();  // finishes queued admin calls, joins the admin thread
  TrainingServiceImpl(const TrainingServiceImpl&) = delete;
  TrainingServiceImpl& operator=(const TrainingServiceImpl&) = delete;

  Proto* service() { return &service_; }
  void Arm(CompletionQueueThreads& queues);

 private:
  template <typename Call>
  using Handler = typename Call::Handler;
  using TriggerCall = UnaryCall<Proto, recall::v1::TriggerRetrainRequest,
                                recall::v1::TriggerRetrainResponse>;
  using GetJobCall = UnaryCall<Proto, recall::v1::GetRetrainJobRequest, recall::v1::RetrainJob>;
  using CancelCall =
      UnaryCall<Proto, recall::v1::CancelRetrainRequest, recall::v1::CancelRetrainResponse>;
  using ListCall =
      UnaryCall<Proto, recall::v1::ListVersionsRequest, recall::v1::ListVersionsResponse>;
  using SetCall = UnaryCall<Proto, recall::v1::SetServingVersionRequest,
                            recall::v1::SetServingVersionResponse>;
  using ReloadCall =
      UnaryCall<Proto, recall::v1::ReloadVersionsRequest, recall::v1::ListVersionsResponse>;

  // Runs `body` on the admin thread and finishes the call from there.
  template <typename Call>
  void OnAdminThread(Call* call, const char* method, std::function<absl::Status()> body);
  void FillVersions(recall::v1::ListVersionsResponse* resp) const;

  VersionManager* const versions_;
  RetrainJobs* const jobs_;
  Metrics* const metrics_;
  const CallAuthorizer* const auth_;
  ReplicaSet* const replicas_;
  Proto service_;
  const Handler<TriggerCall> on_trigger_;
  const Handler<GetJobCall> on_get_job_;
  const Handler<CancelCall> on_cancel_;
  const Handler<ListCall> on_list_;
  const Handler<SetCall> on_set_;
  const Handler<ReloadCall> on_reload_;
  BlockingCallPool admin_{1};  // last: its destructor runs what is queued before the rest goes
};

}  // namespace recall::server

#endif  // RECALL_SERVER_GRPC_SERVICES_H_
