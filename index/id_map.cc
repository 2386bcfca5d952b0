#include "index/id_map.h"

#include <utility>

#include "absl/base/macros.h"

namespace recall {

IdMap::IdMap()
    : table_(std::make_unique<std::vector<int64_t>>()),
      labels_(0, LabelHash{table_.get()}, LabelEq{table_.get()}) {}

IdMap IdMap::FromTable(std::vector<int64_t> label_to_id, int64_t* duplicates) {
  IdMap map;
  *map.table_ = std::move(label_to_id);
  std::vector<int64_t>& table = *map.table_;
  int64_t live = 0;
  for (int64_t id : table) live += id != kHidden;
  map.labels_.reserve(live);
  int64_t dups = 0;
  for (int64_t label = 0; label < static_cast<int64_t>(table.size()); ++label) {
    const int64_t id = table[label];
    if (id == kHidden) continue;
    auto [it, inserted] = map.labels_.insert(label);
    if (!inserted) {  // the same id at an earlier label: the later entry wins
      const int64_t earlier = *it;
      map.labels_.erase(it);
      table[earlier] = kHidden;
      map.labels_.insert(label);
      ++dups;
    }
  }
  if (duplicates != nullptr) *duplicates = dups;
  return map;
}

void IdMap::GrowTo(int64_t num_labels) {
  if (num_labels > this->num_labels()) table_->resize(num_labels, kHidden);
}

int64_t IdMap::Bind(int64_t id, int64_t label) {
  ABSL_ASSERT(label >= 0 && label < num_labels() && (*table_)[label] == kHidden);
  const int64_t previous = Unbind(id);
  (*table_)[label] = id;  // before the insert, which hashes the label through the table
  labels_.insert(label);
  return previous;
}

int64_t IdMap::Unbind(int64_t id) {
  auto it = labels_.find(IdKey{id});
  if (it == labels_.end()) return -1;
  const int64_t label = *it;
  labels_.erase(it);  // erasing by iterator does not hash, so the order with the table is free
  (*table_)[label] = kHidden;
  return label;
}

size_t IdMap::MemoryBytes() const {
  // absl's flat_hash_set keeps one control byte per slot (plus a group's worth) next to the
  // slots.
  return table_->capacity() * sizeof(int64_t) +
         labels_.capacity() * (sizeof(int64_t) + 1);
}

}  // namespace recall
