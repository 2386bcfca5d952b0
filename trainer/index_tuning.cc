#include "trainer/index_tuning.h"

#include <algorithm>
#include <random>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace recall::trainer {

std::vector<int64_t> TuningUsers(const Dataset& fit, bool has_validation, int max_users,
                                 uint64_t seed) {
  std::vector<int64_t> users;
  for (int64_t u = 0; u < fit.num_users; ++u) {
    const bool take = has_validation ? !fit.test[u].empty() : !fit.train[u].empty();
    if (take) users.push_back(u);
  }
  // Own engine, salted: tuning must not shift any training stream.
  std::mt19937_64 rng(seed ^ 0x74756e65696e6478ULL);
  std::shuffle(users.begin(), users.end(), rng);
  if (static_cast<int64_t>(users.size()) > max_users) users.resize(std::max(0, max_users));
  std::sort(users.begin(), users.end());
  return users;
}

TuneOptions TuneOptionsFrom(const recall::v1::TrainConfig& config) {
  TuneOptions o;
  o.k = config.index_recall_k();
  o.recall_target = config.index_recall_target();
  o.memory_budget_bytes = config.index_memory_budget_mb() * (int64_t{1} << 20);
  o.budget_s = config.index_tune_budget_s();
  return o;
}

recall::v1::IndexTuning TuningRecord(const TuneResult& result, const TuneOptions& options,
                                     int64_t num_items, int num_queries,
                                     const std::string& queries) {
  recall::v1::IndexTuning t;
  t.set_k(options.k);
  t.set_recall_target(options.recall_target);
  t.set_memory_budget_bytes(options.memory_budget_bytes);
  t.set_num_queries(num_queries);
  t.set_queries(queries);
  t.set_target_met(result.target_met);
  t.set_chosen(result.chosen);
  t.set_seconds(result.total_s);
  t.set_num_items(num_items);
  t.set_tuned_at(absl::FormatTime(absl::RFC3339_sec, absl::Now(), absl::UTCTimeZone()));
  for (const TunePoint& p : result.points) {
    auto* q = t.add_points();
    q->set_factory(p.factory);
    for (const auto& [name, v] : p.params) (*q->mutable_params())[name] = v;
    q->set_recall(p.recall);
    q->set_distances_per_query(p.distances_per_query);
    q->set_qps_one_thread(p.qps);
    q->set_build_seconds(p.build_s);
    q->set_bytes(p.bytes);
    q->set_insert_us(p.insert_us);
    q->set_meets_target(p.meets_target);
    q->set_within_budget(p.within_budget);
    q->set_note(p.note);
  }
  return t;
}

}  // namespace recall::trainer
