#include "server/online_writes.h"

#include <glog/logging.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "server/state_digest.h"

namespace recall::server {
namespace {

constexpr size_t kEmbedBatch = 1024;  // items per item-tower forward
// Deleted counts kept for writers that have not collected theirs (they collect at once; the
// bound only matters for writers that gave up).
constexpr size_t kMaxDeletedCounts = 65536;
constexpr absl::Duration kReadWait = absl::Milliseconds(200);
constexpr absl::Duration kMaxBackoff = absl::Seconds(5);

using Entries = std::vector<std::pair<int64_t, FoldedWrites::Entry>>;

}  // namespace

OnlineWrites::OnlineWrites(Options options, Metrics* metrics)
    : options_([&] {
        Options o;
        o.snapshot_dir = options.snapshot_dir;
        o.snapshot_every = options.snapshot_every;
        o.keep_snapshots = options.keep_snapshots;
        o.checkpoint_after_catch_up = options.checkpoint_after_catch_up;
        o.limits = options.limits;
        o.max_batch = std::max<size_t>(1, options.max_batch);
        return o;
      }()),
      log_(std::move(options.log)),
      metrics_(metrics),
      snapshots_(options_.snapshot_dir) {}

absl::StatusOr<std::unique_ptr<OnlineWrites>> OnlineWrites::Open(Options options,
                                                                 Metrics* metrics) {
  if (options.log == nullptr) return absl::InvalidArgumentError("OnlineWrites needs a write log");
  std::unique_ptr<OnlineWrites> w(new OnlineWrites(std::move(options), metrics));
  if (!w->options_.snapshot_dir.empty()) {
    std::vector<uint64_t> seqs = w->snapshots_.List();
    for (auto it = seqs.rbegin(); it != seqs.rend(); ++it) {
      auto records = w->snapshots_.Read(*it);
      absl::StatusOr<FoldedWrites> fold =
          records.ok() ? FoldedWrites::FromSnapshotRecords(*records)
                       : absl::StatusOr<FoldedWrites>(records.status());
      if (!fold.ok()) {
        LOG(ERROR) << "skipping write snapshot " << w->snapshots_.PathOf(*it) << ": "
                   << fold.status().message();
        continue;
      }
      absl::MutexLock lock(&w->apply_mu_);
      w->fold_ = *std::move(fold);
      absl::MutexLock l(&w->mu_);
      w->applied_ = w->fold_.covered();
      LOG(INFO) << "loaded write snapshot " << w->snapshots_.PathOf(*it) << " ("
                << w->fold_.size() << " items, sequence " << w->applied_ << ")";
      if (metrics) metrics->ObserveSnapshot(true, w->applied_);
      break;
    }
  }
  // Sequences never go back, so a log that ends before the checkpoint is not the log the
  // checkpoint folded (it was deleted or replaced); applying it would mix two histories.
  if (auto last = w->log_->LastSequence(); last.ok() && *last < w->applied_sequence()) {
    return absl::FailedPreconditionError(absl::StrCat(
        w->log_->Describe(), " ends at write sequence ", *last, ", but the checkpoint in ",
        w->options_.snapshot_dir, " covers ", w->applied_sequence(),
        ": the log was deleted or replaced. Restore it, or move the checkpoints away to start "
        "from the log alone"));
  }
  if (metrics) metrics->SetWriteApplied(w->applied_sequence());
  w->timer_ = std::thread([p = w.get()] { p->TimerLoop(); });
  return w;
}

void OnlineWrites::Stop() {
  std::multimap<uint64_t, Waiter> waiters;
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    waiters.swap(waiters_);
  }
  if (applier_.joinable()) applier_.join();
  if (timer_.joinable()) timer_.join();
  for (auto& [seq, w] : waiters) w.done(absl::UnavailableError("the server is stopping"));
}

bool OnlineWrites::stopping() const {
  absl::MutexLock lock(&mu_);
  return stop_;
}

uint64_t OnlineWrites::applied_sequence() const {
  absl::MutexLock lock(&mu_);
  return applied_;
}

int64_t OnlineWrites::tracked_items() const {
  absl::ReaderMutexLock lock(&apply_mu_);
  return static_cast<int64_t>(fold_.size());
}

void OnlineWrites::Start(const VersionManager* versions) {
  versions_ = versions;
  applier_ = std::thread([this] { ApplierLoop(); });
}

