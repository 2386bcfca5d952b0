#include "server/wal_import.h"

#include <glog/logging.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "recall/v1/wal.pb.h"
#include "server/folded_writes.h"
#include "server/write_ahead_log.h"
#include "server/write_snapshots.h"

namespace recall::server {
namespace {

constexpr int kUpsertChunk = 256;
constexpr int kDeleteChunk = 1000;
constexpr char kImportPrefix[] = "import-";

// The fold of the local log: its newest readable checkpoint, then the WAL records after it.
absl::StatusOr<FoldedWrites> FoldLocal(const std::string& wal_path,
                                       const std::string& snapshot_dir) {
  FoldedWrites fold;
  WriteSnapshots snaps(snapshot_dir);
  std::vector<uint64_t> seqs = snaps.List();
  for (auto it = seqs.rbegin(); it != seqs.rend(); ++it) {
    auto records = snaps.Read(*it);
    if (!records.ok()) continue;
    auto f = FoldedWrites::FromSnapshotRecords(*records);
    if (!f.ok()) continue;
    fold = *std::move(f);
    break;
  }
  uint64_t offset = 1;
  absl::Status s = ReadWal(
      wal_path,
      [&](uint64_t pos, absl::string_view payload) {
        recall::v1::WriteAheadRecord rec;
        if (!rec.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
          return absl::DataLossError(absl::StrCat(wal_path, ": record ", pos, " does not parse"));
        }
        if (pos == 0 && rec.op_case() == recall::v1::WriteAheadRecord::OP_NOT_SET &&
            rec.sequence_base() > 0) {
          offset = rec.sequence_base() - 1;
          return absl::OkStatus();
        }
        const uint64_t seq = offset + pos;
        if (seq > fold.covered()) fold.Fold(seq, rec, nullptr);
        return absl::OkStatus();
      },
      nullptr);
  if (!s.ok() && !(absl::IsNotFound(s) && fold.covered() > 0)) return s;
  return fold;
}

}  // namespace

absl::StatusOr<WalImportResult> ImportLocalWal(const std::string& wal_path,
                                               const std::string& snapshot_dir, WriteLog& log) {
  auto last = log.LastSequence();
  if (!last.ok()) return last.status();
  if (*last > 0) {
    auto first = log.Read(0, 1, absl::Seconds(5));
    recall::v1::WriteAheadRecord rec;
    const bool import_so_far =
        first.ok() && !first->empty() && rec.ParseFromString((*first)[0].payload) &&
        absl::StartsWith(rec.has_upsert() ? rec.upsert().request_id()
                                          : rec.delete_().request_id(),
                         kImportPrefix);
    if (!import_so_far) {
      return absl::FailedPreconditionError(absl::StrCat(
          log.Describe(), " already holds ", *last, " writes: import a local WAL only into an "
          "empty write log, before any replica takes writes"));
    }
  }
  auto fold = FoldLocal(wal_path, snapshot_dir);
  if (!fold.ok()) return fold.status();
  WalImportResult result;
  result.items = static_cast<int64_t>(fold->size());
  result.covered = fold->covered();
  recall::v1::WriteAheadRecord upserts, deletes;
  auto append = [&](recall::v1::WriteAheadRecord* rec) -> absl::Status {
    const std::string id = absl::StrCat(kImportPrefix, result.records + 1);
    if (rec->has_upsert()) rec->mutable_upsert()->set_request_id(id);
    if (rec->has_delete_()) rec->mutable_delete_()->set_request_id(id);
    WriteLog::AppendOptions ao;
    ao.dedup_id = id;
    ao.deadline = absl::Now() + absl::Seconds(30);
    absl::StatusOr<WriteLog::Appended> a;
    for (int attempt = 0; attempt < 10; ++attempt) {
      a = log.Append(rec->SerializeAsString(), ao);
      if (a.ok() || !absl::IsUnavailable(a.status())) break;
      absl::SleepFor(absl::Seconds(1));
    }
    if (!a.ok()) return a.status();
    ++result.records;
    rec->Clear();
    return absl::OkStatus();
  };
  for (int64_t id : fold->SortedIds()) {
    const FoldedWrites::Entry& e = *fold->Find(id);
    if (e.deleted) {
      deletes.mutable_delete_()->add_item_ids(id);
      if (deletes.delete_().item_ids_size() == kDeleteChunk) {
        if (auto s = append(&deletes); !s.ok()) return s;
      }
    } else {
      *upserts.mutable_upsert()->add_items() = e.upsert;
      if (upserts.upsert().items_size() == kUpsertChunk) {
        if (auto s = append(&upserts); !s.ok()) return s;
      }
    }
  }
  if (upserts.has_upsert()) {
    if (auto s = append(&upserts); !s.ok()) return s;
  }
  if (deletes.has_delete_()) {
    if (auto s = append(&deletes); !s.ok()) return s;
  }
  LOG(INFO) << "imported " << wal_path << " (" << result.items << " items, up to its sequence "
            << result.covered << ") into " << log.Describe() << " as " << result.records
            << " writes";
  return result;
}

}  // namespace recall::server
