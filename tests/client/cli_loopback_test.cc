// Runs the real recall-cli binary against an in-process fake recall-server (canned replies) on
// a loopback port: output format, request building, metadata, exit codes, health.

#include <sys/wait.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "recall/v1/recall.grpc.pb.h"

#ifndef RECALL_CLI_PATH
#error "RECALL_CLI_PATH must point at the recall-cli binary"
#endif

namespace {

namespace rv1 = ::recall::v1;

std::string Authorization(grpc::ServerContext* ctx) {
  auto it = ctx->client_metadata().find("authorization");
  if (it == ctx->client_metadata().end()) return "";
  return std::string(it->second.data(), it->second.size());
}

// user_id 666 makes the fake echo a wrong request_id (to test the stream order check).
void Answer(const rv1::RecallRequest& req, rv1::RecallResponse* resp) {
  for (int i = 0; i < req.k(); ++i) {
    rv1::RecalledItem* it = resp->add_items();
    it->set_item_id(100 + i);
    it->set_score(0.9f - 0.01f * i);
  }
  resp->set_model_version(7);
  resp->set_index_generation(3);
  if (req.return_user_embedding()) {
    resp->add_user_embedding(0.6f);
    resp->add_user_embedding(0.8f);
  }
  resp->set_request_id(req.user().user_id() == 666 ? "wrong" : req.request_id());
}

class FakeRecall final : public rv1::RecallService::Service {
 public:
  grpc::Status Recall(grpc::ServerContext* ctx, const rv1::RecallRequest* req,
                      rv1::RecallResponse* resp) override {
    const std::string auth = Authorization(ctx);
    if (auth == "Bearer bad") return {grpc::StatusCode::UNAUTHENTICATED, "bad token"};
    {
      std::lock_guard<std::mutex> lock(mu);
      last_auth = auth;
      last_request = *req;
    }
    if (req->k() < 1 || req->k() > 100) {
      return {grpc::StatusCode::INVALID_ARGUMENT,
              absl::StrCat("k must be in [1, 100], got ", req->k())};
    }
    Answer(*req, resp);
    return grpc::Status::OK;
  }
  grpc::Status RecallStream(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<rv1::RecallResponse, rv1::RecallRequest>* stream) override {
    rv1::RecallRequest req;
    while (stream->Read(&req)) {
      rv1::RecallResponse resp;
      Answer(req, &resp);
      if (!stream->Write(resp)) break;
    }
    return grpc::Status::OK;
  }
  grpc::Status UpsertItems(grpc::ServerContext*, const rv1::UpsertItemsRequest* req,
                           rv1::UpsertItemsResponse* resp) override {
    std::lock_guard<std::mutex> lock(mu);
    for (const auto& u : req->items()) {
      if (u.has_vector() && u.vector().model_version() != 7) {
        return {grpc::StatusCode::FAILED_PRECONDITION, "items[0].vector.model_version: not 7"};
      }
    }
    last_upsert = *req;
    upsert_calls++;
    resp->set_upserted(req->items_size());
    resp->set_index_generation(4);
    resp->set_model_version(7);
    return grpc::Status::OK;
  }
  grpc::Status DeleteItems(grpc::ServerContext*, const rv1::DeleteItemsRequest* req,
                           rv1::DeleteItemsResponse* resp) override {
    resp->set_deleted(req->item_ids_size() - 1);
    resp->set_index_generation(5);
    return grpc::Status::OK;
  }
  grpc::Status GetIndexInfo(grpc::ServerContext*, const rv1::GetIndexInfoRequest*,
                            rv1::GetIndexInfoResponse* resp) override {
    resp->set_model_version(7);
    resp->set_num_items(1000);
    resp->set_dim(64);
    resp->set_index_factory("HNSW32");
    resp->mutable_feature_spec()->set_history_length(50);
    auto* c = resp->mutable_feature_spec()->add_item_categorical();
    c->set_name("category");
    c->set_num_buckets(32);
    (*resp->mutable_eval()->mutable_metrics())["recall@20"] = 0.25;
    (*resp->mutable_search_params())["efSearch"] = 96;
    resp->set_probe_recall(0.9731);
    resp->set_probe_queries(64);
    rv1::IndexTuning* t = resp->mutable_index_tuning();
    t->set_k(20);
    t->set_recall_target(0.95);
    t->set_num_queries(500);
    t->set_queries("validation users");
    t->set_target_met(true);
    t->set_chosen(1);
    t->set_seconds(42.5);
    t->set_num_items(1000);
    t->set_tuned_at("2026-12-07T00:00:00Z");
    auto point = [&](const std::string& factory, const std::string& param, double value,
                     double recall, double distances, bool meets, bool within) {
      rv1::IndexTuningPoint* p = t->add_points();
      p->set_factory(factory);
      (*p->mutable_params())[param] = value;
      p->set_recall(recall);
      p->set_distances_per_query(distances);
      p->set_qps_one_thread(12345);
      p->set_build_seconds(1.25);
      p->set_bytes(3 << 20);
      p->set_insert_us(40);
      p->set_meets_target(meets);
      p->set_within_budget(within);
    };
    point("IVF64,Flat", "nprobe", 8, 0.9512, 2100, true, true);
    point("HNSW32", "efSearch", 96, 0.9800, 1500, true, true);
    point("HNSW32,SQ8", "efSearch", 64, 0.9100, 1400, false, false);
    t->add_points()->set_factory("IVF256,PQ16");
    t->mutable_points(3)->set_note("skipped: over the time budget");
    return grpc::Status::OK;
  }