absl::Status OnlineWrites::ApplyEntries(Servable& s, const Entries& entries) {
  const FeatureEncoder& enc = s.model->encoder();
  const int dim = s.model->dim();
  const int stride = s.model->manifest().score_offset_stride();
  std::vector<int64_t> deletes, feature_ids, vector_ids;
  std::vector<const recall::v1::ItemFeatures*> features;
  std::vector<float> vectors;
  int64_t not_applicable = 0;
  for (const auto& [id, e] : entries) {
    if (e.deleted) {
      deletes.push_back(id);
    } else if (e.upsert.has_features()) {
      if (enc.ValidateItem(e.upsert.features(), "item").ok()) {
        features.push_back(&e.upsert.features());
        feature_ids.push_back(id);
      } else {
        ++not_applicable;
      }
    } else if (ValidateRawVector(e.upsert.vector(), "item", dim, stride, s.version()).ok()) {
      vector_ids.push_back(id);
      vectors.insert(vectors.end(), e.upsert.vector().values().begin(),
                     e.upsert.vector().values().end());
    } else {
      // A raw vector lives in its model version's embedding space only.
      ++not_applicable;
    }
  }
  if (!deletes.empty()) {
    if (auto r = s.index->Remove(deletes); !r.ok()) return r.status();
  }
  for (size_t begin = 0; begin < features.size(); begin += kEmbedBatch) {
    const size_t end = std::min(features.size(), begin + kEmbedBatch);
    auto emb = s.model->EmbedItems(enc.EncodeItems(
        absl::MakeConstSpan(features.data() + begin, end - begin)));
    if (!emb.ok()) return emb.status();
    if (auto st = s.index->Upsert(absl::MakeConstSpan(feature_ids.data() + begin, end - begin),
                                  emb->data_ptr<float>());
        !st.ok()) {
      return st;
    }
  }
  if (!vector_ids.empty()) {
    if (auto st = s.index->Upsert(vector_ids, vectors.data()); !st.ok()) return st;
  }
  if (not_applicable > 0 && metrics_) metrics_->AddWriteRejected("not_applicable", not_applicable);
  return absl::OkStatus();
}

absl::Status OnlineWrites::Install(Servable& candidate, const std::function<void()>& swap) {
  Entries all;
  uint64_t upto;
  {
    absl::ReaderMutexLock lock(&apply_mu_);
    all = fold_.Since(0);
    upto = fold_.covered();
  }
  // The bulk, without the applier's lock: writes keep being applied to the serving version.
  if (auto s = ApplyEntries(candidate, all); !s.ok()) return s;
  absl::MutexLock lock(&apply_mu_);
  const Entries tail = fold_.Since(upto);
  if (auto s = ApplyEntries(candidate, tail); !s.ok()) return s;
  swap();
  if (!all.empty() || !tail.empty()) {
    LOG(INFO) << "version " << candidate.version() << ": re-applied " << all.size() + tail.size()
              << " online writes (" << fold_.size() << " items, up to write sequence "
              << fold_.covered() << ")";
  }
  return absl::OkStatus();
}

void OnlineWrites::Advance(uint64_t seq) {
  std::vector<std::function<void(absl::Status)>> ready;
  {
    absl::MutexLock lock(&mu_);
    applied_ = std::max(applied_, seq);
    for (auto it = waiters_.begin(); it != waiters_.end() && it->first <= applied_;
         it = waiters_.erase(it)) {
      ready.push_back(std::move(it->second.done));
    }
  }
  if (metrics_) metrics_->SetWriteApplied(seq);
  for (auto& f : ready) f(absl::OkStatus());
}

