#include "server/jetstream_write_log.h"

#include <glog/logging.h>
#include <nats/nats.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace recall::server {
namespace {

// How often an idle ordered consumer hears from the server: a lost consumer (its node died)
// is noticed and recreated after about two missed beats.
constexpr int64_t kHeartbeatNs = int64_t{1000} * 1000 * 1000;

std::string LastError() {
  const char* e = nats_GetLastError(nullptr);
  return e ? e : "";
}

}  // namespace

JetStreamWriteLog::JetStreamWriteLog(Options options)
    : options_(std::move(options)),
      subject_(absl::StrCat("recall.writes.", absl::AsciiStrToLower(options_.stream))) {}

absl::StatusOr<std::unique_ptr<JetStreamWriteLog>> JetStreamWriteLog::Open(Options options) {
  if (options.connection == nullptr) {
    return absl::InvalidArgumentError("JetStreamWriteLog needs a NATS connection");
  }
  if (options.stream.empty() || options.stream.find_first_of(" .*>\t") != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--write_stream: \"", options.stream, "\" is not a JetStream stream name (no spaces, "
        "dots, * or >)"));
  }
  if (options.replicas < 1 || options.replicas > 5) {
    return absl::InvalidArgumentError("--write_stream_replicas: must be 1..5");
  }
  std::unique_ptr<JetStreamWriteLog> log(new JetStreamWriteLog(std::move(options)));
  if (log->options_.connection->connected()) {
    if (auto s = log->EnsureStream(); !s.ok()) {
      // Refused configuration (e.g. more replicas than nodes) is an operator error: say so now.
      if (!absl::IsUnavailable(s)) return s;
      LOG(WARNING) << s.message() << "; will retry";
    }
  }
  return log;
}

JetStreamWriteLog::~JetStreamWriteLog() {
  absl::MutexLock lock(&read_mu_);
  DropSubscription();
}

std::string JetStreamWriteLog::Describe() const {
  return absl::StrCat("JetStream stream ", options_.stream, " (R", options_.replicas, ") on ",
                      options_.connection->servers());
}

absl::Status JetStreamWriteLog::EnsureStream() {
  absl::MutexLock lock(&stream_mu_);
  if (stream_ready_) return absl::OkStatus();
  NatsConnection& c = *options_.connection;
  if (!c.connected()) return c.Unreachable(absl::StrCat("setting up stream ", options_.stream));
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  cfg.Name = options_.stream.c_str();
  const char* subjects[] = {subject_.c_str()};
  cfg.Subjects = subjects;
  cfg.SubjectsLen = 1;
  cfg.Storage = js_FileStorage;
  cfg.Retention = js_LimitsPolicy;
  // Never drop a write silently: a full stream refuses new ones; checkpoints purge old ones.
  cfg.Discard = js_DiscardNew;
  cfg.MaxBytes = options_.max_bytes;
  cfg.MaxMsgs = options_.max_records;
  cfg.Replicas = options_.replicas;
  cfg.Duplicates = absl::ToInt64Nanoseconds(options_.dedup_window);
  jsStreamInfo* si = nullptr;
  jsErrCode je = static_cast<jsErrCode>(0);
  natsStatus s = js_GetStreamInfo(&si, c.js(), options_.stream.c_str(), nullptr, &je);
  if (s == NATS_NOT_FOUND || je == JSStreamNotFoundErr) {
    s = js_AddStream(&si, c.js(), &cfg, nullptr, &je);
    if (s != NATS_OK) {
      return NatsError(s, je, absl::StrCat("creating stream ", options_.stream, " (R",
                                           options_.replicas, ")"));
    }
    LOG(INFO) << "created " << Describe() << " on subject " << subject_;
  } else if (s != NATS_OK) {
    return NatsError(s, je, absl::StrCat("looking up stream ", options_.stream));
  } else {
    const jsStreamConfig* have = si->Config;
    const bool same = have->Replicas == cfg.Replicas && have->MaxBytes == cfg.MaxBytes &&
                      have->MaxMsgs == cfg.MaxMsgs && have->Discard == cfg.Discard &&
                      have->Duplicates == cfg.Duplicates && have->SubjectsLen == 1 &&
                      subject_ == have->Subjects[0];
    jsStreamInfo_Destroy(si);
    si = nullptr;
    if (!same) {
      s = js_UpdateStream(&si, c.js(), &cfg, nullptr, &je);
      if (s != NATS_OK) {
        return NatsError(s, je, absl::StrCat("updating stream ", options_.stream, " to R",
                                             options_.replicas, ", discard=new and its limits"));
      }
      LOG(INFO) << "updated " << Describe();
    }
  }
  if (si) jsStreamInfo_Destroy(si);
  stream_ready_ = true;
  return absl::OkStatus();
}

