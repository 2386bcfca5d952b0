// recall-bench: load generator for any server speaking recall.v1 over gRPC. See client/README.md
// ("recall-bench") and bench/serving.sh.
//
//   recall-bench --target=grpc --addr=127.0.0.1:50051 --requests_file=R --topk_file=T
//   recall-bench --target=stream --mode=closed --requests_file=R
//
// The requests and their exact top-K answers come from files that bench/bench-requests writes
// from a model version (client/bench_files.h); this binary needs nothing but the server's
// address. sweep: a closed-loop concurrency sweep (max sustainable QPS = the best point), then
// open-loop runs at --load_fractions of that maximum (latency p50/p95/p99/p999 and errors),
// then recall@k of the answers against the exact top-K file. Prints one JSON object (also to
// --json_out). The in-process ceiling (no network) is bench/recall-inprocess-bench.
#include <gflags/gflags.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "client/bench_files.h"
#include "client/bench_load.h"
#include "client/bench_run.h"
#include "recall/v1/recall.grpc.pb.h"

DEFINE_string(target, "grpc", "grpc (unary Recall) | stream (RecallStream)");
DEFINE_string(addr, "127.0.0.1:50051", "server address");
DEFINE_string(requests_file, "", "the request pool (bench-requests --requests_file; "
              "client/bench_files.h): cycled by every run");
DEFINE_string(topk_file, "", "the exact top-K answers of the pool's first requests "
              "(bench-requests --topk_file); empty = no recall check");
DEFINE_string(mode, "sweep", "sweep | closed | open | recall (only the check against exact)");
DEFINE_double(upsert_rate, 0, "open loop, grpc target: also write this many items per second "
              "while the open-loop runs last (UpsertItems of raw unit vectors and DeleteItems, "
              "see --upsert_replace_fraction, --delete_fraction); dim and model version from "
              "GetIndexInfo");
DEFINE_int32(upsert_batch, 50, "items per UpsertItems / DeleteItems call of --upsert_rate");
DEFINE_int32(upsert_writers, 4, "concurrent writer calls of --upsert_rate (open-loop pacing: a "
             "call waiting for the log's fsync does not delay the next)");
DEFINE_double(upsert_replace_fraction, 0.2, "--upsert_rate: share of upserted items that "
              "replace a served item's vector (an id from the request and top-K files); the "
              "others are new ids from --upsert_first_id on, replacing each other");
DEFINE_double(delete_fraction, 0.1, "--upsert_rate: share of write calls that are a "
              "DeleteItems of --upsert_batch ids previously written or served");
DEFINE_int64(upsert_first_id, -1, "--upsert_rate: first new item id (10,000 ids, cycled); "
             "-1 = one above the largest id in the files and above GetIndexInfo's num_items - 1 "
             "(right for a catalog numbered 0..n-1, as the synthetic data is)");
DEFINE_string(concurrency, "1,2,4,8,16,32,64", "closed loop: virtual users (a list for sweep)");
DEFINE_string(load_fractions, "0.25,0.5,0.75", "sweep: open-loop rates as fractions of max QPS");
DEFINE_double(rate, 1000, "open mode: requests per second");
DEFINE_double(duration_s, 10, "measured seconds per run");
DEFINE_double(warmup_s, 2, "unmeasured seconds before each run");
DEFINE_int32(channels, 4, "gRPC connections");
DEFINE_int32(deadline_ms, 5000, "per-call deadline");
DEFINE_int32(max_outstanding, 20000, "open loop: most requests in flight");
DEFINE_int32(recall_queries, 300, "requests whose answers are checked against the top-K file "
             "(at most as many as it holds; 0 = skip)");
DEFINE_string(json_out, "", "also write the JSON result here");

