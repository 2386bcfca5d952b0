// Index search parameters and the live recall probe: a version's manifest index_search_params
// are set on its loaded index, the operator's override (--index_params, --ef_search) goes over
// them and skips names the kind lacks, GetIndexInfo and ListVersions report what is in force
// and how the index was tuned, and RecallProbe measures the serving index's recall on sampled
// queries against exact search (1 for an exact index, below 1 for an IVF index at nprobe=1
// after online writes far from its centroids). In-process (VersionManager, RecallEngine, the
// gRPC services on loopback) and, for the flags and the metrics, the real recall-server.
#include <glog/logging.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/wait.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/grpc_services.h"
#include "server/metrics.h"
#include "server/recall_engine.h"
#include "server/recall_probe.h"
#include "server/version_manager.h"
#include "tests/server/server_process.h"
#include "tests/server/small_model.h"
#include "tests/testing/metrics_scrape.h"

namespace recall::server {
namespace {

namespace v1 = ::recall::v1;
namespace fs = std::filesystem;
using Params = std::map<std::string, double>;

// Every log line (WARNING and up) while it lives.
class LogCapture : public google::LogSink {
 public:
  LogCapture() { google::AddLogSink(this); }
  ~LogCapture() override { google::RemoveLogSink(this); }
  void send(google::LogSeverity severity, const char*, const char*, int,
            const google::LogMessageTime&, const char* message, size_t len) override {
    if (severity < google::GLOG_WARNING) return;
    absl::MutexLock lock(&mu_);
    absl::StrAppend(&text_, std::string(message, len), "\n");
  }
  std::string text() {
    absl::MutexLock lock(&mu_);
    return text_;
  }

 private:
  absl::Mutex mu_;
  std::string text_;
};

Params InForce(const EmbeddingIndex& index) {
  Params p;
  for (const auto& [name, value] : index.SearchParameters()) p[name] = value;
  return p;
}

template <typename Map>
Params AsParams(const Map& m) {
  return Params(m.begin(), m.end());
}

// A small frontier: three measured kinds, the second chosen.
v1::IndexTuning SmallTuning() {
  v1::IndexTuning t;
  t.set_k(20);
  t.set_recall_target(0.95);
  t.set_num_queries(200);
  t.set_queries("validation users");
  t.set_target_met(true);
  t.set_chosen(1);
  t.set_seconds(3.5);
  t.set_num_items(300);
  t.set_tuned_at("2026-12-07T00:00:00Z");
  auto add = [&](const std::string& factory, const std::string& param, double value,
                 double recall, bool meets) {
    v1::IndexTuningPoint* p = t.add_points();
    p->set_factory(factory);
    (*p->mutable_params())[param] = value;
    p->set_recall(recall);
    p->set_distances_per_query(factory == "HNSW32" ? 900 : 120);
    p->set_qps_one_thread(20000);
    p->set_build_seconds(0.2);
    p->set_bytes(100000);
    p->set_insert_us(5);
    p->set_meets_target(meets);
    p->set_within_budget(true);
  };
  add("HNSW32", "efSearch", 64, 0.99, true);
  add("IVF8,Flat", "nprobe", 2, 0.97, true);
  add("IVF8,SQ8", "nprobe", 2, 0.90, false);
  return t;
}

TEST(ParseIndexParams, AcceptsKnownNamesAndValues) {
  auto p = ParseIndexParams("");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->empty());
  p = ParseIndexParams(" nprobe = 64 , k_factor=2.5,efSearch=128");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(*p, (IndexParams{{"nprobe", 64}, {"k_factor", 2.5}, {"efSearch", 128}}));
  EXPECT_EQ(FormatIndexParams(*p), "nprobe=64, k_factor=2.5, efSearch=128");
  EXPECT_EQ(FormatIndexParams({}), "-");
}

TEST(ParseIndexParams, RefusesBadInputNamingIt) {
  const std::map<std::string, std::string> bad = {
      {"efSearch=0", "efSearch=0: must be an integer >= 1"},
      {"nprobe=1.5", "nprobe=1.5: must be an integer >= 1"},
      {"k_factor=0.5", "k_factor=0.5: must be a number >= 1"},
      {"nprobe=inf", "nprobe=inf: must be an integer >= 1"},
      {"efsearch=10", "unknown search parameter \"efsearch\""},
      {"nprobe=4,nprobe=8", "nprobe given twice"},
      {"nprobe", "\"nprobe\": expected name=value"},
      {"nprobe=many", "\"many\" is not a number"},
      {"nprobe=4,", "empty element"},
  };
  for (const auto& [text, message] : bad) {
    auto p = ParseIndexParams(text);
    ASSERT_FALSE(p.ok()) << text;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_NE(p.status().message().find(message), std::string::npos)
        << text << " -> " << p.status().message();
  }
}

TEST(ParseIndexParams, EfSearchIsAnAliasOfIndexParams) {
  VersionManager::Options o;
  o.ef_search = 100;
  o.index_params = {{"nprobe", 8}};
  auto r = VersionManager::ResolvedIndexParams(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, (IndexParams{{"nprobe", 8}, {"efSearch", 100}}));
  o.index_params = {{"efSearch", 64}};
  EXPECT_FALSE(VersionManager::ResolvedIndexParams(o).ok());
  o.index_params = {};
  o.ef_search = -1;
  EXPECT_FALSE(VersionManager::ResolvedIndexParams(o).ok());
}

class IndexParamsTest : public testing::SmallModelSuite<IndexParamsTest> {
 public:
  static constexpr char kTempName[] = "recall_index_params_test";

