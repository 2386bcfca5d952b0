// LocalWriteLog: the WriteLog of one process, on the write-ahead log file of server/WAL.md.
// The embedded default: no broker, durable per the WAL's sync policy (fdatasync before the
// append returns under `always`).
//
// Sequences: record i of the file (0-based) has sequence i + 1, unless the file opens with a
// sequence-base record (WriteAheadRecord.sequence_base = B, written by DiscardBefore), in which
// case record i >= 1 has sequence B + i - 1. So sequences survive restarts and checkpoints.
// Read delivers the records of this process's own appends (and, after Open, those replayed
// from the file) in sequence order, from memory. De-duplication ids are remembered for
// `dedup_window` from the append (replayed records' ids count from Open).
//
// Thread-safety: as WriteLog.
#ifndef RECALL_SERVER_LOCAL_WRITE_LOG_H_
#define RECALL_SERVER_LOCAL_WRITE_LOG_H_

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "server/write_ahead_log.h"
#include "server/write_log.h"

namespace recall::server {

class LocalWriteLog final : public WriteLog {
 public:
  struct Options {
    std::string path;                                  // the WAL file (created if missing)
    WalSyncPolicy sync = WalSyncPolicy::kAlways;
    absl::Duration dedup_window = absl::Minutes(2);
    std::function<void(uint64_t bytes, double sync_seconds)> on_commit;  // metrics
    std::function<void(const absl::Status&)> on_error;                   // failed appends
  };

  // Opens the file (cutting a torn tail, reported in *recovery) and queues its records for Read.
  static absl::StatusOr<std::unique_ptr<LocalWriteLog>> Open(Options options,
                                                             WalRecoveryInfo* recovery);

  absl::StatusOr<Appended> Append(absl::string_view payload,
                                  const AppendOptions& options) override;
  absl::StatusOr<std::vector<LogRecord>> Read(uint64_t after_seq, size_t max,
                                              absl::Duration timeout) override;
  // Rewrites the file as [sequence base `seq`, every record >= seq] while appends wait.
  absl::Status DiscardBefore(uint64_t seq) override;
  absl::StatusOr<uint64_t> LastSequence() override;
  absl::StatusOr<Usage> GetUsage() override;  // the file; no limits
  std::string Describe() const override { return "local WAL " + options_.path; }

  WalStats wal_stats() const { return wal_->stats(); }

 private:
  explicit LocalWriteLog(Options options) : options_(std::move(options)) {}
  // The sequence of WAL position `pos`.
  uint64_t SeqOf(uint64_t pos) const ABSL_SHARED_LOCKS_REQUIRED(gate_) { return offset_ + pos; }
  void Remember(const std::string& id, uint64_t seq) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  std::unique_ptr<WriteAheadLog> wal_;

  // Appends hold it shared, DiscardBefore (which renumbers positions) exclusively.
  absl::Mutex gate_ ABSL_ACQUIRED_BEFORE(mu_);
  uint64_t offset_ ABSL_GUARDED_BY(gate_) = 1;  // sequence = offset_ + WAL position
  bool has_base_ ABSL_GUARDED_BY(gate_) = false;  // record 0 is a sequence base, not a write

  absl::Mutex mu_;
  // Appended records not yet read, and those that arrived out of order (concurrent appenders
  // of one group commit return in any order) until the gap before them fills.
  std::deque<LogRecord> unread_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, LogRecord> early_ ABSL_GUARDED_BY(mu_);
  uint64_t next_seq_ ABSL_GUARDED_BY(mu_) = 1;  // the sequence the next in-order record has
  // De-duplication: id -> sequence, ids in append order with their time, ids being appended.
  absl::flat_hash_map<std::string, uint64_t> dedup_ ABSL_GUARDED_BY(mu_);
  std::deque<std::pair<absl::Time, std::string>> dedup_order_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> appending_ ABSL_GUARDED_BY(mu_);
};

}  // namespace recall::server

#endif  // RECALL_SERVER_LOCAL_WRITE_LOG_H_