absl::StatusOr<WriteLog::Appended> JetStreamWriteLog::Append(absl::string_view payload,
                                                             const AppendOptions& options) {
  NatsConnection& c = *options_.connection;
  if (!c.connected()) {
    return c.Unreachable("the write was not logged, so not applied; retry once NATS is back");
  }
  if (auto s = EnsureStream(); !s.ok()) return s;
  const absl::Duration left = options.deadline - absl::Now();
  if (left <= absl::ZeroDuration()) {
    return absl::DeadlineExceededError("the deadline passed before the write was logged");
  }
  natsMsg* msg = nullptr;
  natsStatus s = natsMsg_Create(&msg, subject_.c_str(), nullptr, payload.data(),
                                static_cast<int>(payload.size()));
  if (s != NATS_OK) return NatsError(s, 0, "creating a message");
  jsPubOptions po;
  jsPubOptions_Init(&po);
  if (!options.dedup_id.empty()) po.MsgId = options.dedup_id.c_str();
  po.ExpectStream = options_.stream.c_str();
  po.MaxWait = std::max<int64_t>(1, absl::ToInt64Milliseconds(std::min(left,
                                                                       options_.publish_timeout)));
  jsPubAck* ack = nullptr;
  jsErrCode je = static_cast<jsErrCode>(0);
  s = js_PublishMsg(&ack, c.js(), msg, &po, &je);
  natsMsg_Destroy(msg);
  if (s == NATS_OK && ack != nullptr) {
    Appended a{ack->Sequence, ack->Duplicate};
    jsPubAck_Destroy(ack);
    return a;
  }
  if (ack) jsPubAck_Destroy(ack);
  const std::string err = LastError();
  if (je == JSStreamStoreFailedErr &&
      (absl::StrContains(err, "maximum") || absl::StrContains(err, "resource limits"))) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "write stream ", options_.stream, " is full and refuses new writes (discard=new): ", err,
        ". Nothing was logged. Checkpoints purge it; see recall_write_log_stored_bytes"));
  }
  if (je == JSStreamMessageExceedsMaximumErr) {
    return absl::InvalidArgumentError(absl::StrCat("the write is larger than stream ",
                                                   options_.stream, " accepts: ", err));
  }
  if (s == NATS_TIMEOUT || s == NATS_NO_RESPONDERS || s == NATS_CONNECTION_DISCONNECTED ||
      s == NATS_CONNECTION_CLOSED || je == JSClusterNotAvailErr || je == JSClusterNotLeaderErr) {
    // The stream may or may not have stored it (a lost acknowledgement): a retry with the same
    // request_id is safe either way.
    return absl::UnavailableError(absl::StrCat(
        "NATS (", c.servers(), ") did not acknowledge the write: ", natsStatus_GetText(s),
        err.empty() ? "" : " (" + err + ")",
        "; it may or may not be logged, so retry with the same request_id"));
  }
  {
    absl::MutexLock lock(&stream_mu_);
    stream_ready_ = false;  // e.g. the stream was deleted: set it up again next time
  }
  return NatsError(s, je, absl::StrCat("publishing to stream ", options_.stream));
}

void JetStreamWriteLog::DropSubscription() {
  if (sub_ != nullptr) {
    natsSubscription_Unsubscribe(sub_);
    natsSubscription_Destroy(sub_);
    sub_ = nullptr;
  }
}

absl::StatusOr<JetStreamWriteLog::StreamState> JetStreamWriteLog::State(absl::Duration max_age) {
  {
    absl::MutexLock lock(&stream_mu_);
    if (absl::Now() - state_.read_at <= max_age) return state_;
  }
  NatsConnection& c = *options_.connection;
  if (!c.connected()) return c.Unreachable(absl::StrCat("reading stream ", options_.stream));
  jsStreamInfo* si = nullptr;
  jsErrCode je = static_cast<jsErrCode>(0);
  natsStatus s = js_GetStreamInfo(&si, c.js(), options_.stream.c_str(), nullptr, &je);
  if (s != NATS_OK) {
    if (s == NATS_NOT_FOUND || je == JSStreamNotFoundErr) {
      absl::MutexLock lock(&stream_mu_);
      stream_ready_ = false;
    }
    return NatsError(s, je, absl::StrCat("reading stream ", options_.stream));
  }
  StreamState st;
  st.first = si->State.FirstSeq;
  st.last = si->State.LastSeq;
  st.records = si->State.Msgs;
  st.bytes = si->State.Bytes;
  st.read_at = absl::Now();
  jsStreamInfo_Destroy(si);
  absl::MutexLock lock(&stream_mu_);
  state_ = st;
  return st;
}