  std::mutex mu;
  std::string last_auth;
  rv1::RecallRequest last_request;
  rv1::UpsertItemsRequest last_upsert;
  int upsert_calls = 0;
};

class FakeTraining final : public rv1::TrainingService::Service {
 public:
  grpc::Status TriggerRetrain(grpc::ServerContext*, const rv1::TriggerRetrainRequest* req,
                              rv1::TriggerRetrainResponse* resp) override {
    last_trigger = *req;
    if (req->config().has_max_steps()) {
      return {grpc::StatusCode::INVALID_ARGUMENT, "config.max_steps: not overridable"};
    }
    polls = 0;
    resp->set_job_id("job-1");
    return grpc::Status::OK;
  }
  grpc::Status GetRetrainJob(grpc::ServerContext*, const rv1::GetRetrainJobRequest* req,
                             rv1::RetrainJob* job) override {
    if (req->job_id() != "job-1") return {grpc::StatusCode::NOT_FOUND, "no such job"};
    job->set_job_id("job-1");
    const int n = ++polls;
    job->set_state(n < 3 ? rv1::RUNNING : rv1::SUCCEEDED);
    job->set_progress(n < 3 ? 0.5 : 1.0);
    job->add_log_tail("epoch 1 loss 3.2");
    if (n >= 3) job->set_result_version(8);
    return grpc::Status::OK;
  }
  grpc::Status CancelRetrain(grpc::ServerContext*, const rv1::CancelRetrainRequest* req,
                             rv1::CancelRetrainResponse* resp) override {
    resp->mutable_job()->set_job_id(req->job_id());
    resp->mutable_job()->set_state(rv1::CANCELLED);
    return grpc::Status::OK;
  }
  rv1::TriggerRetrainRequest last_trigger;
  grpc::Status ListVersions(grpc::ServerContext*, const rv1::ListVersionsRequest*,
                            rv1::ListVersionsResponse* resp) override {
    for (int v : {6, 7}) {
      auto* info = resp->add_versions();
      info->set_version(v);
      info->set_state(v == 7 ? "serving" : "available");
      (*info->mutable_eval()->mutable_metrics())["recall@20"] = 0.2 + 0.01 * v;
      if (v == 7) {  // tuned
        info->set_index_factory("IVF64,Flat");
        (*info->mutable_index_search_params())["nprobe"] = 8;
        info->set_index_recall(0.9512);
        info->set_index_recall_k(20);
        info->set_index_recall_target(0.95);
      } else {
        info->set_index_factory("Flat");
      }
    }
    resp->set_serving_version(7);
    return grpc::Status::OK;
  }
  grpc::Status ReloadVersions(grpc::ServerContext*, const rv1::ReloadVersionsRequest*,
                              rv1::ListVersionsResponse* resp) override {
    ++reloads;
    auto* info = resp->add_versions();
    info->set_version(8);
    info->set_state("serving");
    resp->set_serving_version(8);
    return grpc::Status::OK;
  }
  grpc::Status SetServingVersion(grpc::ServerContext*, const rv1::SetServingVersionRequest* req,
                                 rv1::SetServingVersionResponse* resp) override {
    if (req->version() == 99) return {grpc::StatusCode::NOT_FOUND, "version 99 not on disk"};
    resp->set_serving_version(req->version() == 0 ? 7 : req->version());
    return grpc::Status::OK;
  }
  std::atomic<int> polls{0};
  std::atomic<int> reloads{0};
};

struct Result {
  int code = -1;
  std::string out;  // stdout and stderr together
};

class CliLoopbackTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    grpc::EnableDefaultHealthCheckService(true);
    recall_ = new FakeRecall;
    training_ = new FakeTraining;
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    b.RegisterService(recall_);
    b.RegisterService(training_);
    server_ = b.BuildAndStart().release();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
    server_->GetHealthCheckService()->SetServingStatus("recall.v1.RecallService", true);
    server_->GetHealthCheckService()->SetServingStatus("down", false);
  }
  static void TearDownTestSuite() {
    server_->Shutdown();
    delete server_;
    delete recall_;
    delete training_;
  }

  static Result Run(const std::string& args, bool with_addr = true) {
    std::string cmd = absl::StrCat(RECALL_CLI_PATH, " ", args);
    if (with_addr) absl::StrAppend(&cmd, " --addr=127.0.0.1:", port_);
    absl::StrAppend(&cmd, " 2>&1");
    Result r;
    FILE* p = popen(cmd.c_str(), "r");
    if (p == nullptr) return r;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
    int st = pclose(p);
    r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    if (std::getenv("CLI_TEST_VERBOSE") != nullptr) {  // show what the cli printed
      std::fprintf(stderr, "$ recall-cli %s   [exit %d]\n%s\n", args.c_str(), r.code, r.out.c_str());
    }
    return r;
  }

  static std::string WriteTemp(const std::string& name, const std::string& content) {
    std::string path = ::testing::TempDir() + "/" + std::to_string(::getpid()) + "_" + name;
    std::ofstream(path) << content;
    return path;
  }

  static inline grpc::Server* server_ = nullptr;
  static inline FakeRecall* recall_ = nullptr;
  static inline FakeTraining* training_ = nullptr;
  static inline int port_ = 0;
};

