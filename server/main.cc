// recall-server: serves Recall over gRPC from the newest valid model version in --model_base.
#include <gflags/gflags.h>
#include <glog/logging.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <omp.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "model/openmp_env.h"
#include "model/whole_file.h"
#include "absl/time/time.h"
#include "server/grpc_services.h"
#include "server/metrics.h"
#include "server/online_writes.h"
#include "server/recall_engine.h"
#include "server/retrain_jobs.h"
#include "server/usable_cpus.h"
#include "server/version_manager.h"

DEFINE_string(model_base, "", "directory of model versions <model_base>/<version>/ (required)");
DEFINE_string(host, "127.0.0.1", "gRPC listen address");
DEFINE_int32(port, 50051, "gRPC port (0 = pick a free one; see --port_file)");
DEFINE_string(metrics_host, "127.0.0.1", "metrics HTTP listen address");
DEFINE_int32(metrics_port, 9464, "Prometheus /metrics port (0 = pick a free one; -1 = off)");
DEFINE_string(port_file, "", "write 'grpc_port metrics_port' here once listening");
DEFINE_int32(poll_interval_s, 10, "seconds between checks of --model_base for a newer version (0 = off)");
DEFINE_int32(torch_threads, 1, "LibTorch intra-op threads per forward (requests run in parallel)");
DEFINE_int32(faiss_threads, 1, "OpenMP threads for FAISS batch searches");
DEFINE_int32(grpc_threads, 0, "max gRPC server threads (0 = gRPC default)");
DEFINE_bool(batching, true, "coalesce concurrent Recall requests into one tower forward and one "
            "index search (false: each request runs alone on its gRPC thread)");
DEFINE_int32(batch_max_size, 32, "most requests in one batch");
DEFINE_int32(batch_max_wait_us, 0, "longest a queued request waits for its batch to fill "
             "(microseconds, counted from its arrival; 0 = never wait: a batch is what queued "
             "while the workers were busy)");
DEFINE_int32(batch_workers, 0, "threads that run batches (0 = one per CPU this process may use)");
DEFINE_int32(max_queued_requests, 0, "overload bound: most Recall requests waiting for a batch "
             "worker; beyond it a request is refused RESOURCE_EXHAUSTED at once (0 = one full "
             "batch per worker, --batch_max_size x workers)");
DEFINE_int32(max_in_flight_recalls, 0, "overload bound without --batching: most Recall requests "
             "handled at once (0 = 4 per core)");
DEFINE_int32(max_in_flight_writes, 64, "overload bound: most UpsertItems/DeleteItems calls "
             "handled at once (0 = no bound)");
DEFINE_int32(max_k, 1000, "largest k a Recall may ask for");
DEFINE_int32(max_history, 1000, "longest history a Recall may carry");
DEFINE_int32(ef_search, 0, "HNSW efSearch (0 = the index's default)");
DEFINE_int32(shutdown_grace_s, 10, "seconds in-flight calls get to finish on SIGTERM");
DEFINE_int32(keep_versions, 5, "newest model versions kept on disk after a swap (0 = keep all)");
DEFINE_string(wal_path, "", "write-ahead log of online upserts/deletes (default: "
              "<model_base>/online_writes.wal)");
DEFINE_string(wal_sync, "always", "always: fdatasync each group commit before acknowledging "
              "(survives power loss) | none: write() only (survives a process crash)");
DEFINE_uint64(wal_compact_bytes, 64ull << 20, "fold the log into a snapshot once it is larger "
              "than this and twice its last compacted size (0 = only at start-up)");
DEFINE_string(retrain_command, "", "argv prefix of a retrain job, split on spaces, no shell "
              "(default: recall-train beside this binary). The server appends --dataset, "
              "--model_base (a staging dir), --publish_version, --progress=json and overrides");
DEFINE_double(retrain_gate_margin, 0.05, "refuse to promote a retrained version whose Recall "
              "is more than this fraction below the serving version's");