 protected:
  // Publishes the model under `base` with `factory`, the manifest's search parameters
  // replaced by `params` and, if `tuned`, SmallTuning() as its tuning record.
  static void Publish(const std::string& base, const std::string& factory, const Params& params,
                      bool tuned = false) {
    auto dir = model_->ExportEdited(base, factory, [&](v1::ModelManifest& m) {
      m.clear_index_search_params();
      for (const auto& [name, value] : params) (*m.mutable_index_search_params())[name] = value;
      m.clear_index_tuning();
      if (tuned) *m.mutable_index_tuning() = SmallTuning();
    });
    ASSERT_TRUE(dir.ok()) << dir.status();
  }

  static VersionManager::Options Base(const std::string& base) {
    VersionManager::Options o;
    o.model_base = base;
    return o;
  }

  static v1::RecallRequest RequestFor(int64_t user, int k) {
    v1::RecallRequest r;
    r.set_k(k);
    r.mutable_user()->set_user_id(user);
    for (int64_t i : dataset_->train[user]) r.mutable_user()->add_history_item_ids(i);
    r.set_exclude_history(true);
    return r;
  }

  // Recall for users [0, n) through `engine` (offering each query to its probe).
  static void RecallUsers(const RecallEngine& engine, int n, int k) {
    for (int64_t user = 0; user < n; ++user) {
      v1::RecallResponse resp;
      const absl::Status s = engine.Recall(RequestFor(user, k), &resp);
      ASSERT_TRUE(s.ok()) << s;
    }
  }
};

TEST_F(IndexParamsTest, ManifestParamsAreSetOnTheLoadedIndex) {
  const std::string base = FreshTestDir() + "/models";
  Publish(base, "IVF8,Flat", {{"nprobe", 3}});
  VersionManager versions(Base(base));
  ASSERT_TRUE(versions.LoadNewest().ok());
  EXPECT_EQ(InForce(*versions.Current()->index), (Params{{"nprobe", 3}}));

  RecallEngine engine(&versions, EngineLimits());
  v1::GetIndexInfoResponse info;
  ASSERT_TRUE(engine.GetIndexInfo(&info).ok());
  EXPECT_EQ(AsParams(info.search_params()), (Params{{"nprobe", 3}}));
  EXPECT_FALSE(info.has_index_tuning());
  EXPECT_EQ(info.probe_recall(), -1);  // no probe
  EXPECT_EQ(info.probe_queries(), 0);
}

TEST_F(IndexParamsTest, OverrideGoesOverTheManifestAndSkipsNamesTheKindLacks) {
  const std::string base = FreshTestDir() + "/models";
  Publish(base, "IVF8,Flat", {{"nprobe", 3}});
  LogCapture log;
  VersionManager::Options o = Base(base);
  o.index_params = {{"nprobe", 5}, {"efSearch", 100}, {"k_factor", 4}};
  VersionManager versions(o);
  ASSERT_TRUE(versions.LoadNewest().ok());
  EXPECT_EQ(InForce(*versions.Current()->index), (Params{{"nprobe", 5}}));
  const std::string text = log.text();
  EXPECT_NE(text.find("override efSearch=100 skipped"), std::string::npos) << text;
  EXPECT_NE(text.find("override k_factor=4 skipped"), std::string::npos) << text;
  EXPECT_NE(text.find("\"IVF8,Flat\" has no efSearch"), std::string::npos) << text;
  EXPECT_EQ(text.find("nprobe=5 skipped"), std::string::npos) << text;
}

TEST_F(IndexParamsTest, DeprecatedEfSearchAppliesToHnswOnly) {
  const std::string hnsw = FreshTestDir() + "/hnsw";
  Publish(hnsw, "HNSW8", {{"efSearch", 40}});
  {
    VersionManager versions(Base(hnsw));
    ASSERT_TRUE(versions.LoadNewest().ok());
    EXPECT_EQ(InForce(*versions.Current()->index), (Params{{"efSearch", 40}}));
  }
  VersionManager::Options o = Base(hnsw);
  o.ef_search = 100;
  VersionManager versions(o);
  ASSERT_TRUE(versions.LoadNewest().ok());
  EXPECT_EQ(InForce(*versions.Current()->index), (Params{{"efSearch", 100}}));

  const std::string flat = FreshTestDir() + "/flat";
  Publish(flat, "Flat", {});
  o.model_base = flat;
  VersionManager flat_versions(o);
  ASSERT_TRUE(flat_versions.LoadNewest().ok());  // skipped, as before: Flat has none
  EXPECT_TRUE(InForce(*flat_versions.Current()->index).empty());
}

TEST_F(IndexParamsTest, ABadManifestParamRefusesTheVersion) {
  const std::string base = FreshTestDir() + "/models";
  Publish(base, "IVF8,Flat", {{"efSearch", 32}});  // not an IVF parameter
  VersionManager versions(Base(base));
  absl::Status s = versions.LoadNewest();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("MANIFEST.json: index_search_params efSearch=32"),
            std::string::npos)
      << s;
  EXPECT_EQ(versions.Current(), nullptr);
  ASSERT_EQ(versions.List().size(), 1u);
  EXPECT_NE(versions.List()[0].state.find("invalid: "), std::string::npos);
  EXPECT_NE(versions.List()[0].state.find("efSearch"), std::string::npos);

