// Row draws: the random numbers of training come from a stream per (row, purpose), keyed by
// the run's seed, the epoch and the row's global position in that epoch's example order --
// never from one engine advanced row after row. A row therefore draws the same history
// subset, audience, dropout and SSL masks whichever rank holds it and whatever else shares
// its batch, so a run does not depend on how the examples are sharded (trainer/collective.h).
//
// The stream is SplitMix64 (Steele et al. 2014): one 64-bit add and a mix per draw, seeded by
// mixing the keys, so a batch of thousands of rows starts thousands of streams for free.
// Platform-independent: no std distributions.
//
// Thread-safety: values; a RowRng is used by one thread.
#ifndef RECALL_TRAINER_ROW_DRAWS_H_
#define RECALL_TRAINER_ROW_DRAWS_H_

#include <cstdint>
#include <limits>
#include <random>
#include <vector>

namespace recall::trainer {

// SplitMix64's finalizer: a bijective mix of 64 bits.
inline uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
// A key for `b` under `a` (order matters): Mix(Mix(seed, epoch), position) and so on.
inline uint64_t MixKey(uint64_t a, uint64_t b) { return Mix64(a ^ Mix64(b + 0x9e3779b97f4a7c15ULL)); }

// What a stream is for: one row draws each purpose from its own stream, so adding a draw for
// one purpose never shifts another's.
enum class DrawPurpose : uint64_t {
  kHistory = 1,      // history subset and dropout, user id dropout
  kAudience,         // an item row's audience subset and dropout
  kNeighbor,         // the UltraGCN neighbour of a row's item
  kSslItems,         // the audience of the item SSL views' source batch
  kSslViewA,         // first masked view (item and user SSL)
  kSslViewB,         // second masked view
  kGlobalNegatives,  // per step: the uniform global negative ids
  kQueueAudience,    // per step: audiences of re-encoded queue ids
  kGlobalAudience,   // per step: audiences of global negatives
};

// A SplitMix64 stream; a UniformRandomBitGenerator.
class RowRng {
 public:
  using result_type = uint64_t;
  RowRng(uint64_t key, DrawPurpose purpose)
      : state_(MixKey(key, static_cast<uint64_t>(purpose))) {}
  static constexpr result_type min() { return 0; }
  static constexpr result_type max() { return std::numeric_limits<uint64_t>::max(); }
  result_type operator()() { return Mix64(state_ += 0x9e3779b97f4a7c15ULL); }

 private:
  uint64_t state_;
};

// Uniform integer in [0, n) and Bernoulli(p) from a 64-bit engine: platform-independent.
template <typename Engine>
uint64_t UniformBelow(Engine& rng, uint64_t n) {
  return rng() % n;
}
template <typename Engine>
bool Draw(Engine& rng, double p) {
  return static_cast<double>(rng() >> 11) * 0x1.0p-53 < p;
}

// The keys of one batch: a key per row (its global position in the epoch's order under the
// run's epoch key) and a key for what the whole step shares (global negatives, re-encoded
// queue audiences), identical on every rank.
struct DrawKeys {
  std::vector<uint64_t> rows;
  uint64_t step = 0;

  // Row keys of positions [first, first + n) of the epoch whose key is epoch_key.
  static DrawKeys ForRows(uint64_t epoch_key, int64_t global_step, int64_t first, int64_t n) {
    DrawKeys k;
    k.rows.resize(static_cast<size_t>(n));
    for (int64_t j = 0; j < n; ++j) k.rows[j] = MixKey(epoch_key, static_cast<uint64_t>(first + j));
    k.step = MixKey(~epoch_key, static_cast<uint64_t>(global_step));
    return k;
  }
  // Keys for n rows derived from the step key (rows that belong to no example).
  std::vector<uint64_t> StepRows(DrawPurpose purpose, int64_t n) const {
    std::vector<uint64_t> out(static_cast<size_t>(n));
    const uint64_t base = MixKey(step, static_cast<uint64_t>(purpose));
    for (int64_t j = 0; j < n; ++j) out[j] = MixKey(base, static_cast<uint64_t>(j));
    return out;
  }
};

}  // namespace recall::trainer

#endif  // RECALL_TRAINER_ROW_DRAWS_H_
