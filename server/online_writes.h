// OnlineWrites: durable, ordered UpsertItems / DeleteItems on top of the serving model version,
// through a WriteLog (server/write_log.h): the local WAL of one process, or a replicated stream
// that every replica of a replica set reads (server/REPLICATION.md).
//
// Log first, then apply in log order:
//   - Write() appends the validated request to the log, which orders it and makes it durable,
//     and returns once this process has applied it, so the write is visible to the next
//     Recall here after the acknowledgement.
//   - One applier thread reads the log in sequence order and applies every record -- this
//     process's writes and, with a replicated log, every other replica's -- first to the folded
//     state (the last write per item id, server/folded_writes.h), then to the live index
//     (feature upserts embedded by the serving item tower). Nothing is applied that the log did
//     not order, so replicas that applied the same sequence hold the same state.
//   - A record that is invalid for every model version (it does not parse, or fails the checks
//     of request_checks.h that need no model) is skipped the same way everywhere: counted and
//     logged with its sequence. An item whose last write does not apply to the serving version
//     (a raw vector of another version, a feature that version's spec lacks) keeps what that
//     version has for it. A failure that may pass (embedding out of memory, an index error)
//     stalls the applier, which retries with back-off and raises recall_write_apply_stalled;
//     it never skips the record.
//   - Checkpoints: when the applied sequence reaches a multiple of `snapshot_every`, the fold
//     is written as a snapshot named by that sequence (server/write_snapshots.h); the newest
//     `keep_snapshots` are kept and the log is told to discard what the oldest kept covers. A
//     process starts from the newest valid snapshot, then reads the log after it.
//   - A newly loaded version gets the whole fold re-applied before it swaps in (Install), so
//     online writes survive retrains: feature upserts are re-embedded by the new item tower.
//
// Thread-safety: all methods are thread-safe.
#ifndef RECALL_SERVER_ONLINE_WRITES_H_
#define RECALL_SERVER_ONLINE_WRITES_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "recall/v1/wal.pb.h"
#include "server/folded_writes.h"
#include "server/metrics.h"
#include "server/request_checks.h"
#include "server/version_manager.h"
#include "server/write_log.h"
#include "server/write_snapshots.h"

namespace recall::server {

class OnlineWrites {
 public:
  struct Options {
    std::unique_ptr<WriteLog> log;      // required
    std::string snapshot_dir;           // where checkpoints go; empty = no checkpoints
    uint64_t snapshot_every = 100000;   // checkpoint at every multiple of this sequence (0 = never)
    size_t keep_snapshots = 2;          // newest checkpoints kept; the log keeps what they need
    // Checkpoint right after the start-up catch-up (CatchUp), at whatever sequence it reached.
    // For a log only this process writes (the local WAL): it bounds the next start-up's replay.
    bool checkpoint_after_catch_up = false;
    EngineLimits limits;                // for the model-free checks of logged records
    size_t max_batch = 1024;            // records applied together (one embedding pass)
  };

  // Loads the newest valid checkpoint (damaged ones are logged and skipped). The applier does
  // not run until Start. `metrics` may be null.
  static absl::StatusOr<std::unique_ptr<OnlineWrites>> Open(Options options, Metrics* metrics);
  ~OnlineWrites() { Stop(); }
  // Stops the applier and the timer and fails pending waiters (Unavailable). Call it before
  // the VersionManager given to Start goes away. Idempotent.
  void Stop();

  // The VersionManager installer: re-applies the fold to `candidate` outside the applier's
  // lock, then, with the applier paused, what was applied meanwhile, and swaps.
  absl::Status Install(Servable& candidate, const std::function<void()>& swap);
  // Starts the applier; it applies to versions->Current() (nothing while there is none: the
  // fold keeps the writes for the first Install).
  void Start(const VersionManager* versions);
  // Waits until the applier has reached the log's newest sequence as of this call, up to
  // `timeout`; then checkpoints if checkpoint_after_catch_up. Unavailable when the log cannot
  // be reached, DeadlineExceeded when the time ran out (both leave the applier running).
  absl::Status CatchUp(absl::Duration timeout);

  struct WriteResult {
    uint64_t seq = 0;
    bool duplicate = false;   // the request id was logged before; nothing new was logged
    int64_t deleted = 0;      // a delete: ids that were in this process's index just before
  };
  // Logs `record` (de-duplicated by its request's request_id) and returns once this process
  // has applied it. Errors: the log's (Unavailable, ResourceExhausted; nothing logged),
  // DeadlineExceeded when it was logged but not applied here by `deadline` (the message names
  // the sequence; a retry with the same request_id answers without logging it twice).
  absl::StatusOr<WriteResult> Write(const recall::v1::WriteAheadRecord& record,
                                    absl::Time deadline);

  // Every record up to this sequence is applied to the live index (0 = none).
  uint64_t applied_sequence() const;
  // Calls done(OK) once applied_sequence() >= seq, or done(Unavailable naming both sequences)
  // at `deadline`. Runs `done` inline when already applied, else on the applier's or the
  // timer's thread: it must be cheap.
  void WhenApplied(uint64_t seq, absl::Time deadline, std::function<void(absl::Status)> done);

  int64_t tracked_items() const;  // ids with an online write in the fold
  // sha256 of the live index's view of every folded id (see GetIndexInfoResponse), with the
  // applier paused; *applied is the sequence it reflects.
  std::string OnlineStateDigest(const Servable& s, uint64_t* applied) const;
  WriteLog& log() const { return *log_; }

 private:
  struct Waiter {
    absl::Time deadline;
    std::function<void(absl::Status)> done;
  };
  explicit OnlineWrites(Options options, Metrics* metrics);

  void ApplierLoop();
  // Folds and applies `records` (in order) to the current servable; retries a failed index
  // application until it succeeds or the applier stops.
  void ApplyBatch(std::vector<LogRecord> records);
  // Applies the entries to s's index. Errors are transient (embedding, index).
  absl::Status ApplyEntries(Servable& s,
                            const std::vector<std::pair<int64_t, FoldedWrites::Entry>>& entries);
  // Replaces the fold with the newest checkpoint past applied_ and applies what it adds.
  absl::Status CatchUpFromCheckpoint() ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  void Checkpoint(uint64_t seq) ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  void Advance(uint64_t seq) ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  void TimerLoop();
  void PublishLogMetrics();
  bool stopping() const;

  const Options options_;
  std::unique_ptr<WriteLog> log_;
  Metrics* const metrics_;
  WriteSnapshots snapshots_;
  const VersionManager* versions_ = nullptr;

  // The applier holds it exclusively while it folds and applies a batch; Install's last step
  // too. Readers of a consistent (fold, index) pair hold it shared.
  mutable absl::Mutex apply_mu_;
  FoldedWrites fold_ ABSL_GUARDED_BY(apply_mu_);

  mutable absl::Mutex mu_ ABSL_ACQUIRED_AFTER(apply_mu_);
  uint64_t applied_ ABSL_GUARDED_BY(mu_) = 0;
  std::multimap<uint64_t, Waiter> waiters_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, int64_t> deleted_counts_ ABSL_GUARDED_BY(mu_);  // seq -> ids removed
  bool stop_ ABSL_GUARDED_BY(mu_) = false;

  std::thread applier_;
  std::thread timer_;
};

}  // namespace recall::server

#endif  // RECALL_SERVER_ONLINE_WRITES_H_
