#include "server/folded_writes.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace recall::server {

void FoldedWrites::Fold(uint64_t seq, const recall::v1::WriteAheadRecord& record,
                        std::vector<int64_t>* touched) {
  if (record.has_upsert()) {
    for (const auto& item : record.upsert().items()) {
      const int64_t id = item.has_features() ? item.features().item_id() : item.vector().item_id();
      Entry& e = entries_[id];
      e.seq = seq;
      e.deleted = false;
      e.upsert = item;
      if (touched) touched->push_back(id);
    }
  } else if (record.has_delete_()) {
    for (int64_t id : record.delete_().item_ids()) {
      Entry& e = entries_[id];
      e.seq = seq;
      e.deleted = true;
      e.upsert.Clear();
      if (touched) touched->push_back(id);
    }
  }
  covered_ = std::max(covered_, seq);
}

const FoldedWrites::Entry* FoldedWrites::Find(int64_t id) const {
  auto it = entries_.find(id);
  return it == entries_.end() ? nullptr : &it->second;
}

std::vector<int64_t> FoldedWrites::SortedIds() const {
  std::vector<int64_t> ids;
  ids.reserve(entries_.size());
  for (const auto& [id, e] : entries_) ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  return ids;
}

std::vector<std::pair<int64_t, FoldedWrites::Entry>> FoldedWrites::Since(
    uint64_t after_seq) const {
  std::vector<std::pair<int64_t, Entry>> out;
  for (const auto& [id, e] : entries_) {
    if (e.seq > after_seq) out.emplace_back(id, e);
  }
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  return out;
}

std::vector<std::string> FoldedWrites::ToSnapshotRecords(const std::string& log_name,
                                                         size_t chunk_items) const {
  std::vector<std::string> records;
  recall::v1::WriteSnapshotHeader header;
  header.set_covers_sequence(covered_);
  header.set_log(log_name);
  header.set_items(static_cast<int64_t>(entries_.size()));
  records.push_back(header.SerializeAsString());
  recall::v1::WriteSnapshotChunk chunk;
  auto flush = [&] {
    records.push_back(chunk.SerializeAsString());
    chunk.Clear();
  };
  for (int64_t id : SortedIds()) {
    const Entry& e = entries_.at(id);
    recall::v1::FoldedWrite* w = chunk.add_writes();
    w->set_sequence(e.seq);
    if (e.deleted) {
      w->set_deleted_item_id(id);
    } else {
      *w->mutable_upsert() = e.upsert;
    }
    if (static_cast<size_t>(chunk.writes_size()) == chunk_items) flush();
  }
  if (chunk.writes_size() > 0) flush();
  return records;
}

absl::StatusOr<FoldedWrites> FoldedWrites::FromSnapshotRecords(
    const std::vector<std::string>& records) {
  recall::v1::WriteSnapshotHeader header;
  if (records.empty() || !header.ParseFromString(records[0])) {
    return absl::DataLossError("snapshot: the first record is not a WriteSnapshotHeader");
  }
  FoldedWrites f;
  f.covered_ = header.covers_sequence();
  for (size_t r = 1; r < records.size(); ++r) {
    recall::v1::WriteSnapshotChunk chunk;
    if (!chunk.ParseFromString(records[r])) {
      return absl::DataLossError(absl::StrCat("snapshot: record ", r, " does not parse"));
    }
    for (const auto& w : chunk.writes()) {
      int64_t id;
      Entry e;
      e.seq = w.sequence();
      if (w.has_upsert()) {
        const auto& u = w.upsert();
        id = u.has_features() ? u.features().item_id() : u.vector().item_id();
        e.upsert = u;
      } else {
        id = w.deleted_item_id();
        e.deleted = true;
      }
      if (e.seq > f.covered_) {
        return absl::DataLossError(absl::StrCat("snapshot: item ", id, " was written at ", e.seq,
                                                ", after the sequence it covers, ", f.covered_));
      }
      f.entries_[id] = std::move(e);
    }
  }
  if (static_cast<int64_t>(f.entries_.size()) != header.items()) {
    return absl::DataLossError(absl::StrCat("snapshot: ", f.entries_.size(),
                                            " items, the header says ", header.items()));
  }
  return f;
}

}  // namespace recall::server
