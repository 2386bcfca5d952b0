// recall-server: serves Recall over gRPC from the newest valid model version in --model_base.
#include <ATen/Parallel.h>
#include <gflags/gflags.h>
#include <glog/logging.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <omp.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "model/mutex_mode.h"
#include "model/openmp_env.h"
#include "model/whole_file.h"
#include "absl/time/time.h"
#include "server/cpu_policy.h"
#include "server/grpc_services.h"
#include "server/health_service.h"
#include "server/malloc_control.h"
#include "server/metrics.h"
#include "server/jetstream_control.h"
#include "server/jetstream_write_log.h"
#include "server/local_write_log.h"
#include "server/nats_connection.h"
#include "server/online_writes.h"
#include "server/replica_set.h"
#include "server/wal_import.h"
#include "server/recall_engine.h"
#include "server/recall_probe.h"
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
DEFINE_int32(grpc_threads, 0, "threads that poll gRPC's completion queues and run the handlers, "
             "each with a queue of its own (0 = one per usable CPU)");
DEFINE_bool(batching, true, "coalesce concurrent Recall requests into one tower forward and one "
            "index search (false: each request runs alone on its gRPC thread)");
DEFINE_int32(batch_max_size, 32, "most requests in one batch");
DEFINE_int32(batch_max_wait_us, 0, "longest a queued request waits for its batch to fill "
             "(microseconds, counted from its arrival; 0 = never wait: a batch is what queued "
             "while the workers were busy)");
DEFINE_int32(batch_workers, 0, "threads that run batches (0 = one per CPU this process may use)");
DEFINE_bool(batch_on_queue_threads, false, "run a lone Recall on the gRPC queue thread that read "
            "it when no batch worker is busy, instead of waking a worker (with "
            "--batch_max_wait_us=0 only). Off: under a flood the polling thread, busy with a "
            "Recall, answers refusals late (README \"Request batching\")");
DEFINE_int32(max_queued_requests, 0, "overload bound: most Recall requests waiting for a batch "
             "worker; beyond it a request is refused RESOURCE_EXHAUSTED at once (0 = one full "
             "batch per worker, --batch_max_size x workers)");
DEFINE_int32(max_in_flight_recalls, 0, "overload bound without --batching: most Recall requests "
             "handled at once (0 = 4 per core)");
DEFINE_int32(max_in_flight_writes, 64, "overload bound: most UpsertItems/DeleteItems calls "
             "handled at once (0 = no bound)");
DEFINE_int32(max_k, 1000, "largest k a Recall may ask for");
DEFINE_int32(max_history, 1000, "longest history a Recall may carry");
DEFINE_string(index_params, "", "search parameters set on every loaded index over the "
              "manifest's (the tuner's pick), e.g. \"nprobe=64,k_factor=2\": efSearch (HNSW "
              "kinds), nprobe (IVF kinds), k_factor (\",RFlat\" kinds); one the loaded kind "
              "does not have is skipped with a warning (empty = the manifest's)");
DEFINE_int32(ef_search, 0, "deprecated alias of --index_params=efSearch=N (0 = none)");
DEFINE_int32(recall_probe_interval_s, 60, "seconds between live recall probes: a sample of "
             "recent Recall queries re-run against exact search over the serving index's live "
             "items (recall_index_probe_recall; 0 = off)");
DEFINE_int32(recall_probe_queries, 64, "Recall queries the live recall probe samples per "
             "interval");
DEFINE_int32(malloc_thread_cache_mb, 4, "cap on the free memory all threads' allocator caches "
             "hold together (MiB; tcmalloc's default is 32; 0 = keep it): serving threads are "
             "few, and the default let RSS grow 13 MiB under load (server/malloc_control.h)");
DEFINE_string(cpu_sched, recall::server::kDefaultCpuPolicy, "scheduling policy of the server's "
              "threads: normal | batch (SCHED_BATCH: a waking gRPC thread does not preempt a "
              "running search; for a server on cores of its own) | auto (batch when the CPU "
              "affinity leaves out some online CPUs, else normal; server/cpu_policy.h)");
