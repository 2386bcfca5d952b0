// recall-inprocess-bench: the in-process ceiling of recall-server: the same RecallEngine, through
// the same batcher (or without it), no network. Reads the request and exact top-K files that
// bench-requests writes and runs the closed/open loops of client/bench_run.h, so its JSON reads
// the same as recall-bench's ("target": "inprocess", "addr": "").
//
//   recall-inprocess-bench --model_base=DIR --requests_file=R --topk_file=T [--mode=sweep]
//   recall-inprocess-bench --model_base=DIR --requests_file=R --topk_file=T --mode=recall
//       --ef_search=64
#include <ATen/Parallel.h>
#include <gflags/gflags.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "client/bench_files.h"
#include "client/bench_load.h"
#include "client/bench_run.h"
#include "model/mutex_mode.h"
#include "model/openmp_env.h"
#include "server/cpu_policy.h"
#include "server/recall_batcher.h"
#include "server/recall_engine.h"
#include "server/usable_cpus.h"
#include "server/version_manager.h"

DEFINE_string(model_base, "", "the model base whose version answers");
DEFINE_int64(model_version, 0, "the version served (0 = the newest valid one)");
DEFINE_string(requests_file, "", "the request pool (bench-requests --requests_file)");
DEFINE_string(topk_file, "", "the exact top-K answers (bench-requests --topk_file); empty = no "
              "recall check");
DEFINE_string(mode, "sweep", "sweep | closed | open | recall (only the check against exact)");
DEFINE_string(concurrency, "1,2,4,8,16,32,64", "closed loop: virtual users (a list for sweep)");
DEFINE_string(load_fractions, "0.25,0.5,0.75", "sweep: open-loop rates as fractions of max QPS");
DEFINE_double(rate, 1000, "open mode: requests per second");
DEFINE_double(duration_s, 10, "measured seconds per run");
DEFINE_double(warmup_s, 2, "unmeasured seconds before each run");
DEFINE_int32(max_outstanding, 20000, "open loop: most requests in flight");
DEFINE_int32(recall_queries, 300, "requests whose answers are checked against the top-K file "
             "(at most as many as it holds; 0 = skip)");
DEFINE_string(json_out, "", "also write the JSON result here");
DEFINE_bool(batching, true, "use the batcher (as recall-server does by default)");
DEFINE_int32(batch_max_size, 32, "as recall-server");
DEFINE_int32(batch_max_wait_us, 0, "as recall-server");
DEFINE_int32(batch_workers, 0, "as recall-server (0 = one per core of this process)");
DEFINE_int32(torch_threads, 1, "as recall-server");
DEFINE_string(cpu_sched, recall::server::kDefaultCpuPolicy,
              "as recall-server (normal | batch | auto)");
DEFINE_int32(ef_search, 0, "HNSW efSearch (0 = the index's default)");

namespace {

grpc::Status ToGrpc(const absl::Status& s) {
  return s.ok() ? grpc::Status::OK
                : grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

}  // namespace

int main(int argc, char** argv) {
  using recall::v1::RecallRequest;
  using recall::v1::RecallResponse;
  recall::EnsurePassiveOpenMpWait(argv);
  recall::SetReleaseMutexMode();
  gflags::SetUsageMessage(
      "recall-inprocess-bench --model_base=DIR --requests_file=R [--topk_file=T] [flags]");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  if (FLAGS_model_base.empty() || FLAGS_requests_file.empty()) {
    std::cerr << "error: --model_base and --requests_file are required\n";
    return 64;
  }
  auto inputs = recall::bench::ReadBenchInputs(FLAGS_requests_file, FLAGS_topk_file);
  if (!inputs.ok()) {
    std::cerr << "error: " << inputs.status().message() << "\n";
    return 64;
  }
  auto* pool = &inputs->pool;
  std::vector<RecallResponse>& exact = inputs->exact;
  recall::server::VersionManager versions({FLAGS_model_base, FLAGS_ef_search, 0});
  absl::Status loaded = FLAGS_model_version > 0 ? versions.SetServingVersion(FLAGS_model_version)
                                                : versions.LoadNewest();
  if (!loaded.ok()) {
    std::cerr << "error: " << loaded.message() << "\n";
    return 1;
  }
  std::shared_ptr<recall::server::Servable> servable = versions.Current();
  if (!exact.empty() && exact[0].model_version() != servable->version()) {
    std::cerr << "warning: serving version " << servable->version()
              << ", the top-K file is of version " << exact[0].model_version() << "\n";
  }

  const absl::StatusOr<std::string> cpu_sched =
      recall::server::SetProcessCpuPolicy(FLAGS_cpu_sched);
  if (!cpu_sched.ok()) {
    std::cerr << "error: --cpu_sched: " << cpu_sched.status().message() << "\n";
    return 64;
  }
  at::set_num_threads(std::max(1, FLAGS_torch_threads));
  recall::server::EngineLimits limits;
  for (const auto& r : *pool) limits.max_k = std::max(limits.max_k, r.k());
  recall::server::RecallEngine engine(&versions, limits);
  std::unique_ptr<recall::server::RecallBatcher> batcher;
  std::unique_ptr<recall::bench::Target> target;
  if (FLAGS_batching) {
    recall::server::RecallBatcher::Options bo;
    bo.max_batch_size = FLAGS_batch_max_size;
    bo.max_wait_us = FLAGS_batch_max_wait_us;
    bo.num_workers = FLAGS_batch_workers > 0 ? FLAGS_batch_workers : recall::server::UsableCpus();
    batcher = std::make_unique<recall::server::RecallBatcher>(&engine, bo);
    target = recall::bench::MakeFunctionTarget(
        "inprocess-batched",
        [b = batcher.get()](const RecallRequest* req, RecallResponse* resp,
                            std::function<void(const grpc::Status&)> done) {
          b->Submit(req, resp, [done = std::move(done)](const absl::Status& s,
                                                         const recall::server::RecallTimings&,
                                                         int) { done(ToGrpc(s)); });
        });
  } else {
    target = recall::bench::MakeFunctionTarget(
        "inprocess", [e = &engine](const RecallRequest* req, RecallResponse* resp,
                                   std::function<void(const grpc::Status&)> done) {
          done(ToGrpc(e->Recall(*req, resp)));
        });
  }

  recall::bench::RunOptions o;
  o.tool = "recall-inprocess-bench";
  o.mode = FLAGS_mode;
  o.concurrency = recall::bench::ParsePositiveInts(FLAGS_concurrency);
  o.load_fractions = recall::bench::ParsePositiveDoubles(FLAGS_load_fractions);
  o.rate = FLAGS_rate;
  o.duration_s = FLAGS_duration_s;
  o.warmup_s = FLAGS_warmup_s;
  o.max_outstanding = FLAGS_max_outstanding;
  o.recall_queries = FLAGS_recall_queries;
  recall::bench::RunHeader header;
  header.target = "inprocess";
  header.model_version = servable->version();
  header.items = servable->index->size();
  auto json = recall::bench::RunBench(o, header, *target, *pool, exact.empty() ? nullptr : &exact);
  if (!json.ok()) {
    std::cerr << "error: " << json.status().message() << "\n";
    return 64;
  }
  std::cout << *json << "\n";
  if (!FLAGS_json_out.empty()) std::ofstream(FLAGS_json_out) << *json << "\n";
  return 0;
}