absl::StatusOr<std::vector<LogRecord>> JetStreamWriteLog::Read(uint64_t after_seq, size_t max,
                                                               absl::Duration timeout) {
  absl::MutexLock lock(&read_mu_);
  NatsConnection& c = *options_.connection;
  std::vector<LogRecord> out;
  if (!c.connected()) {
    DropSubscription();
    absl::SleepFor(std::min(timeout, absl::Milliseconds(200)));
    return c.Unreachable(absl::StrCat("reading stream ", options_.stream));
  }
  if (auto s = EnsureStream(); !s.ok()) return s;
  if (sub_ == nullptr || sub_next_ != after_seq + 1) {
    DropSubscription();
    auto st = State(absl::ZeroDuration());
    if (!st.ok()) return st.status();
    if (st->first > after_seq + 1) {
      return absl::OutOfRangeError(absl::StrCat("stream ", options_.stream, " starts at ",
                                                st->first, " (purged), after ", after_seq,
                                                " is needed"));
    }
    if (st->last < after_seq) {
      // Sequences never go back: the stream was deleted and made anew. Applying its new
      // records on top of state from the old one would mix two histories.
      return absl::FailedPreconditionError(absl::StrCat(
          "stream ", options_.stream, " ends at sequence ", st->last, ", below the ", after_seq,
          " this replica applied: it was recreated. Move the write snapshots of the old stream "
          "away and restart the replicas (server/REPLICATION.md)"));
    }
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = options_.stream.c_str();
    so.Ordered = true;
    so.Config.DeliverPolicy = js_DeliverByStartSequence;
    so.Config.OptStartSeq = after_seq + 1;
    so.Config.Heartbeat = kHeartbeatNs;
    jsErrCode je = static_cast<jsErrCode>(0);
    natsStatus s = js_SubscribeSync(&sub_, c.js(), subject_.c_str(), nullptr, &so, &je);
    if (s != NATS_OK) {
      sub_ = nullptr;
      return NatsError(s, je, absl::StrCat("following stream ", options_.stream, " from ",
                                           after_seq + 1));
    }
    sub_next_ = after_seq + 1;
  }
  int64_t wait_ms = std::max<int64_t>(1, absl::ToInt64Milliseconds(timeout));
  while (out.size() < max) {
    natsMsg* m = nullptr;
    natsStatus s = natsSubscription_NextMsg(&m, sub_, wait_ms);
    if (s == NATS_TIMEOUT) break;
    if (s != NATS_OK) {
      DropSubscription();
      if (out.empty()) return NatsError(s, 0, absl::StrCat("following stream ", options_.stream));
      break;
    }
    jsMsgMetaData* md = nullptr;
    if (natsMsg_GetMetaData(&md, m) != NATS_OK) {
      natsMsg_Destroy(m);
      continue;  // not a stream message (the consumer's control traffic)
    }
    const uint64_t seq = md->Sequence.Stream;
    const int64_t ts = md->Timestamp;
    jsMsgMetaData_Destroy(md);
    if (seq < sub_next_) {  // delivered again after a consumer reset
      natsMsg_Destroy(m);
      continue;
    }
    if (seq > sub_next_) {
      natsMsg_Destroy(m);
      const uint64_t want = sub_next_;
      DropSubscription();
      auto st = State(absl::ZeroDuration());
      if (st.ok() && st->first > want && out.empty()) {
        return absl::OutOfRangeError(absl::StrCat("stream ", options_.stream, " skipped from ",
                                                  want, " to ", seq, " (purged)"));
      }
      break;  // a consumer glitch: the next Read follows again from `want`
    }
    out.push_back(LogRecord{seq,
                            std::string(natsMsg_GetData(m),
                                        static_cast<size_t>(natsMsg_GetDataLength(m))),
                            absl::FromUnixNanos(ts)});
    natsMsg_Destroy(m);
    ++sub_next_;
    int pending = 0;
    natsSubscription_GetPending(sub_, &pending, nullptr);
    if (pending <= 0) break;
    wait_ms = 1;
  }
  return out;
}

absl::Status JetStreamWriteLog::DiscardBefore(uint64_t seq) {
  NatsConnection& c = *options_.connection;
  if (!c.connected()) return c.Unreachable(absl::StrCat("purging stream ", options_.stream));
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Stream.Purge.Sequence = seq;
  jsErrCode je = static_cast<jsErrCode>(0);
  natsStatus s = js_PurgeStream(c.js(), options_.stream.c_str(), &jo, &je);
  if (s != NATS_OK) {
    return NatsError(s, je, absl::StrCat("purging stream ", options_.stream, " below ", seq));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> JetStreamWriteLog::LastSequence() {
  auto st = State(absl::Seconds(1));
  if (!st.ok()) return st.status();
  return st->last;
}

absl::StatusOr<WriteLog::Usage> JetStreamWriteLog::GetUsage() {
  auto st = State(absl::Seconds(1));
  if (!st.ok()) return st.status();
  Usage u;
  u.records = st->records;
  u.bytes = st->bytes;
  u.max_records = options_.max_records;
  u.max_bytes = options_.max_bytes;
  return u;
}

}  // namespace recall::server