void OnlineWrites::ApplyBatch(std::vector<LogRecord> records) {
  absl::MutexLock lock(&apply_mu_);
  std::shared_ptr<Servable> s = versions_ ? versions_->Current() : nullptr;
  // Presence of the touched ids as the records take effect in order, for each delete's count
  // of ids that were there (what DeleteItems answers).
  absl::flat_hash_map<int64_t, bool> present;
  auto is_present = [&](int64_t id) {
    auto it = present.find(id);
    if (it != present.end()) return it->second;
    const bool p = s != nullptr && s->index->Contains(id);
    present[id] = p;
    return p;
  };
  absl::flat_hash_set<int64_t> touched_set;
  std::vector<int64_t> touched;
  std::vector<std::pair<uint64_t, int64_t>> deleted_counts;
  const absl::Time now = absl::Now();
  for (const LogRecord& r : records) {
    if (r.seq <= fold_.covered()) continue;  // already folded (a checkpoint covered it)
    recall::v1::WriteAheadRecord rec;
    absl::Status valid;
    if (!rec.ParseFromString(r.payload)) {
      valid = absl::InvalidArgumentError("does not parse as a WriteAheadRecord");
    } else if (rec.has_upsert()) {
      valid = ValidateLoggedUpsert(rec.upsert(), options_.limits);
    } else if (rec.has_delete_()) {
      valid = ValidateDeleteRequest(rec.delete_(), options_.limits);
    } else {
      valid = absl::InvalidArgumentError("holds no write");
    }
    if (!valid.ok()) {
      // The same bytes fail the same way on every replica, so skipping keeps them in step.
      LOG(ERROR) << log_->Describe() << ": skipping write sequence " << r.seq
                 << ", invalid for every model version: " << valid.message();
      if (metrics_) metrics_->AddWriteRejected("invalid");
      fold_.Skip(r.seq);
      continue;
    }
    touched.clear();
    fold_.Fold(r.seq, rec, &touched);
    touched_set.insert(touched.begin(), touched.end());
    if (rec.has_delete_()) {
      int64_t n = 0;
      for (int64_t id : rec.delete_().item_ids()) {
        if (is_present(id)) ++n;
        present[id] = false;
      }
      deleted_counts.emplace_back(r.seq, n);
    } else {
      for (int64_t id : touched) present[id] = true;
    }
    if (metrics_ && r.logged_at != absl::InfinitePast()) {
      metrics_->ObserveWriteVisibility(std::max(0.0, absl::ToDoubleSeconds(now - r.logged_at)));
    }
  }
  if (s != nullptr && !touched_set.empty()) {
    Entries entries;
    entries.reserve(touched_set.size());
    for (int64_t id : touched_set) entries.emplace_back(id, *fold_.Find(id));
    absl::Duration backoff = absl::Milliseconds(100);
    for (;;) {
      absl::Status st = ApplyEntries(*s, entries);
      if (st.ok()) break;
      // Every entry is an idempotent upsert or remove, so the retry redoes the whole batch.
      LOG(ERROR) << "applying write sequences up to " << fold_.covered() << " failed, retrying in "
                 << backoff << " (the applier never skips a write): " << st.message();
      if (metrics_) metrics_->SetWriteApplyStalled(true);
      apply_mu_.Unlock();
      absl::SleepFor(backoff);
      apply_mu_.Lock();
      if (stopping()) return;
      backoff = std::min(backoff * 2, kMaxBackoff);
      // A version may have swapped in meanwhile; Install applied the fold to it.
      s = versions_->Current();
    }
    if (metrics_) metrics_->SetWriteApplyStalled(false);
  }
  {
    absl::MutexLock l(&mu_);
    for (const auto& [seq, n] : deleted_counts) deleted_counts_[seq] = n;
    while (deleted_counts_.size() > kMaxDeletedCounts) deleted_counts_.erase(deleted_counts_.begin());
  }
  Advance(fold_.covered());
}

absl::Status OnlineWrites::CatchUpFromCheckpoint() {
  const uint64_t applied = fold_.covered();
  std::vector<uint64_t> seqs = snapshots_.List();
  for (auto it = seqs.rbegin(); it != seqs.rend() && *it > applied; ++it) {
    auto records = snapshots_.Read(*it);
    absl::StatusOr<FoldedWrites> fold = records.ok()
                                            ? FoldedWrites::FromSnapshotRecords(*records)
                                            : absl::StatusOr<FoldedWrites>(records.status());
    if (!fold.ok()) {
      LOG(ERROR) << "skipping write snapshot " << snapshots_.PathOf(*it) << ": "
                 << fold.status().message();
      continue;
    }
    // The snapshot's entries set after `applied` are exactly what this replica lacks.
    const Entries newer = fold->Since(applied);
    if (std::shared_ptr<Servable> s = versions_->Current()) {
      if (auto st = ApplyEntries(*s, newer); !st.ok()) return st;
    }
    fold_ = *std::move(fold);
    LOG(WARNING) << log_->Describe() << " no longer holds the writes after " << applied
                 << "; caught up from the write snapshot " << snapshots_.PathOf(*it) << " ("
                 << newer.size() << " items changed, now at " << fold_.covered() << ")";
    if (metrics_) metrics_->ObserveSnapshot(true, fold_.covered());
    return absl::OkStatus();
  }
  return absl::DataLossError(absl::StrCat(
      log_->Describe(), " discarded writes after sequence ", applied,
      " and no write snapshot in ", snapshots_.dir(), " covers them"));
}

