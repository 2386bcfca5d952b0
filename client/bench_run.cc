#include "client/bench_run.h"

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <type_traits>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/bench_files.h"

namespace recall::bench {
namespace {

template <typename T>
std::vector<T> ParsePositives(const std::string& s) {
  std::vector<T> out;
  for (absl::string_view p : absl::StrSplit(s, ',', absl::SkipEmpty())) {
    T v = 0;
    bool ok;
    if constexpr (std::is_integral_v<T>) {
      ok = absl::SimpleAtoi(p, &v);
    } else {
      ok = absl::SimpleAtod(p, &v);
    }
    if (ok && v > 0) out.push_back(v);
  }
  return out;
}

}  // namespace

std::vector<int> ParsePositiveInts(const std::string& list) { return ParsePositives<int>(list); }
std::vector<double> ParsePositiveDoubles(const std::string& list) {
  return ParsePositives<double>(list);
}

std::string AffinityString() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return "?";
  std::vector<std::string> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &set)) cpus.push_back(absl::StrCat(c));
  }
  return absl::StrJoin(cpus, ",");
}

absl::StatusOr<std::string> RunBench(const RunOptions& o, const RunHeader& header, Target& target,
                                     const std::vector<recall::v1::RecallRequest>& pool,
                                     const std::vector<recall::v1::RecallResponse>* exact) {
  const std::string& mode = o.mode;
  if (mode != "sweep" && mode != "closed" && mode != "open" && mode != "recall") {
    return absl::InvalidArgumentError("--mode must be sweep, closed, open or recall");
  }
  if (pool.empty()) return absl::InvalidArgumentError("the request pool is empty");
  const int k = pool[0].k();
  int hmin = pool[0].user().history_item_ids_size(), hmax = hmin;
  for (const auto& r : pool) {
    hmin = std::min(hmin, r.user().history_item_ids_size());
    hmax = std::max(hmax, r.user().history_item_ids_size());
  }
  auto closed = [&](int c) {
    return o.stream ? RunStreamClosedLoop(o.stream_addr, o.stream_channels, pool, c, o.warmup_s,
                                          o.duration_s)
                    : RunClosedLoop(target, pool, c, o.warmup_s, o.duration_s);
  };
  const std::string cpus = AffinityString();
  std::string json = absl::StrFormat(
      "{\"target\": \"%s\", \"addr\": \"%s\", \"model_version\": %d, \"items\": %d, \"k\": %d, "
      "\"history\": [%d, %d], \"bench_cpus\": \"%s\"",
      header.target, header.addr, header.model_version, header.items, k, hmin, hmax, cpus);
  std::cerr << o.tool << ": target " << header.target << ", " << header.items
            << " items, k=" << k << ", " << pool.size() << " requests, bench on cpus " << cpus
            << "\n";
  double max_qps = 0;
  int best_c = 0;
  if (mode == "sweep" || mode == "closed") {
    std::vector<std::string> points;
    for (int c : o.concurrency) {
      LatencyStats s = closed(c);
      std::cerr << absl::StrFormat("  closed c=%-3d qps=%8.1f p50=%.2fms p99=%.2fms errors=%d\n",
                                   c, s.qps, s.p50_ms, s.p99_ms, s.errors);
      points.push_back(absl::StrCat("{\"concurrency\": ", c, ", \"stats\": ", StatsJson(s), "}"));
      if (s.errors == 0 && s.qps > max_qps) {
        max_qps = s.qps;
        best_c = c;
      }
    }
    absl::StrAppend(&json, ", \"closed_loop\": [", absl::StrJoin(points, ", "),
                    "], \"max_qps\": ", absl::StrFormat("%.1f", max_qps),
                    ", \"max_qps_concurrency\": ", best_c);
  }
  if ((mode == "sweep" && !o.stream && max_qps > 0) || mode == "open") {
    std::vector<double> rates;
    if (mode == "open") {
      rates = {o.rate};
    } else {
      for (double f : o.load_fractions) rates.push_back(f * max_qps);
    }
    std::unique_ptr<UpsertLoad> writes;
    if (o.start_writes) writes = o.start_writes();
    const auto writes_start = std::chrono::steady_clock::now();
    std::vector<std::string> points;
    for (double r : rates) {
      LatencyStats s = RunOpenLoop(target, pool, r, o.warmup_s, o.duration_s, o.max_outstanding);
      std::cerr << absl::StrFormat(
          "  open rate=%8.1f qps=%8.1f p50=%.2fms p99=%.2fms p999=%.2fms errors=%d\n", r, s.qps,
          s.p50_ms, s.p99_ms, s.p999_ms, s.errors);
      points.push_back(absl::StrFormat("{\"rate\": %.1f, \"fraction\": %.3f, \"stats\": %s}", r,
                                       max_qps > 0 ? r / max_qps : 0.0, StatsJson(s)));
    }
    absl::StrAppend(&json, ", \"open_loop\": [", absl::StrJoin(points, ", "), "]");
    if (writes) {
      writes->Stop();
      const double sec = std::max(
          1e-9, std::chrono::duration<double>(std::chrono::steady_clock::now() - writes_start)
                    .count());
      const double upserts = writes->items_ok() / sec;
      const double all = (writes->items_ok() + writes->deleted_ids_ok()) / sec;
      std::cerr << absl::StrFormat(
          "  writes: %.0f items/s applied (%.0f upserts/s; %d upserted, %d of them "
          "replacements; %d ids deleted, %d present), %d failed upsert calls, %d failed "
          "delete calls\n",
          all, upserts, writes->items_ok(), writes->replaced_ok(), writes->deleted_ids_ok(),
          writes->deleted_present(), writes->calls_failed(), writes->delete_calls_failed());
      absl::StrAppend(
          &json,
          absl::StrFormat(
              ", \"upserts_per_sec\": %.1f, \"upsert_failed_calls\": %d, \"writes_per_sec\": "
              "%.1f, \"upserted_items\": %d, \"replaced_items\": %d, \"deleted_ids\": %d, "
              "\"deleted_present\": %d, \"delete_failed_calls\": %d",
              upserts, writes->calls_failed(), all, writes->items_ok(), writes->replaced_ok(),
              writes->deleted_ids_ok(), writes->deleted_present(), writes->delete_calls_failed()));
    }
  }
  if (o.recall_queries > 0 && !o.start_writes) {
    if (exact == nullptr) {
      std::cerr << "  recall check skipped: no top-K file\n";
    } else {
      auto r = RecallAgainstTopK(target, pool, *exact, o.recall_queries);
      if (r.ok() && r->queries > 0) {
        std::cerr << absl::StrFormat("  recall@%d vs exact: %.4f (ids: %.4f; %d queries)\n", k,
                                     r->recall, r->id_recall, r->queries);
        absl::StrAppend(&json, absl::StrFormat(", \"recall_at_k\": %.4f, \"id_recall_at_k\": %.4f",
                                               r->recall, r->id_recall));
      } else {
        std::cerr << "  recall check skipped: "
                  << (r.ok() ? "the top-K file is empty" : std::string(r.status().message()))
                  << "\n";
      }
    }
  }
  json += "}";
  return json;
}

}  // namespace recall::bench
