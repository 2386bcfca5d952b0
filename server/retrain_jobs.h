// RetrainJobs: TriggerRetrain / GetRetrainJob / CancelRetrain.
//
// A job runs the trainer command (default: recall-train next to recall-server) as a supervised
// child process -- argv, never a shell, in its own process group -- with
//   --dataset=<dataset> --model_base=<model_base>/.retrain-<job> --publish_version=<N>
//   --progress=json --preset=<preset> [--overrides=<the request's config as textproto>]
// so it publishes into a staging base the version manager never reads. Progress comes from the
// trainer's TrainingEvent JSON lines, the log tail from its stdout and stderr. When the child succeeds the
// quality gate compares the staged version's Recall@K with the serving version's (validation
// figures when both have them, else test ones): more than `gate_margin` (relative) below is
// "rejected" with both figures and the staged version is discarded; otherwise it is renamed
// into model_base as version N and the version manager reconciles at once, so the server
// serves it with no other action (unless a version is pinned). One job at a time; a failed or
// cancelled job never touches model_base.
//
// On Kubernetes, point --retrain_command at a wrapper that runs the same argv as a Job.
//
// Thread-safety: all methods are thread-safe.
#ifndef RECALL_SERVER_RETRAIN_JOBS_H_
#define RECALL_SERVER_RETRAIN_JOBS_H_

#include <sys/types.h>

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "recall/v1/recall.pb.h"
#include "server/version_manager.h"

namespace recall::server {

class RetrainJobs {
 public:
  struct Options {
    std::vector<std::string> command;  // argv prefix, e.g. {"/usr/local/bin/recall-train"}
    std::string model_base;
    double gate_margin = 0.05;          // relative drop of the gate metric that is refused
    std::string gate_metric = "recall@20";
    size_t log_tail_lines = 40;
    size_t keep_jobs = 20;              // finished jobs remembered for GetRetrainJob
    int cancel_grace_s = 5;             // SIGTERM, then SIGKILL after this long
    // Called when a job ends: its final state ("succeeded", "failed", "rejected", "cancelled").
    std::function<void(const std::string& result)> on_finish;
    std::function<void(bool running)> on_running;
  };
  RetrainJobs(Options options, VersionManager* versions);
  ~RetrainJobs();  // cancels a running job and joins its supervisor

  // FailedPrecondition when a job is queued or running; InvalidArgument for a bad dataset, an
  // unknown preset, an override of a field not marked (retrain_override) in
  // train_config.proto (naming it), or a config CheckTrainConfig refuses. The preset and
  // overrides resolve through model/train_config.h, exactly as recall-train resolves them.
  absl::StatusOr<std::string> Trigger(const recall::v1::TriggerRetrainRequest& req);
  // job_id "" = the latest job. NotFound for an unknown id.
  absl::StatusOr<recall::v1::RetrainJob> Get(const std::string& job_id) const;
  // Stops a running job (the serving version is untouched). A finished job is returned as is.
  absl::StatusOr<recall::v1::RetrainJob> Cancel(const std::string& job_id);

 private:
  struct Job {
    recall::v1::RetrainJob info;
    pid_t pid = -1;
    bool cancel_requested = false;
    std::deque<std::string> tail;
    std::string staging_base;
    int64_t version = 0;
  };
  void Supervise(std::shared_ptr<Job> job, std::vector<std::string> argv);
  // After a successful child: gate and promote. Returns the final state and message.
  void Finish(const std::shared_ptr<Job>& job, int exit_status);
  void SetState(const std::shared_ptr<Job>& job, recall::v1::RetrainState state,
                const std::string& message);
  void OnLine(const std::shared_ptr<Job>& job, const std::string& line);
  std::shared_ptr<Job> Find(const std::string& job_id) const ABSL_SHARED_LOCKS_REQUIRED(mu_);

  const Options options_;
  VersionManager* const versions_;
  mutable absl::Mutex mu_;
  std::deque<std::shared_ptr<Job>> jobs_ ABSL_GUARDED_BY(mu_);  // newest last
  int64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  absl::Mutex trigger_mu_ ABSL_ACQUIRED_BEFORE(mu_);  // serializes Trigger and shutdown
  std::thread supervisor_ ABSL_GUARDED_BY(trigger_mu_);  // of the latest job
};

}  // namespace recall::server

#endif  // RECALL_SERVER_RETRAIN_JOBS_H_