DEFINE_int32(shutdown_grace_s, 10, "seconds in-flight calls get to finish on SIGTERM");
DEFINE_int32(keep_versions, 5, "newest model versions kept on disk after a swap (0 = keep all)");
DEFINE_string(write_log, "", "the log of online upserts/deletes: empty = this process's local "
              "write-ahead log (--wal_path); nats://host:port[,nats://host:port...] = a NATS "
              "JetStream stream shared by a replica set (server/REPLICATION.md)");
DEFINE_string(wal_path, "", "local write-ahead log of online upserts/deletes (default: "
              "<model_base>/online_writes.wal)");
DEFINE_string(wal_sync, "always", "local log: always = fdatasync each group commit before "
              "acknowledging (survives power loss) | none = write() only (survives a process "
              "crash)");
DEFINE_uint64(wal_compact_bytes, 0, "replaced by --snapshot_every_writes (refused when set)");
DEFINE_uint64(snapshot_every_writes, 100000, "checkpoint the folded online writes whenever the "
              "applied write sequence reaches a multiple of this (0 = never; the local log also "
              "checkpoints at start-up); the log then drops what the kept checkpoints cover");
DEFINE_int32(keep_snapshots, 2, "checkpoints of the online writes kept; the log keeps every "
             "write after the oldest");
DEFINE_string(snapshot_dir, "", "where checkpoints of the online writes go (default: "
              "<wal_path>.snapshots for the local log; <model_base>/write_snapshots/<stream> for "
              "a stream, shared by the replica set)");
DEFINE_int32(write_dedup_window_s, 120, "a write retried with the same request_id within this "
             "many seconds is logged once (JetStream's duplicate window for a stream)");
DEFINE_string(import_wal, "", "with a nats:// --write_log: before serving, publish the online "
              "writes of this local write-ahead log (and its <path>.snapshots checkpoints) into "
              "the stream, which must be empty (server/REPLICATION.md)");
DEFINE_string(write_stream, "RECALL_WRITES", "JetStream stream of the online writes");
DEFINE_int32(write_stream_replicas, 1, "copies of the stream JetStream keeps (R; 3 for a "
             "3-node NATS cluster: a write is acknowledged once a quorum stored it)");
DEFINE_int64(write_stream_max_bytes, int64_t{1} << 30, "most bytes the stream holds; when full "
             "it refuses new writes (RESOURCE_EXHAUSTED, discard=new) until a checkpoint purges "
             "it (-1 = no limit)");
DEFINE_int64(write_stream_max_writes, -1, "most writes the stream holds, likewise (-1 = no "
             "limit)");
DEFINE_string(control_bucket, "recall_control", "JetStream KV bucket of the cluster-wide pin "
              "(and <bucket>_replicas: the replica registry); with a nats:// --write_log");
DEFINE_string(replica_id, "", "this replica's name in the registry (default: host name and "
              "gRPC port)");
DEFINE_string(nats_creds_file, "", "NATS credentials file (JWT and NKey seed)");
DEFINE_string(nats_user, "", "NATS user (with --nats_password_file)");
DEFINE_string(nats_password_file, "", "file holding the NATS user's password");
DEFINE_string(nats_token_file, "", "file holding a NATS token");
DEFINE_string(nats_tls_ca_file, "", "PEM CA bundle: speak TLS to NATS and verify it");
DEFINE_string(nats_tls_cert_file, "", "PEM client certificate for mutual TLS to NATS (with "
              "--nats_tls_key_file)");
DEFINE_string(nats_tls_key_file, "", "PEM private key of --nats_tls_cert_file");
DEFINE_int32(max_sequence_wait_ms, 5000, "longest a Recall with min_write_sequence waits for "
             "this replica to apply it when the call's own deadline is later or absent");
DEFINE_int32(max_write_wait_ms, 30000, "longest an UpsertItems/DeleteItems waits to be logged "
             "and applied when the call's own deadline is later or absent");
