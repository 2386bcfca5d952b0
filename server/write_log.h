// WriteLog: the ordered, durable log of online index writes (DESIGN.md "Online index writes").
//
// A log hands every appended record a sequence number, delivers the records in sequence order
// to its reader, and forgets what a checkpoint covers. Records are opaque bytes. Two
// implementations ship (server/REPLICATION.md says why and what each survives):
//   - LocalWriteLog (local_write_log.h): a file on this machine (server/WAL.md), one process.
//   - JetStreamWriteLog (jetstream_write_log.h): a NATS JetStream stream that every replica of
//     a replica set reads, so all of them apply the same writes in the same order.
// Another broker (Kafka through librdkafka, say) is one more implementation of this interface;
// nothing outside its own files would change.
//
// Sequences start at 1 and only grow; they are never reused, not even across restarts,
// checkpoints or purges, so a caller may compare sequences from any replica.
//
// Thread-safety: Append, LastSequence and Describe may be called from any thread at once.
// Read has one caller at a time (the applier); DiscardBefore may run beside Append and Read.
#ifndef RECALL_SERVER_WRITE_LOG_H_
#define RECALL_SERVER_WRITE_LOG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace recall::server {

struct LogRecord {
  uint64_t seq = 0;
  std::string payload;
  absl::Time logged_at;  // when the log stored it (visibility-lag metric)
};

class WriteLog {
 public:
  struct AppendOptions {
    // Idempotency key (empty = none): an append whose key the log has seen within its
    // de-duplication window stores nothing and returns the earlier record's sequence.
    std::string dedup_id;
    absl::Time deadline = absl::InfiniteFuture();  // give up (Unavailable/DeadlineExceeded)
  };
  struct Appended {
    uint64_t seq = 0;
    bool duplicate = false;  // dedup_id was seen: nothing was stored
  };

  virtual ~WriteLog() = default;

  // Stores `payload` durably (what "durably" means is the implementation's: see its header)
  // and returns its sequence. Errors: Unavailable when the log cannot be reached or written
  // (the message names it; nothing was applied, and a retry with the same dedup_id is safe),
  // ResourceExhausted when the log is full and refuses new records, InvalidArgument for a
  // payload over the record size limit.
  virtual absl::StatusOr<Appended> Append(absl::string_view payload,
                                          const AppendOptions& options) = 0;

  // The next records after `after_seq`, in order, at most `max`: waits up to `timeout` for the
  // first one and returns what is there then (possibly nothing). OutOfRange when records after
  // `after_seq` are gone (discarded below a checkpoint the reader has not loaded); Unavailable
  // while the log cannot be reached.
  virtual absl::StatusOr<std::vector<LogRecord>> Read(uint64_t after_seq, size_t max,
                                                      absl::Duration timeout) = 0;

  // Records below `seq` are covered by a checkpoint and may be dropped.
  virtual absl::Status DiscardBefore(uint64_t seq) = 0;

  // The newest sequence the log holds (0 when empty), for lag metrics. May be a cached value a
  // second old; Unavailable while the log cannot be reached.
  virtual absl::StatusOr<uint64_t> LastSequence() = 0;

  // What the log holds now against its limits (-1 = no limit), for the fullness metrics. May
  // be a second old; Unavailable while the log cannot be reached.
  struct Usage {
    uint64_t records = 0;
    uint64_t bytes = 0;
    int64_t max_records = -1;
    int64_t max_bytes = -1;
  };
  virtual absl::StatusOr<Usage> GetUsage() = 0;

  // Where the log is, for logs and GetIndexInfo ("local WAL <path>", "JetStream stream ...").
  virtual std::string Describe() const = 0;
};

}  // namespace recall::server

#endif  // RECALL_SERVER_WRITE_LOG_H_
