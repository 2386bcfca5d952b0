// IdMap: the two-way map between external item ids and an index's internal labels (FAISS's
// sequential positions 0..num_labels()-1). A label is live (bound to one id) or hidden.
//
// Memory: ~27 B per item (8 B label -> id table, ~19 B hash set of labels). The id -> label
// direction stores only labels and reads each label's id back from the table; an
// id -> label hash map would store both (16 B slots, ~36 B per item at 1M items).
// Thread safety: not thread-safe; const methods may run concurrently with each other.
// Errors: none; preconditions are checked in debug builds only.

#ifndef TOWER_RECALL_INDEX_ID_MAP_H_
#define TOWER_RECALL_INDEX_ID_MAP_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"

namespace recall {

class IdMap {
 public:
  static constexpr int64_t kHidden = -1;  // the table's value for a hidden label

  IdMap();
  IdMap(IdMap&&) noexcept = default;
  IdMap& operator=(IdMap&&) noexcept = default;

  // Takes a label -> id table (kHidden for hidden labels). When an id appears at several
  // labels, the last one is live and the others are hidden; `*duplicates` (nullable) counts
  // those.
  static IdMap FromTable(std::vector<int64_t> label_to_id, int64_t* duplicates = nullptr);

  int64_t num_labels() const { return static_cast<int64_t>(table_->size()); }
  int64_t num_live() const { return static_cast<int64_t>(labels_.size()); }
  int64_t num_hidden() const { return num_labels() - num_live(); }
  // The id at `label` (< num_labels()), or kHidden.
  int64_t id_at(int64_t label) const { return (*table_)[label]; }
  // The whole label -> id table, valid until the next non-const call.
  const std::vector<int64_t>& table() const { return *table_; }

  // The live label of `id`, or -1.
  int64_t LabelOf(int64_t id) const {
    auto it = labels_.find(IdKey{id});
    return it == labels_.end() ? -1 : *it;
  }
  bool Contains(int64_t id) const { return labels_.contains(IdKey{id}); }

  // Appends hidden labels up to `num_labels` (no-op when not larger).
  void GrowTo(int64_t num_labels);
  // Makes `label` (hidden, < num_labels()) the live label of `id`. Returns the label `id` had
  // before, now hidden, or -1.
  int64_t Bind(int64_t id, int64_t label);
  // Hides the live label of `id`. Returns that label, or -1 when `id` is not live.
  int64_t Unbind(int64_t id);

  // Calls f(id, label) for every live entry, in no particular order.
  template <typename F>
  void ForEachLive(F&& f) const {
    for (int64_t label : labels_) f((*table_)[label], label);
  }

  // Bytes held (table and hash set capacity).
  size_t MemoryBytes() const;

 private:
  struct IdKey {
    int64_t id;
  };
  // Hash and equality of labels by the id they hold, so lookups by IdKey find them. They point
  // at the table, which lives on the heap so that moving an IdMap keeps the pointer valid.
  struct LabelHash {
    using is_transparent = void;
    const std::vector<int64_t>* table;
    size_t operator()(int64_t label) const { return absl::HashOf((*table)[label]); }
    size_t operator()(IdKey k) const { return absl::HashOf(k.id); }
  };
  struct LabelEq {
    using is_transparent = void;
    const std::vector<int64_t>* table;
    // Labels compare by the id they hold: an insert finds the live label of the same id.
    bool operator()(int64_t a, int64_t b) const { return (*table)[a] == (*table)[b]; }
    bool operator()(int64_t label, IdKey k) const { return (*table)[label] == k.id; }
    bool operator()(IdKey k, int64_t label) const { return (*table)[label] == k.id; }
  };
  using LabelSet = absl::flat_hash_set<int64_t, LabelHash, LabelEq>;

  std::unique_ptr<std::vector<int64_t>> table_;
  // Every live label, exactly one per live id. Invariant: (*table_)[label] != kHidden.
  LabelSet labels_;
};

}  // namespace recall

#endif  // TOWER_RECALL_INDEX_ID_MAP_H_