void OnlineWrites::Checkpoint(uint64_t seq) {
  if (options_.snapshot_dir.empty()) return;
  const auto start = std::chrono::steady_clock::now();
  absl::Status s = snapshots_.Write(seq, fold_.ToSnapshotRecords(log_->Describe()));
  if (metrics_) metrics_->ObserveSnapshot(s.ok(), seq);
  if (!s.ok()) {
    LOG(ERROR) << "write snapshot at sequence " << seq << " failed: " << s.message();
    return;
  }
  const uint64_t oldest = snapshots_.Prune(options_.keep_snapshots);
  absl::Status d = oldest > 0 ? log_->DiscardBefore(oldest + 1) : absl::OkStatus();
  LOG(INFO) << "write snapshot " << snapshots_.PathOf(seq) << " (" << fold_.size() << " items) in "
            << std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()
            << " s; " << log_->Describe()
            << (d.ok() ? absl::StrCat(" keeps the writes after ", oldest)
                       : absl::StrCat(" could not discard old writes: ", d.message()));
}

void OnlineWrites::PublishLogMetrics() {
  if (!metrics_) return;
  auto last = log_->LastSequence();
  metrics_->SetWriteLogUp(last.ok());
  if (last.ok()) metrics_->SetWriteLogLast(*last);
  if (auto u = log_->GetUsage(); u.ok()) {
    metrics_->SetWriteLogUsage(u->records, u->bytes, u->max_records, u->max_bytes);
  }
}

void OnlineWrites::ApplierLoop() {
  absl::Duration backoff = absl::Milliseconds(100);
  absl::Time next_metrics = absl::InfinitePast();
  while (!stopping()) {
    if (absl::Now() >= next_metrics) {
      PublishLogMetrics();
      next_metrics = absl::Now() + absl::Seconds(1);
    }
    uint64_t applied;
    {
      absl::ReaderMutexLock lock(&apply_mu_);
      applied = fold_.covered();
    }
    // Batches end at checkpoint boundaries, so every replica checkpoints the same sequences.
    size_t max = options_.max_batch;
    if (options_.snapshot_every > 0) {
      max = std::min<uint64_t>(max, options_.snapshot_every - applied % options_.snapshot_every);
    }
    auto records = log_->Read(applied, max, kReadWait);
    if (absl::IsOutOfRange(records.status())) {
      absl::MutexLock lock(&apply_mu_);
      if (absl::Status s = CatchUpFromCheckpoint(); !s.ok()) {
        LOG(ERROR) << s.message() << "; retrying in " << backoff;
        if (metrics_) metrics_->SetWriteApplyStalled(true);
        apply_mu_.Unlock();
        absl::SleepFor(backoff);
        apply_mu_.Lock();
        backoff = std::min(backoff * 2, kMaxBackoff);
      } else {
        if (metrics_) metrics_->SetWriteApplyStalled(false);
        Advance(fold_.covered());
      }
      continue;
    }
    if (!records.ok()) {
      // Unreachable log: keep serving what is applied, try again shortly.
      if (absl::IsUnavailable(records.status())) {
        if (metrics_) metrics_->SetWriteLogUp(false);
      } else {
        LOG_EVERY_N(ERROR, 20) << "reading " << log_->Describe() << ": "
                               << records.status().message();
        if (metrics_) metrics_->SetWriteApplyStalled(true);
      }
      absl::SleepFor(std::min(backoff, absl::Seconds(1)));
      backoff = std::min(backoff * 2, kMaxBackoff);
      continue;
    }
    backoff = absl::Milliseconds(100);
    if (metrics_) metrics_->SetWriteApplyStalled(false);
    if (records->empty()) continue;
    ApplyBatch(*std::move(records));
    absl::MutexLock lock(&apply_mu_);
    const uint64_t now_applied = fold_.covered();
    if (options_.snapshot_every > 0 && now_applied % options_.snapshot_every == 0) {
      Checkpoint(now_applied);
    }
  }
}

