// Stable hashing for feature encoding. The values are part of the model contract: a model
// trained today must see the same buckets in a server built next year, so nothing here may
// depend on the process, the platform or a library's unspecified hash (std::hash and
// absl::Hash are salted or unspecified; these are not).
#ifndef RECALL_MODEL_HASHING_H_
#define RECALL_MODEL_HASHING_H_

#include <cstdint>
#include "absl/strings/string_view.h"

namespace recall {

// SplitMix64 finalizer: a bijective 64-bit mix.
inline uint64_t Mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// FNV-1a over the bytes of `s`, seeded by `seed`, then mixed.
inline uint64_t StableHash(absl::string_view s, uint64_t seed = 0) {
  uint64_t h = 0xcbf29ce484222325ULL ^ Mix64(seed);
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return Mix64(h);
}

// Bucket in [1, num_buckets] (row 0 is reserved for missing / out-of-vocabulary).
inline int64_t HashBucket(uint64_t hash, int64_t num_buckets) {
  return 1 + static_cast<int64_t>(hash % static_cast<uint64_t>(num_buckets));
}

}  // namespace recall

#endif  // RECALL_MODEL_HASHING_H_