  // A good version after it is served; a bad value refuses one as well.
  Publish(base, "IVF8,Flat", {{"nprobe", 0}});
  Publish(base, "IVF8,Flat", {{"nprobe", 2}});
  ASSERT_TRUE(versions.Reconcile().ok());
  EXPECT_EQ(versions.serving_version(), 3);
  VersionManager pinned(Base(base));
  s = pinned.SetServingVersion(2);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("index_search_params nprobe=0"), std::string::npos) << s;
}

TEST_F(IndexParamsTest, GrpcIndexInfoAndVersionsReportParamsAndTuning) {
  const std::string base = FreshTestDir() + "/models";
  Publish(base, "Flat", {});
  Publish(base, "IVF8,Flat", {{"nprobe", 2}}, /*tuned=*/true);
  VersionManager::Options o = Base(base);
  o.index_params = {{"nprobe", 4}};
  VersionManager versions(o);
  ASSERT_TRUE(versions.LoadNewest().ok());
  RecallEngine engine(&versions, EngineLimits());
  RecallProbe probe(&versions, RecallProbe::Options());
  engine.set_recall_probe(&probe);
  Metrics metrics;
  RecallServiceImpl recall_service(&engine, &metrics);
  TrainingServiceImpl training_service(&versions, /*jobs=*/nullptr, &metrics);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(recall_service.service());
  builder.RegisterService(training_service.service());
  CompletionQueueThreads queues(builder, 1);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  recall_service.Arm(queues);
  training_service.Arm(queues);
  queues.Start();
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port),
                                     grpc::InsecureChannelCredentials());

  v1::GetIndexInfoResponse info;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(v1::RecallService::NewStub(channel)->GetIndexInfo(&ctx, {}, &info).ok());
  }
  EXPECT_EQ(info.model_version(), 2);
  EXPECT_EQ(AsParams(info.search_params()), (Params{{"nprobe", 4}}));  // the override
  ASSERT_TRUE(info.has_index_tuning());
  EXPECT_EQ(info.index_tuning().points_size(), 3);
  EXPECT_EQ(info.index_tuning().chosen(), 1);
  EXPECT_EQ(info.probe_recall(), -1);  // before the first probe
  EXPECT_EQ(info.probe_queries(), 0);

  v1::ListVersionsResponse list;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(v1::TrainingService::NewStub(channel)->ListVersions(&ctx, {}, &list).ok());
  }
  ASSERT_EQ(list.versions_size(), 2);
  const v1::VersionInfo& flat = list.versions(0);
  EXPECT_EQ(flat.index_factory(), "Flat");
  EXPECT_TRUE(flat.index_search_params().empty());
  EXPECT_EQ(flat.index_recall(), 0);
  EXPECT_EQ(flat.index_recall_k(), 0);
  const v1::VersionInfo& ivf = list.versions(1);
  EXPECT_EQ(ivf.state(), "serving");
  EXPECT_EQ(ivf.index_factory(), "IVF8,Flat");
  EXPECT_EQ(AsParams(ivf.index_search_params()), (Params{{"nprobe", 2}}));  // the manifest's
  EXPECT_DOUBLE_EQ(ivf.index_recall(), 0.97);
  EXPECT_EQ(ivf.index_recall_k(), 20);
  EXPECT_DOUBLE_EQ(ivf.index_recall_target(), 0.95);

  // After a probe GetIndexInfo carries its result.
  RecallUsers(engine, 10, 10);
  auto r = probe.ProbeOnce();
  ASSERT_TRUE(r.ok()) << r.status();
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(v1::RecallService::NewStub(channel)->GetIndexInfo(&ctx, {}, &info).ok());
  }
  EXPECT_EQ(info.probe_queries(), 10);
  EXPECT_DOUBLE_EQ(info.probe_recall(), r->recall);
  server->Shutdown();
  queues.Shutdown();
}

