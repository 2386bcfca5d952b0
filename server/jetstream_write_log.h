// JetStreamWriteLog: the WriteLog of a replica set, a NATS JetStream stream (server/REPLICATION.md).
//
// - Append publishes the record to the stream's subject and returns when the stream has
//   acknowledged it: stored by the stream leader and, with replicas R > 1, by a quorum of the
//   R nodes (JetStream's Raft). nats-server 2.9 acknowledges before its own fsync (it syncs
//   every 2 minutes by default), so what survives a power loss of every node depends on
//   that: the table in REPLICATION.md. The idempotency key becomes the Nats-Msg-Id header, so
//   JetStream stores a retry within the stream's duplicate window once and acknowledges it
//   with the first copy's sequence.
// - The stream is created (or its replicas, limits and window updated) on first contact. Its
//   limits discard NEW: a full stream refuses writes (ResourceExhausted) and never drops old
//   ones silently; checkpoints purge what they cover.
// - Read follows the stream with an ordered consumer (flow-controlled, recreated by libnats
//   after a lost heartbeat or a reconnect) and checks every sequence it hands out: a gap is
//   either a purge (OutOfRange: the reader needs a checkpoint) or a consumer restart.
//
// Thread-safety: as WriteLog.
#ifndef RECALL_SERVER_JETSTREAM_WRITE_LOG_H_
#define RECALL_SERVER_JETSTREAM_WRITE_LOG_H_

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "server/nats_connection.h"
#include "server/write_log.h"

struct __natsSubscription;

namespace recall::server {

class JetStreamWriteLog final : public WriteLog {
 public:
  struct Options {
    NatsConnection* connection = nullptr;  // required; must outlive the log
    std::string stream = "RECALL_WRITES";  // the subject is "recall.writes.<stream>"
    int replicas = 1;                      // R: 3 for a 3-node cluster
    int64_t max_bytes = int64_t{1} << 30;  // -1 = no limit (discard=new either way)
    int64_t max_records = -1;
    absl::Duration dedup_window = absl::Minutes(2);
    absl::Duration publish_timeout = absl::Seconds(5);  // longest wait for one acknowledgement
  };

  // Creates or updates the stream when NATS answers; otherwise on the first later call.
  static absl::StatusOr<std::unique_ptr<JetStreamWriteLog>> Open(Options options);
  ~JetStreamWriteLog() override;

  absl::StatusOr<Appended> Append(absl::string_view payload,
                                  const AppendOptions& options) override;
  absl::StatusOr<std::vector<LogRecord>> Read(uint64_t after_seq, size_t max,
                                              absl::Duration timeout) override;
  absl::Status DiscardBefore(uint64_t seq) override;  // purges the stream below seq
  absl::StatusOr<uint64_t> LastSequence() override;
  absl::StatusOr<Usage> GetUsage() override;
  std::string Describe() const override;
  const std::string& subject() const { return subject_; }

 private:
  struct StreamState {
    uint64_t first = 0, last = 0, records = 0, bytes = 0;
    absl::Time read_at = absl::InfinitePast();
  };
  explicit JetStreamWriteLog(Options options);
  absl::Status EnsureStream();
  absl::StatusOr<StreamState> State(absl::Duration max_age);
  void DropSubscription() ABSL_EXCLUSIVE_LOCKS_REQUIRED(read_mu_);

  const Options options_;
  const std::string subject_;

  absl::Mutex stream_mu_;
  bool stream_ready_ ABSL_GUARDED_BY(stream_mu_) = false;
  StreamState state_ ABSL_GUARDED_BY(stream_mu_);

  absl::Mutex read_mu_;  // Read has one caller; this guards the consumer against DiscardBefore
  __natsSubscription* sub_ ABSL_GUARDED_BY(read_mu_) = nullptr;
  uint64_t sub_next_ ABSL_GUARDED_BY(read_mu_) = 0;  // the sequence the consumer yields next
};

}  // namespace recall::server

#endif  // RECALL_SERVER_JETSTREAM_WRITE_LOG_H_