DEFINE_string(retrain_gate_metric, "recall@20", "metric the quality gate compares (validation "
              "figure when both versions have one)");

DEFINE_string(admin_token_file, "", "file holding the bearer token the admin RPCs require "
              "(UpsertItems, DeleteItems, TriggerRetrain, CancelRetrain, SetServingVersion, "
              "ReloadVersions); empty = admin RPCs open (loopback development only)");
DEFINE_string(recall_token_file, "", "file holding a bearer token Recall and the read-only RPCs "
              "require (the admin token is accepted too); empty = open");

DEFINE_string(tls_cert_file, "", "PEM server certificate chain: serve gRPC over TLS (with "
              "--tls_key_file); empty = plaintext");
DEFINE_string(tls_key_file, "", "PEM private key of --tls_cert_file");
DEFINE_string(tls_client_ca_file, "", "PEM CA bundle: require and verify a client certificate "
              "signed by it (mutual TLS); needs --tls_cert_file");

namespace {

// The gRPC port's credentials from the --tls_* flags; an error names the flag at fault.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentialsFromFlags() {
  if (FLAGS_tls_cert_file.empty() && FLAGS_tls_key_file.empty()) {
    if (!FLAGS_tls_client_ca_file.empty()) {
      return absl::InvalidArgumentError("--tls_client_ca_file needs --tls_cert_file and --tls_key_file");
    }
    return grpc::InsecureServerCredentials();
  }
  if (FLAGS_tls_cert_file.empty() || FLAGS_tls_key_file.empty()) {
    return absl::InvalidArgumentError("--tls_cert_file and --tls_key_file go together");
  }
  auto read = [](const std::string& flag, const std::string& path) -> absl::StatusOr<std::string> {
    absl::StatusOr<std::string> text = recall::ReadWholeFile(path);
    if (!text.ok()) return absl::InvalidArgumentError(absl::StrCat(flag, ": ", text.status().message()));
    if (text->empty()) return absl::InvalidArgumentError(absl::StrCat(flag, ": ", path, " is empty"));
    return text;
  };
  auto cert = read("--tls_cert_file", FLAGS_tls_cert_file);
  if (!cert.ok()) return cert.status();
  auto key = read("--tls_key_file", FLAGS_tls_key_file);
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions opts;
  opts.pem_key_cert_pairs.push_back({*key, *cert});
  if (!FLAGS_tls_client_ca_file.empty()) {
    auto ca = read("--tls_client_ca_file", FLAGS_tls_client_ca_file);
    if (!ca.ok()) return ca.status();
    opts.pem_root_certs = *ca;
    opts.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(opts);
}

// recall-train beside this binary: installed side by side, or the build tree's trainer/.
std::string DefaultTrainerPath(const char* argv0) {
  std::error_code ec;
  std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) self = argv0;
  const auto dir = self.parent_path();
  for (const auto& p : {dir / "recall-train", dir / ".." / "trainer" / "recall-train"}) {
    if (std::filesystem::exists(p)) return std::filesystem::weakly_canonical(p).string();
  }
  return "recall-train";
}

}  // namespace