int main(int argc, char** argv) {
  gflags::SetUsageMessage(
      "recall-bench --target=grpc|stream --addr=HOST:PORT --requests_file=R [--topk_file=T] "
      "[flags]");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  if (FLAGS_target == "inprocess") {
    std::cerr << "error: the in-process target is bench/recall-inprocess-bench now\n";
    return 64;
  }
  if (FLAGS_target != "grpc" && FLAGS_target != "stream") {
    std::cerr << "error: --target must be grpc or stream\n";
    return 64;
  }
  if (FLAGS_requests_file.empty()) {
    std::cerr << "error: --requests_file is required (bench-requests writes it)\n";
    return 64;
  }
  auto inputs = recall::bench::ReadBenchInputs(FLAGS_requests_file, FLAGS_topk_file);
  if (!inputs.ok()) {
    std::cerr << "error: " << inputs.status().message() << "\n";
    return 64;
  }
  auto* pool = &inputs->pool;
  std::vector<recall::v1::RecallResponse>& exact = inputs->exact;

  // The served version and its size: GetIndexInfo (a server without it, such as the Python
  // peer, gets the top-K file's version and 0 items in the JSON).
  recall::bench::RunHeader header;
  header.target = FLAGS_target;
  header.addr = FLAGS_addr;
  if (!exact.empty()) header.model_version = exact[0].model_version();
  recall::v1::GetIndexInfoResponse info;
  {
    auto stub = recall::v1::RecallService::NewStub(
        grpc::CreateChannel(FLAGS_addr, grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(FLAGS_deadline_ms));
    grpc::Status s = stub->GetIndexInfo(&ctx, recall::v1::GetIndexInfoRequest(), &info);
    if (s.ok()) {
      if (!exact.empty() && exact[0].model_version() != info.model_version()) {
        std::cerr << "warning: the server serves version " << info.model_version()
                  << ", the top-K file is of version " << exact[0].model_version() << "\n";
      }
      header.model_version = info.model_version();
      header.items = info.num_items();
    } else if (FLAGS_upsert_rate > 0 && FLAGS_target == "grpc") {
      std::cerr << "error: --upsert_rate needs GetIndexInfo (dim, model version): "
                << s.error_message() << "\n";
      return 1;
    } else {
      std::cerr << "recall-bench: GetIndexInfo failed (" << s.error_message()
                << "); model_version from the top-K file\n";
    }
  }

  auto target = recall::bench::MakeUnaryTarget(FLAGS_addr, FLAGS_channels, FLAGS_deadline_ms);
  recall::bench::RunOptions o;
  o.tool = "recall-bench";
  o.mode = FLAGS_mode;
  o.concurrency = recall::bench::ParsePositiveInts(FLAGS_concurrency);
  o.load_fractions = recall::bench::ParsePositiveDoubles(FLAGS_load_fractions);
  o.rate = FLAGS_rate;
  o.duration_s = FLAGS_duration_s;
  o.warmup_s = FLAGS_warmup_s;
  o.max_outstanding = FLAGS_max_outstanding;
  o.recall_queries = FLAGS_recall_queries;
  o.stream = FLAGS_target == "stream";
  o.stream_addr = FLAGS_addr;
  o.stream_channels = FLAGS_channels;
  if (FLAGS_upsert_rate > 0 && FLAGS_target == "grpc") {
    recall::bench::WriteMix mix;
    mix.items_per_sec = FLAGS_upsert_rate;
    mix.batch = FLAGS_upsert_batch;
    mix.writers = FLAGS_upsert_writers;
    mix.dim = info.dim();
    mix.model_version = info.model_version();
    mix.replace_fraction = FLAGS_upsert_replace_fraction;
    mix.delete_fraction = FLAGS_delete_fraction;
    mix.deadline_ms = FLAGS_deadline_ms;
    // Served items the files name: the requests' histories and the exact answers.
    int64_t largest = info.num_items() - 1;
    for (const auto& r : *pool) {
      for (int64_t id : r.user().history_item_ids()) {
        mix.served_ids.push_back(id);
        largest = std::max(largest, id);
      }
    }
    for (const auto& e : exact) {
      for (const auto& item : e.items()) {
        mix.served_ids.push_back(item.item_id());
        largest = std::max(largest, item.item_id());
      }
    }
    std::sort(mix.served_ids.begin(), mix.served_ids.end());
    mix.served_ids.erase(std::unique(mix.served_ids.begin(), mix.served_ids.end()),
                         mix.served_ids.end());
    mix.first_new_id = FLAGS_upsert_first_id >= 0 ? FLAGS_upsert_first_id : largest + 1;
    o.start_writes = [mix, addr = FLAGS_addr] {
      return std::make_unique<recall::bench::UpsertLoad>(addr, mix);
    };
  }
  auto json = recall::bench::RunBench(o, header, *target, *pool, exact.empty() ? nullptr : &exact);
  if (!json.ok()) {
    std::cerr << "error: " << json.status().message() << "\n";
    return 64;
  }
  std::cout << *json << "\n";
  if (!FLAGS_json_out.empty()) std::ofstream(FLAGS_json_out) << *json << "\n";
  return 0;
}