#define EXPECT_HAS(haystack, needle) \
  EXPECT_NE((haystack).find(needle), std::string::npos) << "missing '" << (needle) << "' in:\n" << (haystack)

TEST_F(CliLoopbackTest, RecallBuildsRequestAndPrintsTable) {
  Result r = Run("recall --user_id=42 --history=1,2,3 --k=3 --exclude=4,5 --exclude_history "
                 "--cat=city:paris --num=age:31.5 --token=secret --request_id=abc");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_HAS(r.out, "model_version: 7  index_generation: 3  items: 3  request_id: abc");
  EXPECT_HAS(r.out, "rank  item_id     score");
  EXPECT_HAS(r.out, "   1      100  0.900000");
  std::lock_guard<std::mutex> lock(recall_->mu);
  const rv1::RecallRequest& q = recall_->last_request;
  EXPECT_EQ(q.user().user_id(), 42);
  EXPECT_EQ(q.user().history_item_ids_size(), 3);
  EXPECT_EQ(q.k(), 3);
  EXPECT_EQ(q.exclude_item_ids_size(), 2);
  EXPECT_TRUE(q.exclude_history());
  EXPECT_EQ(q.user().categorical().at("city"), "paris");
  EXPECT_FLOAT_EQ(q.user().numeric().at("age"), 31.5f);
  EXPECT_EQ(recall_->last_auth, "Bearer secret");
}

TEST_F(CliLoopbackTest, RecallWithItemFeaturesSummarizes) {
  const std::string tsv = WriteTemp("items.tsv",
                                    "item_id\tcategory\n100\tc3\n101\tc3\n102\tc1\n1\tc3\n2\tc3\n");
  Result r = Run("recall --k=4 --history=1,2 --return_embedding --item_features=" + tsv);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_HAS(r.out, "category");
  EXPECT_HAS(r.out, "category: c3 in 2/4 (1 not in table)");
  EXPECT_HAS(r.out, "history category: c3 in 2/2");
  EXPECT_HAS(r.out, "user_embedding (dim 2, norm 1.0000)");
}

TEST_F(CliLoopbackTest, JsonOutput) {
  Result r = Run("recall --k=1 --json");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_HAS(r.out, "\"items\":[{\"itemId\":\"100\"");
  EXPECT_HAS(r.out, "\"modelVersion\":\"7\"");
}