DEFINE_int32(startup_catch_up_s, 120, "at start, how long to apply the log's backlog before "
             "turning SERVING (then serving anyway, and catching up while it serves)");
DEFINE_string(retrain_command, "", "argv prefix of a retrain job, split on spaces, no shell "
              "(default: recall-train beside this binary). The server appends --dataset, "
              "--model_base (a staging dir), --publish_version, --progress=json, --preset and --overrides");
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

// The first line of a secret file (no trailing newline); an error names the flag.
absl::StatusOr<std::string> ReadSecret(const std::string& flag, const std::string& path) {
  if (path.empty()) return std::string();
  absl::StatusOr<std::string> text = recall::ReadWholeFile(path);
  if (!text.ok()) return absl::InvalidArgumentError(absl::StrCat(flag, ": ", text.status().message()));
  std::string line = text->substr(0, text->find('\n'));
  if (line.empty()) return absl::InvalidArgumentError(absl::StrCat(flag, ": ", path, " is empty"));
  return line;
}

// The NATS connection options from the --nats_* flags.
absl::StatusOr<recall::server::NatsConnection::Options> NatsOptionsFromFlags(
    const std::string& name) {
  recall::server::NatsConnection::Options o;
  auto servers = recall::server::ParseNatsServers(FLAGS_write_log);
  if (!servers.ok()) return servers.status();
  o.servers = *std::move(servers);
  o.name = name;
  o.creds_file = FLAGS_nats_creds_file;
  o.user = FLAGS_nats_user;
  auto password = ReadSecret("--nats_password_file", FLAGS_nats_password_file);
  if (!password.ok()) return password.status();
  o.password = *password;
  auto token = ReadSecret("--nats_token_file", FLAGS_nats_token_file);
  if (!token.ok()) return token.status();
  o.token = *token;
  o.tls_ca_file = FLAGS_nats_tls_ca_file;
  o.tls_cert_file = FLAGS_nats_tls_cert_file;
  o.tls_key_file = FLAGS_nats_tls_key_file;
  if (o.tls_cert_file.empty() != o.tls_key_file.empty()) {
    return absl::InvalidArgumentError("--nats_tls_cert_file and --nats_tls_key_file go together");
  }
  return o;
}

std::string DefaultReplicaId() {
  char host[256] = {0};
  ::gethostname(host, sizeof(host) - 1);
  return absl::StrCat(host, "-", ::getpid());
}

}  // namespace

