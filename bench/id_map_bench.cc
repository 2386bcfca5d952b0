// id-map-bench: what EmbeddingIndex's id -> label lookups cost with IdMap (labels in a hash
// set, ids read back from the label table) against an absl::flat_hash_map<int64_t, int64_t>
// plus the same table, at ITEMS items, and the bytes each holds. Every Recall looks up its
// 20-50 excluded history items this way. Rounds alternate the two, so both see the same
// machine; the medians are printed.
//
// usage: id-map-bench [items=1000000] [rounds=7]

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "index/id_map.h"

namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <typename F>
double NsPerLookup(const std::vector<int64_t>& keys, int64_t* sink, F&& lookup) {
  const auto t0 = std::chrono::steady_clock::now();
  int64_t acc = 0;
  for (int64_t k : keys) acc += lookup(k);
  const auto t1 = std::chrono::steady_clock::now();
  *sink += acc;
  return std::chrono::duration<double, std::nano>(t1 - t0).count() / keys.size();
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t items = argc > 1 ? std::atoll(argv[1]) : 1000000;
  const int rounds = argc > 2 ? std::atoi(argv[2]) : 7;
  std::mt19937_64 rng(7);
  std::vector<int64_t> table(items);
  for (int64_t i = 0; i < items; ++i) table[i] = static_cast<int64_t>(rng() >> 2);

  absl::flat_hash_map<int64_t, int64_t> map;
  map.reserve(items);
  for (int64_t i = 0; i < items; ++i) map.emplace(table[i], i);
  const size_t map_bytes = table.capacity() * sizeof(int64_t) +
                           map.capacity() * (sizeof(std::pair<int64_t, int64_t>) + 1);
  const recall::IdMap id_map = recall::IdMap::FromTable(table);

  // 2M lookups, 90% of present ids (history items), 10% absent.
  std::vector<int64_t> keys(2000000);
  for (auto& k : keys) {
    k = rng() % 10 == 0 ? static_cast<int64_t>(rng() >> 2) : table[rng() % items];
  }
  int64_t sink = 0;
  std::vector<double> with_map, with_id_map;
  for (int r = 0; r < rounds; ++r) {
    with_map.push_back(NsPerLookup(keys, &sink, [&](int64_t id) {
      auto it = map.find(id);
      return it == map.end() ? int64_t{-1} : it->second;
    }));
    with_id_map.push_back(NsPerLookup(keys, &sink, [&](int64_t id) { return id_map.LabelOf(id); }));
  }
  std::printf("items %lld, %d rounds of %zu lookups (checksum %lld)\n",
              static_cast<long long>(items), rounds, keys.size(), static_cast<long long>(sink));
  std::printf("flat_hash_map<id, label> + table: %.1f ns/lookup (median), %.1f B/item\n",
              Median(with_map), static_cast<double>(map_bytes) / items);
  std::printf("IdMap:                            %.1f ns/lookup (median), %.1f B/item\n",
              Median(with_id_map), static_cast<double>(id_map.MemoryBytes()) / items);
  return 0;
}