TEST_F(IndexParamsTest, ProbeOfAnExactIndexFindsRecallOne) {
  const std::string base = FreshTestDir() + "/models";
  Publish(base, "Flat", {});
  VersionManager versions(Base(base));
  ASSERT_TRUE(versions.LoadNewest().ok());
  RecallEngine engine(&versions, EngineLimits());
  RecallProbe::Options po;
  po.chunk_items = 64;  // several chunks
  RecallProbe probe(&versions, po);
  engine.set_recall_probe(&probe);

  // Nothing sampled yet: nothing to probe.
  auto r = probe.ProbeOnce();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->queries, 0);
  EXPECT_EQ(r->recall, -1);

  RecallUsers(engine, 40, 10);  // with their histories excluded
  r = probe.ProbeOnce();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->version, 1);
  EXPECT_EQ(r->queries, 40);
  EXPECT_EQ(r->items, 300);
  EXPECT_EQ(r->recall, 1.0);
  v1::GetIndexInfoResponse info;
  ASSERT_TRUE(engine.GetIndexInfo(&info).ok());
  EXPECT_EQ(info.probe_recall(), 1.0);
  EXPECT_EQ(info.probe_queries(), 40);

  // An interval without queries probes the previous sample again.
  r = probe.ProbeOnce();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->queries, 40);
  EXPECT_EQ(r->recall, 1.0);

  // The sample is bounded: 100 queries -> capacity.
  RecallUsers(engine, 100, 5);
  r = probe.ProbeOnce();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->queries, po.capacity);
  EXPECT_EQ(r->recall, 1.0);
}