absl::Status OnlineWrites::CatchUp(absl::Duration timeout) {
  auto last = log_->LastSequence();
  if (!last.ok()) return last.status();
  const absl::Time deadline = absl::Now() + timeout;
  {
    absl::MutexLock lock(&mu_);
    auto reached = [this, target = *last]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return applied_ >= target || stop_;
    };
    if (!mu_.AwaitWithDeadline(absl::Condition(&reached), deadline)) {
      return absl::DeadlineExceededError(absl::StrCat(
          "applied write sequence ", applied_, " of ", *last, " within ",
          absl::FormatDuration(timeout)));
    }
  }
  if (options_.checkpoint_after_catch_up) {
    absl::MutexLock lock(&apply_mu_);
    const std::vector<uint64_t> seqs = snapshots_.List();
    if (fold_.covered() > (seqs.empty() ? 0 : seqs.back())) Checkpoint(fold_.covered());
  }
  return absl::OkStatus();
}

absl::StatusOr<OnlineWrites::WriteResult> OnlineWrites::Write(
    const recall::v1::WriteAheadRecord& record, absl::Time deadline) {
  WriteLog::AppendOptions ao;
  ao.dedup_id = record.has_upsert() ? record.upsert().request_id() : record.delete_().request_id();
  ao.deadline = deadline;
  auto appended = log_->Append(record.SerializeAsString(), ao);
  if (!appended.ok()) return appended.status();
  WriteResult result;
  result.seq = appended->seq;
  result.duplicate = appended->duplicate;
  absl::MutexLock lock(&mu_);
  auto applied = [this, seq = result.seq]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return applied_ >= seq || stop_;
  };
  if (!mu_.AwaitWithDeadline(absl::Condition(&applied), deadline) || applied_ < result.seq) {
    return absl::DeadlineExceededError(absl::StrCat(
        "logged at write sequence ", result.seq, " but not yet applied on this replica (applied: ",
        applied_, "); it will be. A retry with the same request_id does not log it again"));
  }
  if (auto it = deleted_counts_.find(result.seq); it != deleted_counts_.end()) {
    if (!result.duplicate) result.deleted = it->second;
    deleted_counts_.erase(it);
  }
  return result;
}

void OnlineWrites::WhenApplied(uint64_t seq, absl::Time deadline,
                               std::function<void(absl::Status)> done) {
  {
    absl::MutexLock lock(&mu_);
    if (applied_ < seq && !stop_) {
      waiters_.emplace(seq, Waiter{deadline, std::move(done)});
      return;
    }
  }
  done(absl::OkStatus());
}

void OnlineWrites::TimerLoop() {
  absl::MutexLock lock(&mu_);
  while (!stop_) {
    absl::Time next = absl::InfiniteFuture();
    for (const auto& [seq, w] : waiters_) next = std::min(next, w.deadline);
    // Wake for the earliest deadline, a stop, or at least every 100 ms for new waiters.
    mu_.AwaitWithDeadline(absl::Condition(&stop_),
                          std::min(next, absl::Now() + absl::Milliseconds(100)));
    const absl::Time now = absl::Now();
    std::vector<std::pair<uint64_t, Waiter>> expired;
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      if (it->second.deadline <= now) {
        expired.emplace_back(it->first, std::move(it->second));
        it = waiters_.erase(it);
      } else {
        ++it;
      }
    }
    const uint64_t applied = applied_;
    mu_.Unlock();
    for (auto& [seq, w] : expired) {
      w.done(absl::UnavailableError(absl::StrCat(
          "this replica has applied write sequence ", applied, ", below min_write_sequence ", seq,
          ", and the deadline passed; retry, or ask another replica")));
    }
    mu_.Lock();
  }
}

std::string OnlineWrites::OnlineStateDigest(const Servable& s, uint64_t* applied) const {
  absl::ReaderMutexLock lock(&apply_mu_);
  if (applied) *applied = fold_.covered();
  StateDigest digest;
  for (int64_t id : fold_.SortedIds()) {
    if (auto v = s.index->Reconstruct(id); v.ok()) {
      digest.AddVector(id, v->data(), v->size());
    } else {
      digest.AddAbsent(id);
    }
  }
  return digest.Hex();
}

}  // namespace recall::server