int main(int argc, char** argv) {
  recall::EnsurePassiveOpenMpWait(argv);
  recall::SetReleaseMutexMode();
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

  if (FLAGS_malloc_thread_cache_mb > 0) {
    recall::server::SetMallocThreadCacheLimit(static_cast<size_t>(FLAGS_malloc_thread_cache_mb)
                                              << 20);
  }
  const absl::StatusOr<std::string> cpu_sched =
      recall::server::SetProcessCpuPolicy(FLAGS_cpu_sched);
  if (!cpu_sched.ok()) {
    std::cerr << "error: --cpu_sched: " << cpu_sched.status().message() << "\n";
    return 64;
  }
  at::set_num_threads(std::max(1, FLAGS_torch_threads));
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

  if (!gflags::GetCommandLineFlagInfoOrDie("wal_compact_bytes").is_default) {
    std::cerr << "error: --wal_compact_bytes is gone: the online writes are checkpointed every "
                 "--snapshot_every_writes writes instead\n";
    return 64;
  }
  recall::server::EngineLimits limits;
  limits.max_k = FLAGS_max_k;
  limits.max_history = FLAGS_max_history;

  // The write log: this process's WAL, or a JetStream stream shared by a replica set.
  const bool replicated = !FLAGS_write_log.empty();
  const std::string replica_id = FLAGS_replica_id.empty() ? DefaultReplicaId() : FLAGS_replica_id;
  std::unique_ptr<recall::server::NatsConnection> nats;
  recall::server::OnlineWrites::Options wo;
  wo.snapshot_every = FLAGS_snapshot_every_writes;
  wo.keep_snapshots = static_cast<size_t>(std::max(1, FLAGS_keep_snapshots));
  wo.limits = limits;
  if (!replicated) {
    auto sync = recall::server::ParseWalSyncPolicy(FLAGS_wal_sync);
    if (!sync.ok()) {
      std::cerr << "error: --wal_sync: " << sync.status().message() << "\n";
      return 64;
    }
    recall::server::LocalWriteLog::Options lo;
    lo.path = FLAGS_wal_path.empty() ? FLAGS_model_base + "/online_writes.wal" : FLAGS_wal_path;
    lo.sync = *sync;
    lo.dedup_window = absl::Seconds(FLAGS_write_dedup_window_s);
    lo.on_commit = [&metrics](uint64_t bytes, double sec) { metrics.ObserveWalCommit(bytes, sec); };
    lo.on_error = [&metrics](const absl::Status&) { metrics.AddWalWriteError(); };
    recall::server::WalRecoveryInfo recovery;
    auto log = recall::server::LocalWriteLog::Open(lo, &recovery);
    if (!log.ok()) {
      LOG(ERROR) << "write-ahead log: " << log.status().message();
      return 1;
    }
    LOG(INFO) << "write-ahead log " << lo.path << ": " << recovery.records << " records"
              << (recovery.dropped_bytes ? absl::StrCat("; dropped a torn/corrupt tail of ",
                                                        recovery.dropped_bytes, " bytes: ",
                                                        recovery.drop_reason)
                                         : std::string());
    wo.log = *std::move(log);
    wo.snapshot_dir = FLAGS_snapshot_dir.empty() ? lo.path + ".snapshots" : FLAGS_snapshot_dir;
    wo.checkpoint_after_catch_up = true;
  } else {
    auto no = NatsOptionsFromFlags(replica_id);
    if (!no.ok()) {
      std::cerr << "error: " << no.status().message() << "\n";
      return 64;
    }
    auto conn = recall::server::NatsConnection::Connect(*no);
    if (!conn.ok()) {
      std::cerr << "error: " << conn.status().message() << "\n";
      return 64;
    }
    nats = *std::move(conn);
    // The pin and the stream's tail come from NATS: give the first connection a moment, so a
    // replica does not start on the newest version only to switch to the pinned one.
    if (!nats->WaitConnected(absl::Seconds(10))) {
      LOG(WARNING) << "NATS (" << nats->servers() << ") does not answer yet: serving without "
                   << "the cluster pin and the write log's tail until it does";
    }
    recall::server::JetStreamWriteLog::Options jo;
    jo.connection = nats.get();
    jo.stream = FLAGS_write_stream;
    jo.replicas = FLAGS_write_stream_replicas;
    jo.max_bytes = FLAGS_write_stream_max_bytes;
    jo.max_records = FLAGS_write_stream_max_writes;
    jo.dedup_window = absl::Seconds(FLAGS_write_dedup_window_s);
    auto log = recall::server::JetStreamWriteLog::Open(jo);
    if (!log.ok()) {
      std::cerr << "error: " << log.status().message() << "\n";
      return 64;
    }
    if (!FLAGS_import_wal.empty()) {
      auto imported = recall::server::ImportLocalWal(FLAGS_import_wal,
                                                     FLAGS_import_wal + ".snapshots", **log);
      if (!imported.ok()) {
        LOG(ERROR) << "--import_wal: " << imported.status().message();
        return 1;
      }
    }
    wo.log = *std::move(log);
    wo.snapshot_dir = FLAGS_snapshot_dir.empty()
                          ? FLAGS_model_base + "/write_snapshots/" + FLAGS_write_stream
                          : FLAGS_snapshot_dir;
  }
  const std::string log_name = wo.log->Describe();
  auto opened = recall::server::OnlineWrites::Open(std::move(wo), &metrics);
  if (!opened.ok()) {
    LOG(ERROR) << "online writes: " << opened.status().message();
    return 1;
  }
  std::unique_ptr<recall::server::OnlineWrites> writes = *std::move(opened);
  LOG(INFO) << "online writes: " << log_name << ", applied up to write sequence "
            << writes->applied_sequence() << " from checkpoints";

  recall::server::VersionManager::Options vo;
  vo.model_base = FLAGS_model_base;
  vo.keep_versions = std::max(0, FLAGS_keep_versions);
  {
    auto params = recall::server::ParseIndexParams(FLAGS_index_params);
    if (!params.ok()) {
      std::cerr << "error: --index_params: " << params.status().message() << "\n";
      return 64;
    }
    vo.index_params = *std::move(params);
    if (FLAGS_ef_search != 0) {
      LOG(WARNING) << "--ef_search is deprecated: use --index_params=efSearch="
                   << FLAGS_ef_search;
      vo.ef_search = FLAGS_ef_search;
    }
    auto resolved = recall::server::VersionManager::ResolvedIndexParams(vo);
    if (!resolved.ok()) {
      std::cerr << "error: --index_params / --ef_search: " << resolved.status().message()
                << "\n";
      return 64;
    }
    if (!resolved->empty()) {
      LOG(INFO) << "index search parameters over each version's: "
                << recall::server::FormatIndexParams(*resolved);
    }
  }
  if (FLAGS_recall_probe_interval_s < 0 || FLAGS_recall_probe_queries < 1) {
    std::cerr << "error: --recall_probe_interval_s must be >= 0 and --recall_probe_queries "
                 ">= 1\n";
    return 64;
  }
  recall::server::VersionManager versions(vo);
  recall::server::HealthService health;
  std::unique_ptr<grpc::Server> server;
  versions.set_installer([w = writes.get()](recall::server::Servable& c,
                                            const std::function<void()>& swap) {
    return w->Install(c, swap);
  });
  versions.set_on_load([&metrics](bool ok, double sec) { metrics.ObserveVersionLoad(ok, sec); });
  versions.set_on_swap([&](const recall::server::Servable& s) {
    metrics.SetServingVersion(s.version(), s.model->manifest().index_factory(), s.index->size(),
                              s.index->num_hidden());
    health.SetServing(true);
  });
  std::unique_ptr<recall::server::JetStreamControl> control;
  std::unique_ptr<recall::server::ReplicaSet> replica_set;
  absl::Status loaded;
  if (replicated) {
    recall::server::JetStreamControl::Options co;
    co.connection = nats.get();
    co.bucket = FLAGS_control_bucket;
    co.replicas = FLAGS_write_stream_replicas;
    control = std::make_unique<recall::server::JetStreamControl>(co);
    replica_set = std::make_unique<recall::server::ReplicaSet>(
        control.get(), &versions, writes.get(), &metrics,
        recall::server::ReplicaSet::Options{replica_id});
    versions.set_prune_guard([rs = replica_set.get()] { return rs->NeededVersions(); });
    loaded = replica_set->Start();
  } else {
    loaded = versions.LoadNewest();
  }
  if (!loaded.ok()) {
    LOG(WARNING) << loaded.message() << "; starting NOT_SERVING until a valid version appears";
  }
  writes->Start(&versions);
  // Whatever path leaves main from here, the pin watcher and the write applier stop before the
  // version manager they use goes away (locals are destroyed in reverse order).
  absl::Cleanup stop_appliers = [&] {
    replica_set.reset();
    writes->Stop();
  };
  if (absl::Status s = writes->CatchUp(absl::Seconds(std::max(0, FLAGS_startup_catch_up_s)));
      !s.ok()) {
    LOG(WARNING) << "online writes not caught up at start (" << s.message()
                 << "); serving, and applying the rest meanwhile";
  }
  LOG(INFO) << "online writes applied up to write sequence " << writes->applied_sequence()
            << " (" << writes->tracked_items() << " items written online)";

  auto auth = recall::server::CallAuthorizer::FromFiles(FLAGS_admin_token_file,
                                                        FLAGS_recall_token_file);
  if (!auth.ok()) {
    std::cerr << "error: " << auth.status().message() << "\n";
    return 64;
  }
  if (auth->admin_open()) {
    LOG(WARNING) << "no --admin_token_file: write and admin RPCs accept any caller";
  }
  recall::server::RecallEngine engine(&versions, limits, writes.get());
  // The live recall probe samples the engine's queries; its thread stops before the version
  // manager goes away (declared after it).
  std::unique_ptr<recall::server::RecallProbe> probe;
  if (FLAGS_recall_probe_interval_s > 0) {
    recall::server::RecallProbe::Options po;
    po.interval = absl::Seconds(FLAGS_recall_probe_interval_s);
    po.capacity = FLAGS_recall_probe_queries;
    probe = std::make_unique<recall::server::RecallProbe>(&versions, po);
    probe->set_on_probe([&metrics](const recall::server::RecallProbe::Result& r) {
      metrics.SetRecallProbe(r.recall, r.queries);
    });
    engine.set_recall_probe(probe.get());
  }
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
  service_limits.max_sequence_wait = absl::Milliseconds(std::max(0, FLAGS_max_sequence_wait_ms));
  service_limits.max_write_wait = absl::Milliseconds(std::max(1, FLAGS_max_write_wait_ms));
  service_limits.batch_on_queue_threads = FLAGS_batch_on_queue_threads;
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
  recall::server::TrainingServiceImpl training_service(&versions, &jobs, &metrics, &*auth,
                                                       replica_set.get());

  // grpc.health.v1 is served by `health`: gRPC's own is a callback service (async_calls.h).
  grpc::EnableDefaultHealthCheckService(false);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  auto credentials = ServerCredentialsFromFlags();
  if (!credentials.ok()) {
    std::cerr << "error: " << credentials.status().message() << "\n";
    return 64;
  }
  grpc::ServerBuilder builder;
  int grpc_port = 0;
  builder.AddListeningPort(absl::StrCat(FLAGS_host, ":", FLAGS_port), *credentials, &grpc_port);
  builder.RegisterService(recall_service.service());
  builder.RegisterService(training_service.service());
  builder.RegisterService(health.service());
  recall::server::CompletionQueueThreads queues(
      builder, FLAGS_grpc_threads > 0 ? FLAGS_grpc_threads : recall::server::UsableCpus());
  server = builder.BuildAndStart();
  if (!server || grpc_port == 0) {
    LOG(ERROR) << "cannot listen on " << FLAGS_host << ":" << FLAGS_port;
    return 1;
  }
  recall_service.Arm(queues);
  training_service.Arm(queues);
  health.Arm(queues);
  queues.Start();
  health.SetServing(versions.Current() != nullptr);
  if (FLAGS_poll_interval_s > 0) versions.StartPolling(absl::Seconds(FLAGS_poll_interval_s));
  if (probe) probe->Start();

  LOG(INFO) << "recall-server listening on " << FLAGS_host << ":" << grpc_port
            << ", metrics on http://" << FLAGS_metrics_host << ":" << metrics_port << "/metrics"
            << "; threads on " << recall::server::UsableCpus() << " CPUs, --cpu_sched="
            << *cpu_sched;
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
  health.Shutdown();
  server->Shutdown(std::chrono::system_clock::now() +
                   std::chrono::seconds(FLAGS_shutdown_grace_s));
  versions.Stop();
  server->Wait();
  queues.Shutdown();
  if (probe) probe->Stop();
  std::move(stop_appliers).Invoke();
  // Every accepted call has been answered by now (a handler finishes its call before it leaves
  // the in-flight count); tests/server/fault_test.cc checks this line.
  LOG(INFO) << "recall-server stopped; calls left unanswered: " << metrics.in_flight().Value()
            << "; calls answered: " << metrics.RequestCounts();
  return 0;
}
