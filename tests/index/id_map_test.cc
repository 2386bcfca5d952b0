#include "index/id_map.h"

#include <cstdint>
#include <map>
#include <random>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace recall {
namespace {

constexpr int64_t kHidden = IdMap::kHidden;

// Checks `map` against a reference: id -> live label, and the label table.
void ExpectMatches(const IdMap& map, const std::map<int64_t, int64_t>& live,
                   const std::vector<int64_t>& table) {
  ASSERT_EQ(map.num_labels(), static_cast<int64_t>(table.size()));
  ASSERT_EQ(map.num_live(), static_cast<int64_t>(live.size()));
  for (int64_t label = 0; label < map.num_labels(); ++label) {
    ASSERT_EQ(map.id_at(label), table[label]) << "label " << label;
  }
  for (const auto& [id, label] : live) {
    ASSERT_EQ(map.LabelOf(id), label) << "id " << id;
    ASSERT_TRUE(map.Contains(id));
  }
  std::map<int64_t, int64_t> seen;
  map.ForEachLive([&](int64_t id, int64_t label) { seen.emplace(id, label); });
  EXPECT_EQ(seen, live);
}

TEST(IdMapTest, FromTableHidesEarlierDuplicatesAndKeepsHiddenLabels) {
  int64_t duplicates = -1;
  IdMap map = IdMap::FromTable({7, kHidden, 9, 7, 11, 9, 7}, &duplicates);
  EXPECT_EQ(duplicates, 3);
  ExpectMatches(map, {{7, 6}, {9, 5}, {11, 4}},
                {kHidden, kHidden, kHidden, kHidden, 11, 9, 7});
  EXPECT_EQ(map.num_hidden(), 4);
  EXPECT_EQ(map.LabelOf(8), -1);
  EXPECT_FALSE(map.Contains(kHidden));
}

TEST(IdMapTest, BindReplacesAndUnbindHides) {
  IdMap map = IdMap::FromTable({100, 200});
  map.GrowTo(4);
  EXPECT_EQ(map.num_hidden(), 2);
  EXPECT_EQ(map.Bind(100, 2), 0);  // replaces: label 0 is hidden now
  EXPECT_EQ(map.Bind(300, 3), -1);
  ExpectMatches(map, {{100, 2}, {200, 1}, {300, 3}}, {kHidden, 200, 100, 300});
  EXPECT_EQ(map.Unbind(200), 1);
  EXPECT_EQ(map.Unbind(200), -1);
  EXPECT_EQ(map.Unbind(12345), -1);
  ExpectMatches(map, {{100, 2}, {300, 3}}, {kHidden, kHidden, 100, 300});
  map.GrowTo(2);  // never shrinks
  EXPECT_EQ(map.num_labels(), 4);
}

TEST(IdMapTest, MovedMapKeepsWorking) {
  IdMap a = IdMap::FromTable({1, 2, 3});
  IdMap b = std::move(a);
  IdMap c;
  std::swap(b, c);
  c.GrowTo(5);
  for (int64_t id = 10; id < 12; ++id) c.Bind(id, id - 7);
  ExpectMatches(c, {{1, 0}, {2, 1}, {3, 2}, {10, 3}, {11, 4}}, {1, 2, 3, 10, 11});
  ExpectMatches(b, {}, {});
}

// Random binds, rebinds and unbinds through many rehashes, against std::map.
TEST(IdMapTest, RandomOperationsMatchReference) {
  std::mt19937_64 rng(29);
  std::map<int64_t, int64_t> live;
  std::vector<int64_t> table;
  IdMap map;
  for (int step = 0; step < 60000; ++step) {
    const int64_t id = static_cast<int64_t>(rng() % 5000) * 7919 - 1000;  // negatives too
    if (id == kHidden) continue;
    if (rng() % 4 == 0) {
      auto it = live.find(id);
      const int64_t expected = it == live.end() ? -1 : it->second;
      ASSERT_EQ(map.Unbind(id), expected);
      if (it != live.end()) {
        table[it->second] = kHidden;
        live.erase(it);
      }
    } else {
      const int64_t label = static_cast<int64_t>(table.size());
      table.push_back(kHidden);
      map.GrowTo(label + 1);
      auto it = live.find(id);
      const int64_t expected = it == live.end() ? -1 : it->second;
      ASSERT_EQ(map.Bind(id, label), expected);
      if (it != live.end()) table[it->second] = kHidden;
      live[id] = label;
      table[label] = id;
    }
  }
  ExpectMatches(map, live, table);
  IdMap rebuilt = IdMap::FromTable(map.table());
  ExpectMatches(rebuilt, live, table);
}

// The point of the indirect set: at 1M items the map holds under 32 B per item, where an
// absl::flat_hash_map<int64_t, int64_t> plus the table hold ~44.
TEST(IdMapTest, HoldsUnder32BytesPerItemAtOneMillion) {
  constexpr int64_t kItems = 1000000;
  std::vector<int64_t> table(kItems);
  for (int64_t i = 0; i < kItems; ++i) table[i] = i * 3 + 1;
  IdMap map = IdMap::FromTable(std::move(table));
  EXPECT_EQ(map.num_live(), kItems);
  EXPECT_LT(map.MemoryBytes(), static_cast<size_t>(32 * kItems));
  EXPECT_EQ(map.LabelOf(3 * 123456 + 1), 123456);
}

}  // namespace
}  // namespace recall