TEST_F(CliLoopbackTest, RpcErrorsMapToExitCodes) {
  Result r = Run("recall --k=0");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_HAS(r.out, "error: INVALID_ARGUMENT: k must be in [1, 100], got 0");
  r = Run("recall --token=bad");
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_HAS(r.out, "error: UNAUTHENTICATED: bad token");
  r = Run("recall --addr=127.0.0.1:1", /*with_addr=*/false);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_HAS(r.out, "error: UNAVAILABLE: ");
  r = Run("job --job_id=nope");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_HAS(r.out, "error: NOT_FOUND: no such job");
}

TEST_F(CliLoopbackTest, UsageErrorsExit64) {
  EXPECT_EQ(Run("recall --k=abc").code, 64);
  EXPECT_EQ(Run("recall --nosuchflag=1").code, 64);
  EXPECT_EQ(Run("delete --k=3").code, 64);
  EXPECT_EQ(Run("nosuchcommand").code, 64);
  EXPECT_EQ(Run("", /*with_addr=*/false).code, 64);
  EXPECT_EQ(Run("--help", false).code, 0);
  EXPECT_EQ(Run("help recall", false).code, 0);
}

TEST_F(CliLoopbackTest, StreamRepeatAndFile) {
  Result r = Run("stream --repeat=3 --k=2");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_HAS(r.out, "--- response 3 of 3");
  EXPECT_HAS(r.out, "request_id: r3");
  EXPECT_HAS(r.out, "stream: 3 requests, 3 responses");

  const std::string file = WriteTemp(
      "requests.jsonl",
      "{\"user\":{\"userId\":\"1\"},\"k\":2,\"requestId\":\"a\"}\n"
      "# comment\n"
      "{\"user\":{\"user_id\":2,\"history_item_ids\":[5]},\"k\":1}\n");
  r = Run("stream --json --requests=" + file);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_HAS(r.out, "\"requestId\":\"a\"");
  EXPECT_HAS(r.out, "\"requestId\":\"line-3\"");

  r = Run("stream --repeat=2 --user_id=666");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_HAS(r.out, "error: stream: response #1 has request_id 'wrong', expected 'r1'");

  const std::string bad = WriteTemp("bad.jsonl", "{\"k\": \"many\"}\n");
  r = Run("stream --requests=" + bad);
  EXPECT_EQ(r.code, 64) << r.out;
  EXPECT_HAS(r.out, "bad.jsonl:1");
}

TEST_F(CliLoopbackTest, UpsertDeleteIndexInfo) {
  Result r = Run("upsert --item_id=9 --cat=category:c3 --num=price:2.5");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_HAS(r.out, "upserted: 1 of 1 items in 1 call  index_generation: 4  model_version: 7");
  {
    std::lock_guard<std::mutex> lock(recall_->mu);
    ASSERT_EQ(recall_->last_upsert.items_size(), 1);
    EXPECT_EQ(recall_->last_upsert.items(0).features().item_id(), 9);
    EXPECT_EQ(recall_->last_upsert.items(0).features().categorical().at("category"), "c3");
  }
  r = Run("upsert --item_id=9 --vector=0.6,0.8 --model_version=7");
  ASSERT_EQ(r.code, 0) << r.out;
  {
    std::lock_guard<std::mutex> lock(recall_->mu);
    EXPECT_EQ(recall_->last_upsert.items(0).vector().values_size(), 2);
  }
  r = Run("upsert --item_id=9 --vector=0.6,0.8 --model_version=6");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_HAS(r.out, "error: FAILED_PRECONDITION:");

  const std::string file = WriteTemp(
      "upserts.jsonl",
      "{\"features\":{\"itemId\":\"1\",\"categorical\":{\"category\":\"c1\"}}}\n"
      "{\"vector\":{\"itemId\":\"2\",\"values\":[1,0],\"modelVersion\":\"7\"}}\n"
      "{\"features\":{\"itemId\":\"3\"}}\n");
  int calls_before;
  {
    std::lock_guard<std::mutex> lock(recall_->mu);
    calls_before = recall_->upsert_calls;
  }
  r = Run("upsert --batch_size=2 --file=" + file);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_HAS(r.out, "upserted: 3 of 3 items in 2 calls");
  {
    std::lock_guard<std::mutex> lock(recall_->mu);
    EXPECT_EQ(recall_->upsert_calls - calls_before, 2);
  }

  r = Run("delete --ids=1,2,3");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_HAS(r.out, "deleted: 2 of 3 ids");

  r = Run("index-info");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_HAS(r.out, "HNSW32");
  EXPECT_HAS(r.out, "category(32)");
  EXPECT_HAS(r.out, "recall@20=0.2500");
  EXPECT_HAS(r.out, "search_params:           efSearch=96\n");
  EXPECT_HAS(r.out, "probe_recall:            0.9731 on 64 recent queries against exact search\n");
  EXPECT_HAS(r.out,
             "index_tuning: recall@20 target 0.95 on 500 queries (validation users), 1000 items, "
             "memory budget none, 42.5 s, 2026-12-07T00:00:00Z: target met\n");
  // The frontier: aligned columns, the chosen point starred, unmeasured kinds after it.
  EXPECT_HAS(r.out,
             "   factory     params       recall@20  target  dist/query  qps(1t)  MiB  build_s  "
             "insert_us  note\n"
             "   IVF64,Flat  nprobe=8        0.9512  met           2100    12345  3.0      1.2"
             "       40.0\n"
             "*  HNSW32      efSearch=96     0.9800  met           1500    12345  3.0      1.2"
             "       40.0\n"
             "   HNSW32,SQ8  efSearch=64     0.9100  -             1400    12345  3.0      1.2"
             "       40.0  over budget\n"
             "   not measured: IVF256,PQ16 (skipped: over the time budget)\n");
}

