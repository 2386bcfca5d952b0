// recall-bench: load generator for any server speaking recall.v1 (and for the engine in-process,
// the ceiling without network). See client/README.md ("recall-bench") and bench/serving.sh.
//
//   recall-bench --target=grpc --addr=127.0.0.1:50051 --model_base=DIR --mode=sweep
//   recall-bench --target=inprocess --model_base=DIR --mode=sweep
//
// sweep: a closed-loop concurrency sweep (max sustainable QPS = the best point), then open-loop
// runs at --load_fractions of that maximum (latency p50/p95/p99/p999 and errors), then recall@k
// of the answers against exact search over the same version's item vectors. Prints one JSON
// object (also to --json_out).
#include <ATen/Parallel.h>
#include <gflags/gflags.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "client/bench_load.h"
#include "index/embedding_index.h"
#include "model/openmp_env.h"
#include "server/recall_batcher.h"
#include "server/recall_engine.h"
#include "server/usable_cpus.h"
#include "server/version_manager.h"
#include "trainer/dataset.h"

DEFINE_string(target, "grpc", "grpc (unary Recall) | stream (RecallStream) | inprocess "
              "(RecallEngine through the batcher, no network)");
DEFINE_string(addr, "127.0.0.1:50051", "server address (grpc, stream)");
DEFINE_string(model_base, "", "the model base the server serves: item ids for the requests and "
              "item vectors for exact recall; the version served in-process");
DEFINE_string(mode, "sweep", "sweep | closed | open | recall (only the check against exact)");
DEFINE_double(upsert_rate, 0, "open mode, grpc target: also upsert this many raw vectors per "
              "second while the run lasts (ids above the served ones, replacing each other)");
DEFINE_int32(upsert_batch, 50, "items per UpsertItems call of --upsert_rate");
DEFINE_string(concurrency, "1,2,4,8,16,32,64", "closed loop: virtual users (a list for sweep)");
DEFINE_string(load_fractions, "0.25,0.5,0.75", "sweep: open-loop rates as fractions of max QPS");
DEFINE_double(rate, 1000, "open mode: requests per second");
DEFINE_double(duration_s, 10, "measured seconds per run");
DEFINE_double(warmup_s, 2, "unmeasured seconds before each run");
DEFINE_int32(k, 100, "top-k of every request");
DEFINE_int32(history_min, 20, "history items per request: uniform in [min, max]");
DEFINE_int32(history_max, 50, "");
DEFINE_int32(requests, 4000, "distinct requests in the pool (cycled)");
DEFINE_int64(num_users, 100000, "user ids drawn from [0, num_users)");
DEFINE_string(users_from, "",
              "a dataset directory as `recall-train --export_dataset` writes it (train.txt, "
              "users.tsv): requests are then its users with a train item, each with its id, "
              "features and last --history_max train items, instead of random ids and histories");
DEFINE_uint64(seed, 1, "request pool seed");
DEFINE_int32(channels, 4, "gRPC connections");
DEFINE_int32(deadline_ms, 5000, "per-call deadline");
DEFINE_int32(max_outstanding, 20000, "open loop: most requests in flight");
DEFINE_int32(recall_queries, 300, "requests whose answers are checked against exact search (0 = skip)");
DEFINE_string(json_out, "", "also write the JSON result here");
DEFINE_bool(batching, true, "inprocess: use the batcher (as recall-server does by default)");
DEFINE_int32(batch_max_size, 32, "inprocess: as recall-server");
DEFINE_int32(batch_max_wait_us, 0, "inprocess: as recall-server");
DEFINE_int32(batch_workers, 0, "inprocess: as recall-server (0 = one per core of this process)");
DEFINE_int32(torch_threads, 1, "inprocess: as recall-server");
DEFINE_int32(ef_search, 0, "inprocess: HNSW efSearch (0 = the index's default)");