TEST_F(IndexParamsTest, ProbeSeesAnIvfIndexDriftUnderOnlineWrites) {
  const std::string base = FreshTestDir() + "/models";
  Publish(base, "IVF8,Flat", {{"nprobe", 1}});
  VersionManager versions(Base(base));
  ASSERT_TRUE(versions.LoadNewest().ok());
  RecallEngine engine(&versions, EngineLimits());
  RecallProbe probe(&versions, RecallProbe::Options());
  engine.set_recall_probe(&probe);
  EmbeddingIndex& index = *versions.Current()->index;

  // Online writes far from the centroids: +-10 e_m for every coordinate m. Each outscores
  // every trained item for the queries leaning its way, and lands in whichever list's centroid
  // leans most its way, mostly not the one list a query probes at nprobe=1.
  const int dim = index.dim();
  std::vector<int64_t> ids;
  std::vector<float> vectors;
  for (int m = 0; m < dim; ++m) {
    for (float sign : {10.0f, -10.0f}) {
      ids.push_back(100000 + static_cast<int64_t>(ids.size()));
      std::vector<float> v(dim, 0.0f);
      v[m] = sign;
      vectors.insert(vectors.end(), v.begin(), v.end());
    }
  }
  ASSERT_TRUE(index.Upsert(ids, vectors.data()).ok());

  RecallUsers(engine, 40, 10);
  auto drifted = probe.ProbeOnce();
  ASSERT_TRUE(drifted.ok()) << drifted.status();
  EXPECT_EQ(drifted->queries, 40);
  EXPECT_EQ(drifted->items, 300 + 2 * dim);
  EXPECT_LT(drifted->recall, 0.9);
  EXPECT_GE(drifted->recall, 0.0);

  // Probing every list is exhaustive: the same sample then finds recall 1.
  ASSERT_TRUE(index.SetSearchParameter("nprobe", 8).ok());
  auto all = probe.ProbeOnce();
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->queries, 40);
  EXPECT_EQ(all->recall, 1.0);
  std::printf("  probe recall@10 at nprobe=1 after the writes: %.4f; at nprobe=8: %.4f\n",
              drifted->recall, all->recall);
}

TEST_F(IndexParamsTest, ProbeDropsAnotherVersionsSample) {
  const std::string base = FreshTestDir() + "/models";
  Publish(base, "Flat", {});
  VersionManager versions(Base(base));
  ASSERT_TRUE(versions.LoadNewest().ok());
  RecallEngine engine(&versions, EngineLimits());
  RecallProbe probe(&versions, RecallProbe::Options());
  engine.set_recall_probe(&probe);
  RecallUsers(engine, 5, 10);
  ASSERT_TRUE(probe.ProbeOnce().ok());
  EXPECT_EQ(probe.last().version, 1);

  Publish(base, "Flat", {});
  ASSERT_TRUE(versions.Reconcile().ok());
  ASSERT_EQ(versions.serving_version(), 2);
  auto r = probe.ProbeOnce();  // version 1's queries are not version 2's
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->version, 2);
  EXPECT_EQ(r->queries, 0);
  EXPECT_EQ(r->recall, -1);
}

// ---- the real recall-server: the flags, the probe's thread and its metrics ----