int main(int argc, char** argv) {
  recall::EnsurePassiveOpenMpWait(argv);
  gflags::SetUsageMessage("recall-server --model_base=DIR [flags]");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  if (FLAGS_model_base.empty()) {
    std::cerr << "error: --model_base is required\n";
    return 64;
  }
  // Block SIGTERM/SIGINT before any thread starts so only the waiter below receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  torch::set_num_threads(std::max(1, FLAGS_torch_threads));
  omp_set_num_threads(std::max(1, FLAGS_faiss_threads));

  recall::server::Metrics metrics;
  int metrics_port = -1;
  if (FLAGS_metrics_port >= 0) {
    auto p = metrics.Serve(FLAGS_metrics_host, FLAGS_metrics_port);
    if (!p.ok()) {
      LOG(ERROR) << p.status().message();
      return 1;
    }
    metrics_port = *p;
  }

  auto sync = recall::server::ParseWalSyncPolicy(FLAGS_wal_sync);
  if (!sync.ok()) {
    std::cerr << "error: --wal_sync: " << sync.status().message() << "\n";
    return 64;
  }
  recall::server::OnlineWrites::Options wo;
  wo.wal_path = FLAGS_wal_path.empty() ? FLAGS_model_base + "/online_writes.wal" : FLAGS_wal_path;
  wo.sync = *sync;
  wo.compact_bytes = FLAGS_wal_compact_bytes;
  wo.on_commit = [&metrics](uint64_t bytes, double sec) { metrics.ObserveWalCommit(bytes, sec); };
  wo.on_error = [&metrics](const absl::Status&) { metrics.AddWalWriteError(); };
  recall::server::WalRecoveryInfo recovery;
  auto writes = recall::server::OnlineWrites::Open(wo, &recovery);
  if (!writes.ok()) {
    LOG(ERROR) << "write-ahead log: " << writes.status().message();
    return 1;
  }
  LOG(INFO) << "write-ahead log " << wo.wal_path << ": replayed " << recovery.records
            << " records (" << (*writes)->tracked_items() << " items written online)"
            << (recovery.dropped_bytes ? absl::StrCat("; dropped a torn/corrupt tail of ",
                                                      recovery.dropped_bytes, " bytes: ",
                                                      recovery.drop_reason)
                                       : std::string());

  recall::server::VersionManager versions(
      {FLAGS_model_base, FLAGS_ef_search, std::max(0, FLAGS_keep_versions)});
  std::unique_ptr<grpc::Server> server;
  versions.set_installer([w = writes->get()](recall::server::Servable& c,
                                             const std::function<void()>& swap) {
    return w->Install(c, swap);
  });
  versions.set_on_load([&metrics](bool ok, double sec) { metrics.ObserveVersionLoad(ok, sec); });
  versions.set_on_swap([&](const recall::server::Servable& s) {
    metrics.SetServingVersion(s.version(), s.model->manifest().index_factory(), s.index->size(),
                              s.index->num_hidden());
    if (server) server->GetHealthCheckService()->SetServingStatus(true);
  });
  if (auto s = versions.LoadNewest(); !s.ok()) {
    LOG(WARNING) << s.message() << "; starting NOT_SERVING until a valid version appears";
  }

  recall::server::EngineLimits limits;
  limits.max_k = FLAGS_max_k;
  limits.max_history = FLAGS_max_history;
  auto auth = recall::server::CallAuthorizer::FromFiles(FLAGS_admin_token_file,
                                                        FLAGS_recall_token_file);
  if (!auth.ok()) {
    std::cerr << "error: " << auth.status().message() << "\n";
    return 64;
  }
  if (auth->admin_open()) {
    LOG(WARNING) << "no --admin_token_file: write and admin RPCs accept any caller";
  }
  recall::server::RecallEngine engine(&versions, limits, writes->get());
  std::unique_ptr<recall::server::RecallBatcher> batcher;
  if (FLAGS_batching) {
    recall::server::RecallBatcher::Options bo;
    bo.max_batch_size = std::max(1, FLAGS_batch_max_size);
    bo.max_wait_us = std::max(0, FLAGS_batch_max_wait_us);
    bo.num_workers = FLAGS_batch_workers > 0
                         ? FLAGS_batch_workers
                         : recall::server::UsableCpus();
    bo.max_queued = FLAGS_max_queued_requests > 0 ? FLAGS_max_queued_requests
                                                  : bo.max_batch_size * bo.num_workers;
    bo.on_batch = [&metrics](int n, const recall::server::RecallTimings& t) {
      metrics.ObserveBatch(n);
      metrics.ObserveStages(t.encode_sec, t.tower_sec, t.search_sec);
    };
    batcher = std::make_unique<recall::server::RecallBatcher>(&engine, bo);
    batcher->set_on_shed([&metrics](recall::server::RecallBatcher::Shed why) {
      metrics.AddShed(why == recall::server::RecallBatcher::Shed::kDeadline ? "deadline"
                                                                             : "queue_full");
    });
  }
  recall::server::ServiceLimits service_limits;
  service_limits.max_in_flight_recalls =
      FLAGS_max_in_flight_recalls > 0
          ? FLAGS_max_in_flight_recalls
          : 4 * recall::server::UsableCpus();
  service_limits.max_in_flight_writes = std::max(0, FLAGS_max_in_flight_writes);
  // The server is shut down (every call answered) before the batcher and the engine go away.
  recall::server::RecallServiceImpl recall_service(&engine, &metrics, batcher.get(), &*auth,
                                                    service_limits);

  recall::server::RetrainJobs::Options ro;
  ro.command = absl::StrSplit(FLAGS_retrain_command, ' ', absl::SkipEmpty());
  if (ro.command.empty()) ro.command = {DefaultTrainerPath(argv[0])};
  ro.model_base = FLAGS_model_base;
  ro.gate_margin = FLAGS_retrain_gate_margin;
  ro.gate_metric = FLAGS_retrain_gate_metric;
  ro.on_finish = [&metrics](const std::string& r) { metrics.ObserveRetrainFinished(r); };
  ro.on_running = [&metrics](bool running) { metrics.SetRetrainRunning(running); };
  recall::server::RetrainJobs jobs(ro, &versions);
  recall::server::TrainingServiceImpl training_service(&versions, &jobs, &metrics, &*auth);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  auto credentials = ServerCredentialsFromFlags();
  if (!credentials.ok()) {
    std::cerr << "error: " << credentials.status().message() << "\n";
    return 64;
  }
  grpc::ServerBuilder builder;
  int grpc_port = 0;
  builder.AddListeningPort(absl::StrCat(FLAGS_host, ":", FLAGS_port), *credentials, &grpc_port);
  builder.RegisterService(&recall_service);
  builder.RegisterService(&training_service);
  if (FLAGS_grpc_threads > 0) {
    grpc::ResourceQuota quota("recall-server");
    quota.SetMaxThreads(FLAGS_grpc_threads);
    builder.SetResourceQuota(quota);
  }
  server = builder.BuildAndStart();
  if (!server || grpc_port == 0) {
    LOG(ERROR) << "cannot listen on " << FLAGS_host << ":" << FLAGS_port;
    return 1;
  }
  server->GetHealthCheckService()->SetServingStatus(versions.Current() != nullptr);
  if (FLAGS_poll_interval_s > 0) versions.StartPolling(absl::Seconds(FLAGS_poll_interval_s));

  LOG(INFO) << "recall-server listening on " << FLAGS_host << ":" << grpc_port
            << ", metrics on http://" << FLAGS_metrics_host << ":" << metrics_port << "/metrics";
  if (!FLAGS_port_file.empty()) {
    const std::string tmp = FLAGS_port_file + ".tmp";
    std::ofstream(tmp) << grpc_port << " " << metrics_port << "\n";
    std::rename(tmp.c_str(), FLAGS_port_file.c_str());
  }

  int sig = 0;
  sigwait(&signals, &sig);
  LOG(INFO) << "signal " << sig << ": refusing new calls, draining "
            << metrics.in_flight().Value() << " in-flight calls (up to " << FLAGS_shutdown_grace_s
            << "s)";
  server->GetHealthCheckService()->SetServingStatus(false);
  server->Shutdown(std::chrono::system_clock::now() +
                   std::chrono::seconds(FLAGS_shutdown_grace_s));
  versions.Stop();
  server->Wait();
  // Every accepted call has been answered by now (a handler finishes its call before it leaves
  // the in-flight count); tests/server/fault_test.cc checks this line.
  LOG(INFO) << "recall-server stopped; calls left unanswered: " << metrics.in_flight().Value()
            << "; calls answered: " << metrics.RequestCounts();
  return 0;
}