namespace {

using recall::bench::LatencyStats;
using recall::v1::RecallRequest;

// The users of an exported dataset as callers would present them (external ids, features).
absl::StatusOr<std::vector<recall::bench::BenchUser>> LoadBenchUsers(const std::string& dir) {
  auto d = recall::trainer::LoadDatasetDir(dir);
  if (!d.ok()) return d.status();
  std::vector<recall::bench::BenchUser> users;
  for (int64_t u = 0; u < d->num_users; ++u) {
    if (d->train[u].empty()) continue;
    recall::bench::BenchUser b;
    b.user_id = d->ExternalUserId(u);
    for (int64_t i : d->train[u]) b.history.push_back(d->ExternalItemId(i));
    for (size_t f = 0; f < d->user_cat_names.size(); ++f) {
      if (!d->user_cat_values[f][u].empty()) b.categorical[d->user_cat_names[f]] = d->user_cat_values[f][u];
    }
    for (size_t f = 0; f < d->user_num_names.size(); ++f) {
      if (!std::isnan(d->user_num_values[f][u])) b.numeric[d->user_num_names[f]] = d->user_num_values[f][u];
    }
    users.push_back(std::move(b));
  }
  if (users.empty()) return absl::InvalidArgumentError(dir + ": no user has a train item");
  return users;
}
using recall::v1::RecallResponse;

// The positive numbers of a comma-separated list (others are skipped).
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

std::string Affinity() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return "?";
  std::vector<std::string> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &set)) cpus.push_back(absl::StrCat(c));
  }
  return absl::StrJoin(cpus, ",");
}

// Recall@k of the served answers against exact search over the same user vector, as
// ann-benchmarks counts it: a served item is a hit when its score reaches the exact k-th score
// (within 1e-4), so near-identical vectors tied at the boundary count whichever of them is
// returned. *id_recall: the plain share of exact ids returned (lower under ties).
absl::StatusOr<double> RecallAgainstExact(recall::bench::Target& target,
                                          const std::vector<RecallRequest>& pool,
                                          const recall::EmbeddingIndex& exact, int n,
                                          double* id_recall) {
  double sum = 0, id_sum = 0;
  int counted = 0;
  for (int i = 0; i < n && i < static_cast<int>(pool.size()); ++i) {
    RecallRequest req = pool[i];
    req.set_return_user_embedding(true);
    RecallResponse resp;
    absl::Notification done;
    grpc::Status status;
    target.Call(&req, &resp, [&](const grpc::Status& s) {
      status = s;
      done.Notify();
    });
    done.WaitForNotification();
    if (!status.ok()) return absl::UnavailableError(absl::StrCat("recall check: ", status.error_message()));
    if (resp.user_embedding_size() != exact.dim()) {
      return absl::FailedPreconditionError("the target does not return user embeddings");
    }
    auto hits = exact.Search(resp.user_embedding().data(), 1, req.k());
    if (!hits.ok()) return hits.status();
    std::vector<int64_t> truth = (*hits)[0].ids;
    const float kth = (*hits)[0].scores.empty() ? 0.0f : (*hits)[0].scores.back();
    std::sort(truth.begin(), truth.end());
    int found = 0, by_score = 0;
    for (const auto& item : resp.items()) {
      found += std::binary_search(truth.begin(), truth.end(), item.item_id());
      by_score += item.score() >= kth - 1e-4f;
    }
    const double k = static_cast<double>(std::max<size_t>(1, truth.size()));
    sum += std::min<double>(by_score, k) / k;
    id_sum += found / k;
    ++counted;
  }
  *id_recall = counted ? id_sum / counted : 0.0;
  return counted ? sum / counted : 0.0;
}

}  // namespace

