#include "server/local_write_log.h"

#include <glog/logging.h>

#include "absl/strings/str_cat.h"
#include "recall/v1/wal.pb.h"

namespace recall::server {
namespace {

// The idempotency key a logged write carries (the payload is a WriteAheadRecord).
std::string RequestIdOf(const recall::v1::WriteAheadRecord& rec) {
  if (rec.has_upsert()) return rec.upsert().request_id();
  if (rec.has_delete_()) return rec.delete_().request_id();
  return {};
}

bool IsSequenceBase(const recall::v1::WriteAheadRecord& rec) {
  return rec.op_case() == recall::v1::WriteAheadRecord::OP_NOT_SET && rec.sequence_base() > 0;
}

}  // namespace

absl::StatusOr<std::unique_ptr<LocalWriteLog>> LocalWriteLog::Open(Options options,
                                                                   WalRecoveryInfo* recovery) {
  std::unique_ptr<LocalWriteLog> log(new LocalWriteLog(std::move(options)));
  WriteAheadLog::Options wo;
  wo.path = log->options_.path;
  wo.sync = log->options_.sync;
  wo.on_commit = log->options_.on_commit;
  wo.on_error = log->options_.on_error;
  uint64_t offset = 1;
  bool has_base = false;
  std::deque<LogRecord> replayed;
  std::vector<std::pair<std::string, uint64_t>> ids;
  const std::string& path = log->options_.path;
  auto wal = WriteAheadLog::Open(
      wo,
      [&](uint64_t pos, absl::string_view payload) {
        recall::v1::WriteAheadRecord rec;
        if (!rec.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
          return absl::DataLossError(absl::StrCat(path, ": record ", pos,
                                                  " has a valid checksum but does not parse"));
        }
        if (pos == 0 && IsSequenceBase(rec)) {
          offset = rec.sequence_base() - 1;
          has_base = true;
          return absl::OkStatus();
        }
        const uint64_t seq = offset + pos;
        replayed.push_back(LogRecord{seq, std::string(payload), absl::InfinitePast()});
        if (std::string id = RequestIdOf(rec); !id.empty()) ids.emplace_back(std::move(id), seq);
        return absl::OkStatus();
      },
      recovery);
  if (!wal.ok()) return wal.status();
  log->wal_ = *std::move(wal);
  absl::MutexLock gate(&log->gate_);
  absl::MutexLock lock(&log->mu_);
  log->offset_ = offset;
  log->has_base_ = has_base;
  log->next_seq_ = offset + log->wal_->stats().next_sequence;
  log->unread_ = std::move(replayed);
  for (auto& [id, seq] : ids) log->Remember(id, seq);
  return log;
}

void LocalWriteLog::Remember(const std::string& id, uint64_t seq) {
  if (id.empty()) return;
  const absl::Time now = absl::Now();
  dedup_[id] = seq;
  dedup_order_.emplace_back(now, id);
  while (!dedup_order_.empty() && now - dedup_order_.front().first > options_.dedup_window) {
    auto it = dedup_.find(dedup_order_.front().second);
    // A re-append of the same id after its window restarted its clock further back the queue.
    if (it != dedup_.end()) dedup_.erase(it);
    dedup_order_.pop_front();
  }
}

absl::StatusOr<WriteLog::Appended> LocalWriteLog::Append(absl::string_view payload,
                                                         const AppendOptions& options) {
  const std::string& id = options.dedup_id;
  if (!id.empty()) {
    absl::MutexLock lock(&mu_);
    // A concurrent append of the same id finishes first, so the second sees it.
    auto settled = [this, &id]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
      return !appending_.contains(id);
    };
    mu_.Await(absl::Condition(&settled));
    if (auto it = dedup_.find(id); it != dedup_.end()) return Appended{it->second, true};
    appending_.insert(id);
  }
  absl::StatusOr<uint64_t> pos;
  uint64_t seq = 0;
  {
    absl::ReaderMutexLock gate(&gate_);
    pos = wal_->Append(payload);
    if (pos.ok()) seq = SeqOf(*pos);
  }
  absl::MutexLock lock(&mu_);
  if (!id.empty()) appending_.erase(id);
  if (!pos.ok()) {
    if (absl::IsInvalidArgument(pos.status())) return pos.status();
    // Disk full, unwritable or failed log: refused and not applied; the caller may retry later
    // or elsewhere, and reads are unaffected.
    return absl::UnavailableError(
        absl::StrCat("write-ahead log: the write was not logged, so not applied: ",
                     pos.status().message()));
  }
  Remember(id, seq);
  LogRecord rec{seq, std::string(payload), absl::Now()};
  if (seq != next_seq_) {
    early_.emplace(seq, std::move(rec));
    return Appended{seq, false};
  }
  unread_.push_back(std::move(rec));
  ++next_seq_;
  for (auto it = early_.begin(); it != early_.end() && it->first == next_seq_;
       it = early_.erase(it)) {
    unread_.push_back(std::move(it->second));
    ++next_seq_;
  }
  return Appended{seq, false};
}

absl::StatusOr<std::vector<LogRecord>> LocalWriteLog::Read(uint64_t after_seq, size_t max,
                                                           absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto drop_read = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    while (!unread_.empty() && unread_.front().seq <= after_seq) unread_.pop_front();
    return !unread_.empty();
  };
  mu_.AwaitWithTimeout(absl::Condition(&drop_read), timeout);
  std::vector<LogRecord> out;
  if (unread_.empty()) return out;
  if (unread_.front().seq > after_seq + 1) {
    return absl::OutOfRangeError(absl::StrCat(Describe(), ": records after ", after_seq,
                                              " start at ", unread_.front().seq));
  }
  while (!unread_.empty() && out.size() < max) {
    out.push_back(std::move(unread_.front()));
    unread_.pop_front();
  }
  return out;
}

absl::Status LocalWriteLog::DiscardBefore(uint64_t seq) {
  absl::MutexLock gate(&gate_);  // no append in flight: the file holds every appended record
  std::vector<std::string> keep;
  recall::v1::WriteAheadRecord base;
  base.set_sequence_base(seq);
  keep.push_back(base.SerializeAsString());
  absl::Status s = ReadWal(
      options_.path,
      [&](uint64_t pos, absl::string_view payload) ABSL_NO_THREAD_SAFETY_ANALYSIS {
        if ((pos > 0 || !has_base_) && SeqOf(pos) >= seq) keep.emplace_back(payload);
        return absl::OkStatus();
      },
      nullptr);
  if (!s.ok()) return s;
  auto size = wal_->Rewrite(keep);
  if (!size.ok()) return size.status();
  // Record i >= 1 of the new file has sequence seq + i - 1.
  offset_ = seq - 1;
  has_base_ = true;
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> LocalWriteLog::LastSequence() {
  absl::MutexLock lock(&mu_);
  return next_seq_ - 1;
}

absl::StatusOr<WriteLog::Usage> LocalWriteLog::GetUsage() {
  const WalStats st = wal_->stats();
  Usage u;
  u.records = st.next_sequence;
  u.bytes = st.file_bytes;
  return u;
}

}  // namespace recall::server
