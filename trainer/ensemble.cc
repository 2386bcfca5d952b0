#include "trainer/ensemble.h"

#include <torch/torch.h>

#include <algorithm>
#include <mutex>
#include <thread>

namespace recall::trainer {

absl::StatusOr<std::vector<std::unique_ptr<Trainer>>> CreateEnsemble(const Dataset& dataset,
                                                                    const TrainConfig& config) {
  const int n = config.ensemble();
  if (n < 1) return absl::InvalidArgumentError("ensemble must be >= 1");
  std::vector<std::unique_ptr<Trainer>> members;
  for (int k = 0; k < n; ++k) {
    auto t = Trainer::Create(dataset, config, k);
    if (!t.ok()) return t.status();
    members.push_back(*std::move(t));
  }
  return members;
}

absl::Status TrainConcurrently(const std::vector<Trainer*>& members, int threads,
                               const std::function<void(int, const TrainingEvent&)>& progress) {
  const int n = static_cast<int>(members.size());
  if (n == 1) {  // a single model trains on the calling thread, with its thread settings
    if (!progress) return members[0]->Train();
    return members[0]->Train([&](const TrainingEvent& e) { progress(0, e); });
  }
  const int per_member = std::max(1, threads / std::max(1, n));
  std::mutex progress_mu;
  std::vector<absl::Status> status(n);
  std::vector<std::thread> workers;
  for (int k = 0; k < n; ++k) {
    workers.emplace_back([&, k] {
      // Per-thread with the OpenMP backend: ATen's and OpenBLAS's parallel regions started from
      // this thread use per_member threads.
      torch::set_num_threads(per_member);
      ProgressFn member_progress;
      if (progress) {
        member_progress = [&, k](const TrainingEvent& e) {
          std::lock_guard<std::mutex> lock(progress_mu);
          progress(k, e);
        };
      }
      status[k] = members[k]->Train(member_progress);
    });
  }
  for (auto& w : workers) w.join();
  for (const auto& s : status) {
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

void CombineInto(const std::vector<Trainer*>& members) {
  if (members.size() < 2) return;
  std::vector<const Towers*> towers;
  for (Trainer* m : members) towers.push_back(&m->towers());
  members[0]->towers() = EnsembleTowers(members[0]->encoder(), towers);
}

}  // namespace recall::trainer
