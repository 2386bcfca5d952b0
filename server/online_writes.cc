#include "server/online_writes.h"

#include <glog/logging.h>

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"

namespace recall::server {
namespace {

constexpr size_t kEmbedBatch = 1024;      // items per item-tower forward when re-embedding
constexpr size_t kSnapshotRecordItems = 512;  // items per record of a compacted log

}  // namespace

absl::StatusOr<std::unique_ptr<OnlineWrites>> OnlineWrites::Open(Options options,
                                                                 WalRecoveryInfo* recovery) {
  std::unique_ptr<OnlineWrites> w(new OnlineWrites(std::move(options)));
  WriteAheadLog::Options wo;
  wo.path = w->options_.wal_path;
  wo.sync = w->options_.sync;
  wo.on_commit = w->options_.on_commit;
  wo.on_error = w->options_.on_error;
  OnlineWrites* self = w.get();
  auto wal = WriteAheadLog::Open(
      wo,
      [self](uint64_t wal_seq, absl::string_view payload) {
        recall::v1::WriteAheadRecord rec;
        if (!rec.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
          return absl::DataLossError(absl::StrCat(self->options_.wal_path, ": record ", wal_seq,
                                                  " has a valid checksum but does not parse"));
        }
        absl::MutexLock lock(&self->state_mu_);
        self->Fold(self->Logical(wal_seq), rec);
        return absl::OkStatus();
      },
      recovery);
  if (!wal.ok()) return wal.status();
  w->wal_ = *std::move(wal);
  if (auto s = w->Compact(); !s.ok()) return s;
  w->compactor_ = std::thread([self] { self->CompactionLoop(); });
  return w;
}

OnlineWrites::~OnlineWrites() {
  {
    absl::MutexLock lock(&compact_mu_);
    stop_ = true;
  }
  if (compactor_.joinable()) compactor_.join();
}

void OnlineWrites::Fold(uint64_t seq, const recall::v1::WriteAheadRecord& record) {
  if (record.has_upsert()) {
    for (const auto& item : record.upsert().items()) {
      const int64_t id = item.has_features() ? item.features().item_id() : item.vector().item_id();
      Entry& e = state_[id];
      if (e.seq > seq) continue;  // a later write to this id is already folded
      e.seq = seq;
      e.deleted = false;
      e.upsert = item;
    }
  } else if (record.has_delete_()) {
    for (int64_t id : record.delete_().item_ids()) {
      Entry& e = state_[id];
      if (e.seq > seq) continue;
      e.seq = seq;
      e.deleted = true;
      e.upsert.Clear();
    }
  }
  last_seq_ = std::max(last_seq_, seq);
}

absl::Status OnlineWrites::ApplyEntries(Servable& s, uint64_t after_seq, uint64_t* max_seq) {
  std::vector<int64_t> deletes;
  std::vector<recall::v1::ItemUpsert> upserts;
  {
    absl::MutexLock lock(&state_mu_);
    *max_seq = std::max(after_seq, last_seq_);
    for (const auto& [id, e] : state_) {
      if (e.seq <= after_seq) continue;
      if (e.deleted) {
        deletes.push_back(id);
      } else {
        upserts.push_back(e.upsert);
      }
    }
  }
  if (!deletes.empty()) {
    if (auto r = s.index->Remove(deletes); !r.ok()) return r.status();
  }
  std::vector<const recall::v1::ItemFeatures*> features;
  std::vector<int64_t> feature_ids, vector_ids;
  std::vector<float> vectors;
  int64_t skipped = 0;
  const int dim = s.model->dim();
  auto flush_features = [&]() -> absl::Status {
    if (features.empty()) return absl::OkStatus();
    auto emb = s.model->EmbedItems(s.model->encoder().EncodeItems(features));
    if (!emb.ok()) return emb.status();
    absl::Status st = s.index->Upsert(feature_ids, emb->data_ptr<float>());
    features.clear();
    feature_ids.clear();
    return st;
  };
  for (const auto& u : upserts) {
    if (u.has_features()) {
      features.push_back(&u.features());
      feature_ids.push_back(u.features().item_id());
      if (features.size() == kEmbedBatch) {
        if (auto st = flush_features(); !st.ok()) return st;
      }
    } else if (u.vector().model_version() == s.version() && u.vector().values_size() == dim) {
      vector_ids.push_back(u.vector().item_id());
      vectors.insert(vectors.end(), u.vector().values().begin(), u.vector().values().end());
    } else {
      ++skipped;  // a raw vector lives in its model version's embedding space only
    }
  }
  if (auto st = flush_features(); !st.ok()) return st;
  if (!vector_ids.empty()) {
    if (auto st = s.index->Upsert(vector_ids, vectors.data()); !st.ok()) return st;
  }
  if (!deletes.empty() || !upserts.empty()) {
    LOG(INFO) << "version " << s.version() << ": re-applied " << upserts.size() - skipped
              << " online upserts and " << deletes.size() << " deletes from the write-ahead log"
              << (skipped ? absl::StrCat(" (", skipped, " raw vectors of other model versions "
                                         "not applicable)")
                          : std::string());
  }
  return absl::OkStatus();
}

absl::Status OnlineWrites::Install(Servable& candidate, const std::function<void()>& swap) {
  uint64_t upto = 0;
  // The bulk, outside the barrier: writers keep going on the serving version meanwhile.
  if (auto s = ApplyEntries(candidate, 0, &upto); !s.ok()) return s;
  absl::WriterMutexLock barrier(&barrier_);
  uint64_t tail = 0;
  if (auto s = ApplyEntries(candidate, upto, &tail); !s.ok()) return s;
  swap();
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> OnlineWrites::LogIfServing(const std::shared_ptr<Servable>& servable,
                                                    const VersionManager& versions,
                                                    const recall::v1::WriteAheadRecord& rec) {
  if (versions.Current() != servable) {
    return absl::AbortedError("the serving model version changed during the write; retry");
  }
  absl::StatusOr<uint64_t> seq = wal_->Append(rec.SerializeAsString());
  if (seq.ok() || absl::IsInvalidArgument(seq.status())) return seq;
  // Disk full, unwritable or failed log: the write is refused and not applied, and the caller
  // may retry later or elsewhere; reads are unaffected.
  return absl::UnavailableError(
      absl::StrCat("write-ahead log: the write was not logged, so not applied: ",
                   seq.status().message()));
}

absl::Status OnlineWrites::Upsert(const std::shared_ptr<Servable>& servable,
                                  const recall::v1::UpsertItemsRequest& req,
                                  const std::vector<float>& feature_vectors,
                                  const VersionManager& versions) {
  absl::ReaderMutexLock barrier(&barrier_);
  recall::v1::WriteAheadRecord rec;
  *rec.mutable_upsert() = req;
  auto wal_seq = LogIfServing(servable, versions, rec);
  if (!wal_seq.ok()) return wal_seq.status();

  const int dim = servable->model->dim();
  std::vector<int64_t> ids;
  std::vector<float> vectors;
  {
    absl::MutexLock lock(&state_mu_);
    const uint64_t seq = Logical(*wal_seq);
    size_t feature_row = 0;
    for (const auto& item : req.items()) {
      const bool has_features = item.has_features();
      const int64_t id = has_features ? item.features().item_id() : item.vector().item_id();
      const float* v = has_features ? &feature_vectors[dim * feature_row++]
                                    : item.vector().values().data();
      auto it = state_.find(id);
      if (it != state_.end() && it->second.seq > seq) continue;  // a newer write won
      ids.push_back(id);
      vectors.insert(vectors.end(), v, v + dim);
    }
    Fold(seq, rec);
    // Applied under state_mu_ so that concurrent writes to one id reach the index in log order.
    if (!ids.empty()) {
      if (auto s = servable->index->Upsert(ids, vectors.data()); !s.ok()) {
        return absl::InternalError(absl::StrCat("logged but not applied (applies on restart): ",
                                                s.message()));
      }
    }
  }
  MaybeScheduleCompaction();
  return absl::OkStatus();
}

absl::StatusOr<int64_t> OnlineWrites::Delete(const std::shared_ptr<Servable>& servable,
                                             const recall::v1::DeleteItemsRequest& req,
                                             const VersionManager& versions) {
  absl::ReaderMutexLock barrier(&barrier_);
  recall::v1::WriteAheadRecord rec;
  *rec.mutable_delete_() = req;
  auto wal_seq = LogIfServing(servable, versions, rec);
  if (!wal_seq.ok()) return wal_seq.status();
  absl::StatusOr<int64_t> removed;
  {
    absl::MutexLock lock(&state_mu_);
    const uint64_t seq = Logical(*wal_seq);
    std::vector<int64_t> ids;
    for (int64_t id : req.item_ids()) {
      auto it = state_.find(id);
      if (it == state_.end() || it->second.seq <= seq) ids.push_back(id);
    }
    Fold(seq, rec);
    removed = servable->index->Remove(ids);
  }
  MaybeScheduleCompaction();
  return removed;
}

absl::Status OnlineWrites::Compact() {
  absl::WriterMutexLock barrier(&barrier_);
  absl::MutexLock lock(&state_mu_);
  std::vector<std::string> payloads;
  recall::v1::WriteAheadRecord upserts, deletes;
  auto flush = [&](recall::v1::WriteAheadRecord* r) {
    payloads.push_back(r->SerializeAsString());
    r->Clear();
  };
  for (const auto& [id, e] : state_) {
    if (e.deleted) {
      deletes.mutable_delete_()->add_item_ids(id);
      if (deletes.delete_().item_ids_size() == kSnapshotRecordItems) flush(&deletes);
    } else {
      *upserts.mutable_upsert()->add_items() = e.upsert;
      if (upserts.upsert().items_size() == kSnapshotRecordItems) flush(&upserts);
    }
  }
  if (upserts.has_upsert()) flush(&upserts);
  if (deletes.has_delete_()) flush(&deletes);
  const auto start = std::chrono::steady_clock::now();
  const uint64_t before = wal_->stats().file_bytes;
  auto size = wal_->Rewrite(payloads);
  if (!size.ok()) return size.status();
  // The rewritten log's positions 0..n-1 hold entries whose logical seqs are kept as they are;
  // appends from now on continue above every seq handed out so far.
  seq_base_ = last_seq_ + 1 - payloads.size();
  compacted_bytes_ = *size;
  LOG(INFO) << "compacted the write-ahead log " << options_.wal_path << ": " << before << " -> "
            << *size << " bytes (" << state_.size() << " items, " << payloads.size()
            << " records) in "
            << std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()
            << " s";
  return absl::OkStatus();
}

void OnlineWrites::MaybeScheduleCompaction() {
  if (options_.compact_bytes == 0) return;
  const uint64_t bytes = wal_->stats().file_bytes;
  {
    absl::MutexLock lock(&state_mu_);
    if (bytes < options_.compact_bytes || bytes < 2 * compacted_bytes_) return;
  }
  absl::MutexLock lock(&compact_mu_);
  compact_requested_ = true;
}

void OnlineWrites::CompactionLoop() {
  absl::MutexLock lock(&compact_mu_);
  while (true) {
    compact_mu_.Await(absl::Condition(
        +[](OnlineWrites* w) ABSL_NO_THREAD_SAFETY_ANALYSIS {
          return w->stop_ || w->compact_requested_;
        },
        this));
    if (stop_) return;
    compact_requested_ = false;
    compact_mu_.Unlock();
    if (auto s = Compact(); !s.ok()) LOG(ERROR) << "compaction failed: " << s.message();
    compact_mu_.Lock();
  }
}

int64_t OnlineWrites::tracked_items() const {
  absl::MutexLock lock(&state_mu_);
  return static_cast<int64_t>(state_.size());
}

}  // namespace recall::server