int main(int argc, char** argv) {
  recall::EnsurePassiveOpenMpWait(argv);
  gflags::SetUsageMessage("recall-bench --target=grpc|stream|inprocess --model_base=DIR [flags]");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  if (FLAGS_model_base.empty()) {
    std::cerr << "error: --model_base is required (request item ids, exact recall)\n";
    return 64;
  }
  // The served version, loaded here too: its item ids make the requests, its vectors the exact
  // answers, and for --target=inprocess it is what answers.
  recall::server::VersionManager versions({FLAGS_model_base, FLAGS_ef_search, 0});
  if (auto s = versions.LoadNewest(); !s.ok()) {
    std::cerr << "error: " << s.message() << "\n";
    return 1;
  }
  std::shared_ptr<recall::server::Servable> servable = versions.Current();
  const std::vector<int64_t> item_ids = servable->index->Ids();
  std::vector<RecallRequest> pool;
  if (FLAGS_users_from.empty()) {
    pool = recall::bench::MakeRequests(FLAGS_requests, item_ids, FLAGS_num_users,
                                       FLAGS_history_min, FLAGS_history_max, FLAGS_k, FLAGS_seed);
  } else {
    auto users = LoadBenchUsers(FLAGS_users_from);
    if (!users.ok()) {
      std::cerr << "error: --users_from: " << users.status().message() << "\n";
      return 64;
    }
    pool = recall::bench::MakeRequestsForUsers(FLAGS_requests, *users, FLAGS_history_max, FLAGS_k,
                                               FLAGS_seed);
  }

  std::unique_ptr<recall::server::RecallEngine> engine;
  std::unique_ptr<recall::server::RecallBatcher> batcher;
  std::unique_ptr<recall::bench::Target> target;
  if (FLAGS_target == "inprocess") {
    at::set_num_threads(std::max(1, FLAGS_torch_threads));
    recall::server::EngineLimits limits;
    limits.max_k = std::max(limits.max_k, FLAGS_k);
    engine = std::make_unique<recall::server::RecallEngine>(&versions, limits);
    if (FLAGS_batching) {
      recall::server::RecallBatcher::Options bo;
      bo.max_batch_size = FLAGS_batch_max_size;
      bo.max_wait_us = FLAGS_batch_max_wait_us;
      bo.num_workers = FLAGS_batch_workers > 0 ? FLAGS_batch_workers : recall::server::UsableCpus();
      batcher = std::make_unique<recall::server::RecallBatcher>(engine.get(), bo);
      target = recall::bench::MakeFunctionTarget(
          "inprocess-batched",
          [b = batcher.get()](const RecallRequest* req, RecallResponse* resp,
                              std::function<void(const grpc::Status&)> done) {
            b->Submit(req, resp, [done = std::move(done)](const absl::Status& s,
                                                           const recall::server::RecallTimings&,
                                                           int) {
              done(s.ok() ? grpc::Status::OK
                          : grpc::Status(static_cast<grpc::StatusCode>(s.code()),
                                         std::string(s.message())));
            });
          });
    } else {
      target = recall::bench::MakeFunctionTarget(
          "inprocess", [e = engine.get()](const RecallRequest* req, RecallResponse* resp,
                                          std::function<void(const grpc::Status&)> done) {
            absl::Status s = e->Recall(*req, resp);
            done(s.ok() ? grpc::Status::OK
                        : grpc::Status(static_cast<grpc::StatusCode>(s.code()),
                                       std::string(s.message())));
          });
    }
  } else if (FLAGS_target == "grpc" || FLAGS_target == "stream") {
    target = recall::bench::MakeUnaryTarget(FLAGS_addr, FLAGS_channels, FLAGS_deadline_ms);
  } else {
    std::cerr << "error: --target must be grpc, stream or inprocess\n";
    return 64;
  }

  const bool stream = FLAGS_target == "stream";
  auto closed = [&](int c) {
    return stream ? recall::bench::RunStreamClosedLoop(FLAGS_addr, FLAGS_channels, pool, c,
                                                       FLAGS_warmup_s, FLAGS_duration_s)
                  : recall::bench::RunClosedLoop(*target, pool, c, FLAGS_warmup_s,
                                                 FLAGS_duration_s);
  };
  std::string json = absl::StrFormat(
      "{\"target\": \"%s\", \"addr\": \"%s\", \"model_version\": %d, \"items\": %d, \"k\": %d, "
      "\"history\": [%d, %d], \"bench_cpus\": \"%s\"",
      FLAGS_target, FLAGS_target == "inprocess" ? "" : FLAGS_addr, servable->version(),
      item_ids.size(), FLAGS_k, FLAGS_history_min, FLAGS_history_max, Affinity());
  std::cerr << "recall-bench: target " << FLAGS_target << ", " << item_ids.size()
            << " items, k=" << FLAGS_k << ", bench on cpus " << Affinity() << "\n";
  double max_qps = 0;
  int best_c = 0;
  if (FLAGS_mode == "sweep" || FLAGS_mode == "closed") {
    std::vector<std::string> points;
    for (int c : ParsePositives<int>(FLAGS_concurrency)) {
      LatencyStats s = closed(c);
      std::cerr << absl::StrFormat("  closed c=%-3d qps=%8.1f p50=%.2fms p99=%.2fms errors=%d\n",
                                   c, s.qps, s.p50_ms, s.p99_ms, s.errors);
      points.push_back(absl::StrCat("{\"concurrency\": ", c, ", \"stats\": ",
                                    recall::bench::StatsJson(s), "}"));
      if (s.errors == 0 && s.qps > max_qps) {
        max_qps = s.qps;
        best_c = c;
      }
    }
    absl::StrAppend(&json, ", \"closed_loop\": [", absl::StrJoin(points, ", "),
                    "], \"max_qps\": ", absl::StrFormat("%.1f", max_qps),
                    ", \"max_qps_concurrency\": ", best_c);
  }
  if ((FLAGS_mode == "sweep" && !stream && max_qps > 0) || FLAGS_mode == "open") {
    std::vector<double> rates;
    if (FLAGS_mode == "open") {
      rates = {FLAGS_rate};
    } else {
      for (double f : ParsePositives<double>(FLAGS_load_fractions)) rates.push_back(f * max_qps);
    }
    std::unique_ptr<recall::bench::UpsertLoad> upserts;
    if (FLAGS_upsert_rate > 0 && FLAGS_target == "grpc") {
      upserts = std::make_unique<recall::bench::UpsertLoad>(
          FLAGS_addr, servable->index->dim(), servable->version(), FLAGS_upsert_rate,
          FLAGS_upsert_batch, (item_ids.empty() ? 0 : item_ids.back()) + 1, 10000);
    }
    const auto upsert_start = std::chrono::steady_clock::now();
    std::vector<std::string> points;
    for (double r : rates) {
      LatencyStats s = recall::bench::RunOpenLoop(*target, pool, r, FLAGS_warmup_s,
                                                  FLAGS_duration_s, FLAGS_max_outstanding);
      std::cerr << absl::StrFormat(
          "  open rate=%8.1f qps=%8.1f p50=%.2fms p99=%.2fms p999=%.2fms errors=%d\n", r, s.qps,
          s.p50_ms, s.p99_ms, s.p999_ms, s.errors);
      points.push_back(absl::StrFormat("{\"rate\": %.1f, \"fraction\": %.3f, \"stats\": %s}", r,
                                       max_qps > 0 ? r / max_qps : 0.0,
                                       recall::bench::StatsJson(s)));
    }
    absl::StrAppend(&json, ", \"open_loop\": [", absl::StrJoin(points, ", "), "]");
    if (upserts) {
      upserts->Stop();
      const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                                       upsert_start).count();
      const double rate = upserts->items_ok() / std::max(sec, 1e-9);
      std::cerr << absl::StrFormat("  upserts: %.0f items/s applied, %d failed calls\n", rate,
                                   upserts->calls_failed());
      absl::StrAppend(&json, absl::StrFormat(", \"upserts_per_sec\": %.1f, \"upsert_failed_calls\": %d",
                                             rate, upserts->calls_failed()));
    }
  }
  if (FLAGS_recall_queries > 0 && FLAGS_upsert_rate <= 0) {
    // Exact answers: a Flat index over the same item vectors.
    auto exact = recall::EmbeddingIndex::Create(servable->index->dim(), "Flat");
    std::vector<float> vectors;
    vectors.reserve(item_ids.size() * servable->index->dim());
    for (int64_t id : item_ids) {
      auto v = servable->index->Reconstruct(id);
      if (!v.ok()) continue;
      vectors.insert(vectors.end(), v->begin(), v->end());
    }
    absl::StatusOr<double> r = absl::InternalError("no exact index");
    double id_recall = 0;
    if (exact.ok() && (*exact)->Build(item_ids, vectors.data()).ok()) {
      r = RecallAgainstExact(*target, pool, **exact, FLAGS_recall_queries, &id_recall);
    }
    if (r.ok()) {
      std::cerr << absl::StrFormat("  recall@%d vs exact: %.4f (ids: %.4f; %d queries)\n",
                                   FLAGS_k, *r, id_recall, FLAGS_recall_queries);
      absl::StrAppend(&json, absl::StrFormat(", \"recall_at_k\": %.4f, \"id_recall_at_k\": %.4f",
                                             *r, id_recall));
    } else {
      std::cerr << "  recall check skipped: " << r.status().message() << "\n";
    }
  }
  json += "}";
  std::cout << json << "\n";
  if (!FLAGS_json_out.empty()) std::ofstream(FLAGS_json_out) << json << "\n";
  return 0;
}
