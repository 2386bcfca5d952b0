// WriteAheadLog: the durable, append-only record log behind online index writes (DESIGN.md
// "Online index writes"; format and guarantees in server/WAL.md).
//
// A log file is a sequence of records
//   [masked crc32c: 4 bytes LE][payload length: 4 bytes LE][payload]
// where the crc covers the 4 length bytes and the payload. Payloads are opaque bytes (the server
// stores serialized protobufs). Records are numbered by position: the i-th record in the file
// (0-based) has sequence number i, so the number survives restarts without being stored.
//
// Open() replays every complete, checksum-valid record and cuts the file at the first torn or
// corrupt one, so a crash in the middle of a write never leaves a record that is half applied
// and never blocks later appends.
//
// Thread-safety: Append, Rewrite, stats and path may be called concurrently from any thread.
// Concurrent Appends are group-committed (one write and one fdatasync per group). The destructor
// must not run while another thread is inside a method.
#ifndef RECALL_SERVER_WRITE_AHEAD_LOG_H_
#define RECALL_SERVER_WRITE_AHEAD_LOG_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace recall::server {

// Bytes of framing in front of every payload.
inline constexpr size_t kWalHeaderBytes = 8;
// Largest payload Append accepts; a stored length above it is treated as corruption (a flipped
// high bit in a length must not make recovery try to read gigabytes).
inline constexpr size_t kWalMaxPayloadBytes = size_t{64} << 20;

// When an acknowledged Append is durable.
enum class WalSyncPolicy {
  // fdatasync before Append returns: survives process crash and power loss. Concurrent appenders
  // share one fdatasync (group commit).
  kAlways,
  // write() only: the record is in the kernel page cache when Append returns, so it survives a
  // process crash or SIGKILL but not a kernel crash or power loss.
  kNone,
};

// Parses a flag value: "always" or "none". InvalidArgument otherwise.
absl::StatusOr<WalSyncPolicy> ParseWalSyncPolicy(absl::string_view name);
// The flag spelling of `policy` ("always", "none").
absl::string_view WalSyncPolicyName(WalSyncPolicy policy);

// What recovery (Open or ReadWal) found.
struct WalRecoveryInfo {
  uint64_t records = 0;        // complete, valid records read
  uint64_t valid_bytes = 0;    // file offset just past the last valid record
  uint64_t dropped_bytes = 0;  // bytes after valid_bytes (torn or corrupt tail); cut by Open
  std::string drop_reason;     // why reading stopped early; empty when nothing was dropped
};

struct WalStats {
  uint64_t appended_records = 0;  // successful Appends since Open
  uint64_t appended_bytes = 0;    // bytes those Appends wrote, framing included
  uint64_t syncs = 0;             // fdatasyncs issued by Appends (one per group under kAlways)
  uint64_t groups = 0;            // group commits (write() calls) by Appends
  uint64_t rewrites = 0;          // successful Rewrites since Open
  uint64_t file_bytes = 0;        // current size of the log file
  uint64_t next_sequence = 0;     // sequence number the next Append will get
};

class WriteAheadLog {
 public:
  struct Options {
    std::string path;
    WalSyncPolicy sync = WalSyncPolicy::kAlways;
    // Metrics hook, called once per group commit with the bytes written and the seconds spent
    // in fdatasync (0 under kNone). It runs on the committing thread, without the log's mutex
    // but before the group's waiters are released: keep it cheap.
    std::function<void(uint64_t bytes, double sync_seconds)> on_commit;
    // Called once per group whose write or sync failed, with the error (metrics, alerts).
    std::function<void(const absl::Status&)> on_error;
  };

  using ReplayFn = std::function<absl::Status(uint64_t seq, absl::string_view payload)>;

  // Opens or creates options.path, creating missing parent directories. Calls `replay` (may be
  // empty) with every complete, valid record in order (the view is only valid during the call);
  // a non-OK status from it aborts Open with that status and leaves the file untouched. At the
  // first torn or corrupt record (short header, short payload, length over kWalMaxPayloadBytes,
  // crc mismatch) reading stops and the file is truncated to the end of the last valid record
  // (ftruncate + fsync), so later appends start on a record boundary; *info (may be null)
  // reports what was kept and dropped. A leftover "<path>.rewrite" from a crashed Rewrite is
  // deleted: until its rename, the old file is the log. Errors name the path and strerror.
  static absl::StatusOr<std::unique_ptr<WriteAheadLog>> Open(const Options& options,
                                                             const ReplayFn& replay,
                                                             WalRecoveryInfo* info);