TEST_F(CliLoopbackTest, Health) {
  Result r = Run("health");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out, "SERVING\n");
  r = Run("health --service=recall.v1.RecallService --json");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out, "{\"status\":\"SERVING\"}\n");
  r = Run("health --service=down");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_EQ(r.out, "NOT_SERVING\n");
  r = Run("health --service=nosuch");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_HAS(r.out, "error: NOT_FOUND");
}

TEST_F(CliLoopbackTest, TrainingAndVersions) {
  Result r = Run("retrain --dataset=synthetic --preset=gowalla "
                 "--override=epochs=2,lr=0.01,dim=32,pooling=sqrt,index_factory=Flat "
                 "--wait --poll_ms=10");
  ASSERT_EQ(r.code, 0) << r.out;
  {
    // Each pair became its typed field: a legacy flag name, a tower field by its own name, an
    // enum by its lower-case name, a string.
    const rv1::TriggerRetrainRequest& t = training_->last_trigger;
    EXPECT_EQ(t.preset(), "gowalla");
    EXPECT_EQ(t.config().epochs(), 2);
    EXPECT_DOUBLE_EQ(t.config().learning_rate(), 0.01);
    EXPECT_EQ(t.config().tower().dim(), 32);
    EXPECT_EQ(t.config().tower().pooling(), rv1::TowerConfig::SQRT);
    EXPECT_EQ(t.config().index_factory(), "Flat");
    EXPECT_TRUE(t.overrides().empty());
  }
  EXPECT_HAS(r.out, "job_id: job-1");
  EXPECT_HAS(r.out, "[RUNNING]  50.0%");
  EXPECT_HAS(r.out, "state:           SUCCEEDED");
  EXPECT_HAS(r.out, "result_version:  8");
  EXPECT_HAS(r.out, "  | epoch 1 loss 3.2");

  r = Run("retrain --override=max_steps=5");  // refused by the server
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_HAS(r.out, "config.max_steps");
  r = Run("retrain --override=no_such_option=1");  // refused before any call
  EXPECT_EQ(r.code, 64) << r.out;
  EXPECT_HAS(r.out, "no training option 'no_such_option'");

  r = Run("cancel --job_id=job-1");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_HAS(r.out, "CANCELLED");

  r = Run("versions");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_HAS(r.out, "serving_version: 7  pinned_version: none");
  EXPECT_HAS(r.out, "recall@20");
  EXPECT_HAS(r.out, "serving");
  // Each version's index, its search parameters and the tuner's recall@k (target).
  EXPECT_HAS(r.out, "version  state      created_at  index       search_params  index_recall");
  EXPECT_HAS(r.out, "      6  available  -           Flat        -              -  ");
  EXPECT_HAS(r.out, "      7  serving    -           IVF64,Flat  nprobe=8       0.9512@20 (target 0.95)");

  r = Run("serve-version --version=6");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_HAS(r.out, "serving_version: 6  (pinned)");
  r = Run("serve-version --version=0");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_HAS(r.out, "unpinned");
  r = Run("serve-version --version=99");
  EXPECT_EQ(r.code, 2) << r.out;

  r = Run("reload");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_HAS(r.out, "serving_version: 8");
  EXPECT_EQ(training_->reloads.load(), 1);
}

}  // namespace
