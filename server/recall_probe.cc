#include "server/recall_probe.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mm.h>
#include <glog/logging.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <queue>

#include "absl/strings/str_cat.h"
#include "server/malloc_control.h"

namespace recall::server {
namespace {

// splitmix64: the reservoir's "random" slot for the n-th query of an interval.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// One query's exact top-k as it is scanned: a min-heap of (score, id).
using Scored = std::pair<float, int64_t>;
using MinHeap = std::priority_queue<Scored, std::vector<Scored>, std::greater<Scored>>;

}  // namespace

RecallProbe::RecallProbe(const VersionManager* versions, Options options)
    : versions_(versions), options_(options) {}

RecallProbe::~RecallProbe() { Stop(); }

void RecallProbe::Offer(int64_t version, absl::Span<const float> embedding, int k,
                        absl::Span<const int64_t> excludes) {
  const uint64_t cap = static_cast<uint64_t>(std::max(1, options_.capacity));
  const uint64_t n = offered_.fetch_add(1, std::memory_order_relaxed) + 1;
  // Algorithm R: the n-th query replaces a random slot with probability cap / n.
  const uint64_t slot = n <= cap ? n - 1 : Mix(n) % n;
  if (slot >= cap) return;
  Sample s;
  s.version = version;
  s.embedding.assign(embedding.begin(), embedding.end());
  s.k = k;
  s.excludes.assign(excludes.begin(), excludes.end());
  std::sort(s.excludes.begin(), s.excludes.end());
  s.excludes.erase(std::unique(s.excludes.begin(), s.excludes.end()), s.excludes.end());
  absl::MutexLock lock(&mu_);
  if (reservoir_.size() < cap) {
    reservoir_.push_back(std::move(s));
  } else {
    reservoir_[slot % cap] = std::move(s);
  }
}

RecallProbe::Result RecallProbe::last() const {
  absl::MutexLock lock(&mu_);
  return last_;
}

void RecallProbe::Publish(const Result& r) {
  {
    absl::MutexLock lock(&mu_);
    last_ = r;
  }
  if (on_probe_) on_probe_(r);
}

absl::StatusOr<RecallProbe::Result> RecallProbe::ProbeOnce() {
  absl::MutexLock probe_lock(&probe_mu_);
  std::shared_ptr<Servable> s = versions_->Current();
  if (!s) return absl::UnavailableError("no model version is loaded yet");
  const int64_t version = s->version();
  const EmbeddingIndex& index = *s->index;
  const int dim = index.dim();

  std::vector<Sample> fresh;
  {
    absl::MutexLock lock(&mu_);
    fresh.swap(reservoir_);
    offered_.store(0, std::memory_order_relaxed);
  }
  auto stale = [&](const Sample& q) {
    return q.version != version || static_cast<int>(q.embedding.size()) != dim || q.k < 1;
  };
  fresh.erase(std::remove_if(fresh.begin(), fresh.end(), stale), fresh.end());
  if (!fresh.empty()) {
    probed_ = std::move(fresh);
  } else {
    probed_.erase(std::remove_if(probed_.begin(), probed_.end(), stale), probed_.end());
  }
  // Nothing to measure: keep the figures, unless they are another version's.
  auto nothing = [&]() -> Result {
    Result r = last();
    if (r.version != version) {
      r = Result();
      r.version = version;
      r.at = absl::Now();
      Publish(r);
    }
    return r;
  };
  if (probed_.empty()) return nothing();
  if (index.size() > options_.max_items) {
    if (!warned_too_big_) {
      LOG(WARNING) << "recall probe: the serving index has " << index.size()
                   << " items, more than the probe scans (" << options_.max_items
                   << "); not probing";
      warned_too_big_ = true;
    }
    return nothing();
  }

  const auto start = std::chrono::steady_clock::now();
  const uint64_t generation_before = index.generation();
  const int n = static_cast<int>(probed_.size());
  std::vector<float> queries(static_cast<size_t>(n) * dim);
  for (int i = 0; i < n; ++i) {
    std::memcpy(&queries[static_cast<size_t>(i) * dim], probed_[i].embedding.data(),
                sizeof(float) * dim);
  }

  // What the serving index answers now, one search per distinct k.
  std::vector<std::vector<int64_t>> got(n);
  std::map<int, std::vector<int>> by_k;
  for (int i = 0; i < n; ++i) by_k[probed_[i].k].push_back(i);
  for (const auto& [k, rows] : by_k) {
    std::vector<float> q;
    std::vector<std::vector<int64_t>> excludes;
    for (int i : rows) {
      q.insert(q.end(), probed_[i].embedding.begin(), probed_[i].embedding.end());
      excludes.push_back(probed_[i].excludes);
    }
    auto hits = index.Search(q.data(), static_cast<int>(rows.size()), k,
                             absl::MakeConstSpan(excludes));
    if (!hits.ok()) return hits.status();
    for (size_t j = 0; j < rows.size(); ++j) got[rows[j]] = std::move((*hits)[j].ids);
  }

  // The exact top-k over the live items, and the exact score of every item the index returned.
  struct Scan {
    MinHeap top;
    float threshold = -INFINITY;    // the k-th best score so far once the heap is full
    std::vector<int64_t> returned;  // got, sorted
    std::vector<float> returned_score;
  };
  std::vector<Scan> scans(n);
  for (int i = 0; i < n; ++i) {
    scans[i].returned = got[i];
    std::sort(scans[i].returned.begin(), scans[i].returned.end());
    scans[i].returned_score.assign(scans[i].returned.size(), -INFINITY);
  }
  const std::vector<int64_t> ids = index.Ids();  // ascending
  const size_t chunk = static_cast<size_t>(std::max(1, options_.chunk_items));
  std::vector<float> vectors(chunk * dim);
  std::vector<int64_t> chunk_ids;
  const at::Tensor q_t = at::from_blob(queries.data(), {n, dim}, at::kFloat);
  int64_t scanned = 0;
  for (size_t begin = 0; begin < ids.size(); begin += chunk) {
    // One shared hold per chunk; ids removed meanwhile are skipped.
    const size_t end = std::min(ids.size(), begin + chunk);
    auto read = index.ReconstructMany(
        absl::MakeConstSpan(ids.data() + begin, end - begin), vectors.data(), &chunk_ids);
    if (!read.ok()) return read.status();
    const int64_t m = static_cast<int64_t>(chunk_ids.size());
    if (m == 0) continue;
    scanned += m;
    const at::Tensor items = at::from_blob(vectors.data(), {m, dim}, at::kFloat);
    const at::Tensor scores = at::mm(q_t, items.t()).contiguous();  // [n, m]
    const float* sc = scores.data_ptr<float>();
    for (int i = 0; i < n; ++i) {
      Scan& st = scans[i];
      const std::vector<int64_t>& ex = probed_[i].excludes;
      const size_t k = static_cast<size_t>(probed_[i].k);
      const float* row = sc + static_cast<size_t>(i) * m;
      // Only a score above the running k-th best is looked at further: one compare per item.
      for (int64_t j = 0; j < m; ++j) {
        if (row[j] <= st.threshold) continue;
        const int64_t id = chunk_ids[j];
        if (std::binary_search(ex.begin(), ex.end(), id)) continue;
        st.top.emplace(row[j], id);
        if (st.top.size() > k) st.top.pop();
        if (st.top.size() == k) st.threshold = st.top.top().first;
      }
      for (size_t r = 0; r < st.returned.size(); ++r) {
        auto it = std::lower_bound(chunk_ids.begin(), chunk_ids.end(), st.returned[r]);
        if (it != chunk_ids.end() && *it == st.returned[r]) {
          st.returned_score[r] = row[it - chunk_ids.begin()];
        }
      }
    }
  }

  // recall@k: returned items whose exact score reaches the k-th exact score (ties count), over
  // the size of the exact top-k, summed over the queries.
  int64_t found = 0, wanted = 0;
  for (int i = 0; i < n; ++i) {
    const Scan& st = scans[i];
    if (st.top.empty()) continue;
    const float kth = st.top.top().first;
    const float tolerance = 1e-5f * std::max(1.0f, std::fabs(kth));
    int64_t hits = 0;
    for (float score : st.returned_score) hits += score >= kth - tolerance ? 1 : 0;
    found += std::min<int64_t>(hits, static_cast<int64_t>(st.top.size()));
    wanted += static_cast<int64_t>(st.top.size());
  }
  Result r;
  r.version = version;
  r.queries = n;
  r.items = scanned;
  r.recall = wanted > 0 ? static_cast<double>(found) / static_cast<double>(wanted) : 1.0;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.writes_during = index.generation() != generation_before;
  r.at = absl::Now();
  Publish(r);
  VLOG(1) << "recall probe: recall " << r.recall << " over " << n << " queries, " << scanned
          << " items, model version " << version << ", " << r.seconds << " s"
          << (r.writes_during ? " (the index changed meanwhile)" : "");
  return r;
}

void RecallProbe::Start() {
  absl::MutexLock lock(&thread_mu_);
  if (thread_.joinable() || stop_) return;
  thread_ = std::thread([this] {
    // Lowest priority: the probe yields to requests (Linux: nice and the policy apply per
    // thread). SCHED_IDLE, because under --cpu_sched=batch a waking gRPC thread preempts only
    // an idle-policy thread, so a probe would otherwise hold the core for its whole slice.
    const auto tid = static_cast<pid_t>(syscall(SYS_gettid));
    setpriority(PRIO_PROCESS, static_cast<id_t>(tid), 19);
    const sched_param idle{};
    if (sched_setscheduler(tid, SCHED_IDLE, &idle) != 0) {
      PLOG(WARNING) << "recall probe: SCHED_IDLE refused; running at nice 19";
    }
    absl::MutexLock l(&thread_mu_);
    while (!thread_mu_.AwaitWithTimeout(absl::Condition(&stop_), options_.interval)) {
      thread_mu_.Unlock();
      auto r = ProbeOnce();
      if (!r.ok() && r.status().code() != absl::StatusCode::kUnavailable) {
        LOG(WARNING) << "recall probe: " << r.status();
      }
      // The pass's id list and score blocks (~10 MB at 1M items) go back to the OS rather than
      // staying in the allocator's free pages, where they count in RSS for the next minute.
      ReleaseFreeMemory();
      thread_mu_.Lock();
    }
  });
}

void RecallProbe::Stop() {
  {
    absl::MutexLock lock(&thread_mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

}  // namespace recall::server