  ~WriteAheadLog();  // closes the file; does not sync (kAlways appends are already synced)

  WriteAheadLog(const WriteAheadLog&) = delete;
  WriteAheadLog& operator=(const WriteAheadLog&) = delete;

  // Appends one record; returns its sequence number once it is written (and synced, under
  // kAlways). InvalidArgument if payload is larger than kWalMaxPayloadBytes (the log stays
  // usable). Concurrent callers are group-committed as in leveldb's DBImpl::Write: the caller at
  // the head of the queue becomes the leader, takes every queued record (up to ~1 MiB), and does
  // one write() and one fdatasync for the whole group without holding the mutex, then hands each
  // follower its result. A failed write() (disk full, file too large, I/O error) fails that
  // group only: the file is cut back to the group's start, so it still ends on a record
  // boundary, and later Appends work again once the cause is gone. A failed fdatasync, or a
  // failed cut, poisons the log: that group and every later Append or Rewrite fail with the
  // error (the file may end in a partial record, which the next Open cuts), because the kernel
  // may have dropped pages it could not write. Sequence numbers are assigned in queue order, so
  // they match file order.
  absl::StatusOr<uint64_t> Append(absl::string_view payload);

  // Atomically replaces the whole log with `payloads` (compaction): writes "<path>.rewrite",
  // fsyncs it, renames it over the log, fsyncs the directory, and appends to the new file from
  // then on. It waits for the Appends queued before it, and Appends issued during it wait for it.
  // Sequence numbers restart: the new records are 0..n-1 and the next Append gets n. Returns the
  // new file size. It always fsyncs, whatever the policy: an unsynced rename could leave an empty
  // log after power loss, losing more than a tail. A failure before the rename leaves the old
  // log in place and usable; a failure after it poisons the log.
  absl::StatusOr<uint64_t> Rewrite(const std::vector<std::string>& payloads);

  WalStats stats() const;
  const std::string& path() const { return options_.path; }
  WalSyncPolicy sync_policy() const { return options_.sync; }

 private:
  struct Writer;  // one queued Append or Rewrite

  WriteAheadLog(Options options, int fd, uint64_t records, uint64_t file_bytes);

  // Leader side of Rewrite: writes, syncs and renames the new file and switches fd_ to it.
  // Runs without mu_; sets *poison when it failed after the rename (the old file is gone).
  absl::StatusOr<uint64_t> DoRewrite(const std::vector<std::string>& payloads, bool* poison);

  const Options options_;

  mutable absl::Mutex mu_;
  // Pending Appends and Rewrites, oldest first. The writer at the front is the leader: only it
  // touches fd_ and the file, and it does so with mu_ released, so fd_ needs no lock.
  std::deque<Writer*> writers_ ABSL_GUARDED_BY(mu_);
  absl::Status poison_ ABSL_GUARDED_BY(mu_);  // first I/O error; sticky
  WalStats stats_ ABSL_GUARDED_BY(mu_);
  int fd_;  // owned by the leader (see writers_)
};

// Reads the log at `path` without modifying it (tools, tests): calls fn with every valid record
// in order and stops at the first torn or corrupt one, reporting it in *info (may be null). A
// non-OK status from fn is returned as is. Missing file: NotFound naming the path.
absl::Status ReadWal(const std::string& path, const WriteAheadLog::ReplayFn& fn,
                     WalRecoveryInfo* info);

// Writes `payloads` as a complete record file at `path`, atomically: a temp file beside it
// ("<path>.tmp-<pid>"), fsync, rename, fsync of the directory (created when missing). ReadWal
// reads it back. Checkpoints of the write log are such files (server/write_snapshots.h).
absl::Status WriteRecordFile(const std::string& path, const std::vector<std::string>& payloads);

}  // namespace recall::server

#endif  // RECALL_SERVER_WRITE_AHEAD_LOG_H_
