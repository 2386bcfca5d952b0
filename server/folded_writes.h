// FoldedWrites: what a prefix of the write log folds to -- the last write per item id, and the
// sequence the prefix ends at. It is a pure function of the records, so every replica that
// folded the same prefix holds the same state, and a checkpoint (snapshot) of it is the same
// bytes whoever writes it.
//
// Thread-safety: none; the owner (OnlineWrites) serializes access.
#ifndef RECALL_SERVER_FOLDED_WRITES_H_
#define RECALL_SERVER_FOLDED_WRITES_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "recall/v1/wal.pb.h"

namespace recall::server {

class FoldedWrites {
 public:
  struct Entry {
    uint64_t seq = 0;                 // the write that set it
    bool deleted = false;
    recall::v1::ItemUpsert upsert;    // when !deleted
  };

  // Folds record `seq` (the caller checked it; seq must exceed every folded one) and appends
  // the item ids it wrote to *touched (may be null).
  void Fold(uint64_t seq, const recall::v1::WriteAheadRecord& record,
            std::vector<int64_t>* touched);
  // Marks `seq` folded without a write (a record refused as invalid on every replica).
  void Skip(uint64_t seq) { covered_ = std::max(covered_, seq); }

  uint64_t covered() const { return covered_; }  // every record up to it is folded
  size_t size() const { return entries_.size(); }
  const Entry* Find(int64_t id) const;
  // Ids in ascending order.
  std::vector<int64_t> SortedIds() const;
  // (id, entry) of every entry set after `after_seq`, ids ascending (copies).
  std::vector<std::pair<int64_t, Entry>> Since(uint64_t after_seq) const;

  // The snapshot records: a WriteSnapshotHeader, then WriteSnapshotChunks of up to
  // `chunk_items` entries in id order (deterministic bytes for a given state).
  std::vector<std::string> ToSnapshotRecords(const std::string& log_name,
                                             size_t chunk_items = 512) const;
  // Rebuilds a state from snapshot records read in order; DataLoss when they are not a
  // header followed by chunks holding exactly the header's item count.
  static absl::StatusOr<FoldedWrites> FromSnapshotRecords(
      const std::vector<std::string>& records);

 private:
  absl::flat_hash_map<int64_t, Entry> entries_;
  uint64_t covered_ = 0;
};

}  // namespace recall::server

#endif  // RECALL_SERVER_FOLDED_WRITES_H_