int RunServer(const std::vector<std::string>& args, const std::string& log) {
  std::string cmd = RECALL_SERVER_BIN;
  for (const auto& a : args) absl::StrAppend(&cmd, " '", a, "'");
  absl::StrAppend(&cmd, " >'", log, "' 2>&1");
  const int st = std::system(cmd.c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// How many threads of process `pid` run under each scheduling policy.
std::map<int, int> ThreadPolicies(pid_t pid) {
  std::map<int, int> count;
  for (const auto& e :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
    const int policy = sched_getscheduler(std::stoi(e.path().filename().string()));
    if (policy >= 0) ++count[policy];  // a thread that exited meanwhile: -1, skipped
  }
  return count;
}

TEST_F(IndexParamsTest, ServerFlagsAndProbeMetrics) {
  const std::string work = FreshTestDir();
  const std::string base = work + "/models";
  Publish(base, "IVF8,Flat", {{"nprobe", 2}}, /*tuned=*/true);
  const std::string wal = "--wal_path=" + work + "/wal";

  // Bad values are start-up errors (EX_USAGE), naming the flag.
  EXPECT_EQ(RunServer({"--model_base=" + base, wal, "--metrics_port=-1", "--port=0",
                       "--index_params=nprobe=1.5"},
                      work + "/bad1.log"),
            64);
  EXPECT_NE(ReadAll(work + "/bad1.log").find("--index_params: nprobe=1.5"), std::string::npos)
      << ReadAll(work + "/bad1.log");
  EXPECT_EQ(RunServer({"--model_base=" + base, wal, "--metrics_port=-1", "--port=0",
                       "--index_params=efSearch=64", "--ef_search=32"},
                      work + "/bad2.log"),
            64);
  EXPECT_NE(ReadAll(work + "/bad2.log").find("efSearch given twice"), std::string::npos)
      << ReadAll(work + "/bad2.log");

  EXPECT_EQ(RunServer({"--model_base=" + base, wal, "--metrics_port=-1", "--port=0",
                       "--cpu_sched=fifo"},
                      work + "/bad3.log"),
            64);
  EXPECT_NE(ReadAll(work + "/bad3.log").find("--cpu_sched: unknown CPU scheduling policy"),
            std::string::npos)
      << ReadAll(work + "/bad3.log");

  testing::ServerProcess server;
  ASSERT_TRUE(server.Start(RECALL_SERVER_BIN, base, work,
                           {wal, "--poll_interval_s=0", "--index_params=nprobe=4,efSearch=50",
                            "--recall_probe_interval_s=1", "--cpu_sched=batch"}));
  v1::GetIndexInfoResponse info;
  ASSERT_TRUE(server.Recall()->GetIndexInfo(testing::Deadline().get(), {}, &info).ok());
  EXPECT_EQ(AsParams(info.search_params()), (Params{{"nprobe", 4}}));
  EXPECT_TRUE(info.has_index_tuning());
  EXPECT_NE(ReadAll(server.log()).find("override efSearch=50 skipped"), std::string::npos);

  // Queries for the probe; it runs every second on its own thread.
  auto stub = server.Recall();
  for (int64_t user = 0; user < 20; ++user) {
    v1::RecallResponse resp;
    ASSERT_TRUE(stub->Recall(testing::Deadline().get(), RequestFor(user, 10), &resp).ok());
  }
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (info.probe_queries() == 0 && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    ASSERT_TRUE(stub->GetIndexInfo(testing::Deadline().get(), {}, &info).ok());
  }
  EXPECT_EQ(info.probe_queries(), 20);
  // --cpu_sched=batch reached every thread, those gRPC and LibTorch started later included;
  // the probe's thread (and any OpenMP worker it started) runs at the idle policy.
  const std::map<int, int> policies = ThreadPolicies(server.pid());
  EXPECT_GT(policies.count(SCHED_BATCH) ? policies.at(SCHED_BATCH) : 0, 3);
  EXPECT_GE(policies.count(SCHED_IDLE) ? policies.at(SCHED_IDLE) : 0, 1);
  EXPECT_EQ(policies.size(), 2u) << "a thread with another policy";
  EXPECT_GE(info.probe_recall(), 0.0);
  EXPECT_LE(info.probe_recall(), 1.0);
  const std::string metrics = testing::ScrapeMetrics(server.metrics_port());
  EXPECT_NE(metrics.find("recall_index_probe_queries 20"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("\nrecall_index_probe_recall "), std::string::npos) << metrics;

  v1::ListVersionsResponse list;
  ASSERT_TRUE(server.Training()->ListVersions(testing::Deadline().get(), {}, &list).ok());
  ASSERT_EQ(list.versions_size(), 1);
  EXPECT_EQ(AsParams(list.versions(0).index_search_params()), (Params{{"nprobe", 2}}));
  EXPECT_DOUBLE_EQ(list.versions(0).index_recall(), 0.97);
  stub.reset();
  EXPECT_EQ(server.Stop(), 0);
}

}  // namespace
}  // namespace recall::server
