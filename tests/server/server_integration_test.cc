// Loopback integration test: trains a small model in-process, publishes it, starts
// recall-server as a child process on a free port and talks to it over a real gRPC channel.
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "recall/v1/recall.grpc.pb.h"
#include "tests/testing/child_process.h"
#include "tests/testing/metrics_scrape.h"
#include "tests/server/small_model.h"

namespace recall {
namespace {
namespace fs = std::filesystem;
using recall::v1::RecallRequest;
using recall::v1::RecallResponse;

class ServerIntegrationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = new testing::SmallTrainedModel("recall_it");
    ASSERT_TRUE(model_->ok());
    dir_ = &model_->dir;
    dataset_ = &model_->dataset;
    auto path = model_->Export(*dir_ + "/models");
    ASSERT_TRUE(path.ok()) << path.status();

    server_ = new testing::ChildProcess();
    const std::string port_file = *dir_ + "/ports";
    ASSERT_TRUE(server_->Start({RECALL_SERVER_BIN, "--model_base=" + *dir_ + "/models",
                                "--port=0", "--metrics_port=0", "--port_file=" + port_file,
                                "--poll_interval_s=0", "--max_k=200"},
                               *dir_ + "/server.log"));
    ASSERT_TRUE(testing::WaitForPorts(port_file, *server_, &grpc_port_, &metrics_port_))
        << "server did not start; see " << *dir_ << "/server.log";
    channel_ = new std::shared_ptr<grpc::Channel>(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(grpc_port_), grpc::InsecureChannelCredentials()));
  }

  static void TearDownTestSuite() {
    delete channel_;
    if (server_) {
      server_->Kill(SIGTERM);
      server_->Wait();
    }
    delete server_;
    delete model_;  // removes dir_
  }

  std::unique_ptr<recall::v1::RecallService::Stub> Stub() {
    return recall::v1::RecallService::NewStub(*channel_);
  }

  static RecallRequest RequestFor(int64_t user, int k) {
    RecallRequest req;
    req.set_k(k);
    req.mutable_user()->set_user_id(user);
    for (int64_t i : dataset_->train[user]) req.mutable_user()->add_history_item_ids(i);
    (*req.mutable_user()->mutable_categorical())["region"] = dataset_->user_cat_values[0][user];
    return req;
  }

  static grpc::Status Call(recall::v1::RecallService::Stub& stub, const RecallRequest& req,
                           RecallResponse* resp) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return stub.Recall(&ctx, req, resp);
  }

  static testing::SmallTrainedModel* model_;
  static const std::string* dir_;
  static const trainer::Dataset* dataset_;
  static testing::ChildProcess* server_;
  static std::shared_ptr<grpc::Channel>* channel_;
  static int grpc_port_, metrics_port_;
};

testing::SmallTrainedModel* ServerIntegrationTest::model_ = nullptr;
const std::string* ServerIntegrationTest::dir_ = nullptr;
const trainer::Dataset* ServerIntegrationTest::dataset_ = nullptr;
testing::ChildProcess* ServerIntegrationTest::server_ = nullptr;
std::shared_ptr<grpc::Channel>* ServerIntegrationTest::channel_ = nullptr;
int ServerIntegrationTest::grpc_port_ = 0;
int ServerIntegrationTest::metrics_port_ = 0;

TEST_F(ServerIntegrationTest, ReturnsKResultsWithDescendingScores) {
  auto stub = Stub();
  RecallResponse resp;
  ASSERT_TRUE(Call(*stub, RequestFor(3, 25), &resp).ok());
  ASSERT_EQ(resp.items_size(), 25);
  EXPECT_EQ(resp.model_version(), 1);
  std::set<int64_t> ids;
  for (int i = 0; i < resp.items_size(); ++i) {
    ids.insert(resp.items(i).item_id());
    if (i > 0) {
      EXPECT_GE(resp.items(i - 1).score(), resp.items(i).score());
    }
  }
  EXPECT_EQ(ids.size(), 25u) << "duplicate ids in one response";
}

TEST_F(ServerIntegrationTest, ServedUserTowerMatchesTrainer) {
  auto stub = Stub();
  for (int64_t user : {0, 17, 123, 399}) {
    RecallRequest req = RequestFor(user, 5);
    req.set_return_user_embedding(true);
    RecallResponse resp;
    ASSERT_TRUE(Call(*stub, req, &resp).ok());
    const std::vector<float> expected = model_->UserEmbedding(user);
    ASSERT_EQ(resp.user_embedding_size(), static_cast<int>(expected.size()));
    float max_diff = 0;
    for (int j = 0; j < resp.user_embedding_size(); ++j) {
      max_diff = std::max(max_diff, std::abs(resp.user_embedding(j) - expected[j]));
    }
    EXPECT_LT(max_diff, 1e-5) << "user " << user;
  }
}

TEST_F(ServerIntegrationTest, UpsertedItemIsFoundAndDeletedItemNeverReturns) {
  auto stub = Stub();
  RecallRequest req = RequestFor(42, 10);
  req.set_return_user_embedding(true);
  RecallResponse before;
  ASSERT_TRUE(Call(*stub, req, &before).ok());

  // A new item whose vector is the user's own: it must become the nearest neighbour.
  recall::v1::UpsertItemsRequest up;
  auto* v = up.add_items()->mutable_vector();
  v->set_item_id(900001);
  v->set_model_version(before.model_version());
  for (float x : before.user_embedding()) v->add_values(x);
  recall::v1::UpsertItemsResponse up_resp;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->UpsertItems(&ctx, up, &up_resp).ok());
  }
  EXPECT_GT(up_resp.index_generation(), before.index_generation());
  RecallResponse after;
  ASSERT_TRUE(Call(*stub, req, &after).ok());
  ASSERT_GT(after.items_size(), 0);
  EXPECT_EQ(after.items(0).item_id(), 900001);
  EXPECT_NEAR(after.items(0).score(), 1.0f, 1e-4);

  // Delete it and the previous top item: neither comes back, for this or other users.
  const int64_t old_top = before.items(0).item_id();
  recall::v1::DeleteItemsRequest del;
  del.add_item_ids(900001);
  del.add_item_ids(old_top);
  recall::v1::DeleteItemsResponse del_resp;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->DeleteItems(&ctx, del, &del_resp).ok());
  }
  EXPECT_EQ(del_resp.deleted(), 2);
  for (int64_t user = 0; user < 400; user += 7) {
    RecallResponse r;
    ASSERT_TRUE(Call(*stub, RequestFor(user, 50), &r).ok());
    for (const auto& item : r.items()) {
      EXPECT_NE(item.item_id(), 900001);
      EXPECT_NE(item.item_id(), old_top);
    }
  }
}

TEST_F(ServerIntegrationTest, FeatureUpsertIsEmbeddedByTheItemTower) {
  auto stub = Stub();
  recall::v1::UpsertItemsRequest up;
  auto* f = up.add_items()->mutable_features();
  f->set_item_id(800123);  // unknown id: OOV row + features
  (*f->mutable_categorical())["category"] = "c2";
  recall::v1::UpsertItemsResponse up_resp;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub->UpsertItems(&ctx, up, &up_resp).ok());
  recall::v1::GetIndexInfoResponse info;
  grpc::ClientContext ctx2;
  ASSERT_TRUE(stub->GetIndexInfo(&ctx2, {}, &info).ok());
  EXPECT_EQ(info.dim(), 64);
  EXPECT_EQ(info.model_version(), 1);
  EXPECT_GE(info.num_items(), 300);
}

TEST_F(ServerIntegrationTest, NeverReturnsExcludedOrHistoryItems) {
  auto stub = Stub();
  for (int64_t user : {5, 66, 250}) {
    RecallRequest plain = RequestFor(user, 30);
    RecallResponse first;
    ASSERT_TRUE(Call(*stub, plain, &first).ok());
    RecallRequest req = plain;
    req.set_exclude_history(true);
    std::set<int64_t> banned(dataset_->train[user].begin(), dataset_->train[user].end());
    for (int i = 0; i < 5; ++i) {  // exclude the 5 best non-history results too
      req.add_exclude_item_ids(first.items(i).item_id());
      banned.insert(first.items(i).item_id());
    }
    RecallResponse resp;
    ASSERT_TRUE(Call(*stub, req, &resp).ok());
    EXPECT_EQ(resp.items_size(), 30) << "exclusions must be applied inside the search";
    for (const auto& item : resp.items()) EXPECT_FALSE(banned.count(item.item_id())) << item.item_id();
  }
}

TEST_F(ServerIntegrationTest, InvalidArgumentsNameTheField) {
  auto stub = Stub();
  struct Case {
    RecallRequest req;
    std::string field;
  };
  RecallRequest k0 = RequestFor(1, 0);
  RecallRequest kbig = RequestFor(1, 201);
  RecallRequest nan = RequestFor(1, 5);
  (*nan.mutable_user()->mutable_numeric())["age"] = 1;  // not a feature of this model
  for (const auto& [req, field] : std::vector<std::pair<RecallRequest, std::string>>{
           {k0, "k:"}, {kbig, "k:"}, {nan, "user.numeric[\"age\"]"}}) {
    RecallResponse resp;
    grpc::Status s = Call(*stub, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(s.error_message().find(field), std::string::npos) << s.error_message();
  }
  recall::v1::UpsertItemsRequest up;
  auto* v = up.add_items()->mutable_vector();
  v->set_item_id(5);
  v->set_model_version(1);
  v->add_values(0.5f);  // dim 1 instead of 64
  recall::v1::UpsertItemsResponse up_resp;
  grpc::ClientContext ctx;
  grpc::Status s = stub->UpsertItems(&ctx, up, &up_resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("items[0].vector.values"), std::string::npos) << s.error_message();
  // The server is still fine afterwards.
  RecallResponse ok;
  EXPECT_TRUE(Call(*stub, RequestFor(1, 5), &ok).ok());
}

TEST_F(ServerIntegrationTest, StreamAnswersEveryRequestInOrder) {
  auto stub = Stub();
  grpc::ClientContext ctx;
  auto stream = stub->RecallStream(&ctx);
  constexpr int kRequests = 40;
  std::thread writer([&] {
    for (int i = 0; i < kRequests; ++i) {
      RecallRequest req = RequestFor(i * 9 % 400, 10);
      req.set_request_id("req-" + std::to_string(i));
      if (!stream->Write(req)) break;
    }
    stream->WritesDone();
  });
  RecallResponse resp;
  int n = 0;
  while (stream->Read(&resp)) {
    EXPECT_EQ(resp.request_id(), "req-" + std::to_string(n));
    EXPECT_EQ(resp.items_size(), 10);
    ++n;
  }
  writer.join();
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(n, kRequests);
}

TEST_F(ServerIntegrationTest, HealthIsServingAndVersionsAreListedThroughTheCli) {
  std::string out;
  const int rc = testing::RunCommand(
      {RECALL_CLI_BIN, "health", "--addr=127.0.0.1:" + std::to_string(grpc_port_)}, &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("SERVING"), std::string::npos) << out;

  auto training = recall::v1::TrainingService::NewStub(*channel_);
  grpc::ClientContext ctx;
  recall::v1::ListVersionsResponse resp;
  ASSERT_TRUE(training->ListVersions(&ctx, {}, &resp).ok());
  EXPECT_EQ(resp.serving_version(), 1);
  EXPECT_EQ(resp.pinned_version(), 0);
  ASSERT_EQ(resp.versions_size(), 1);
  EXPECT_EQ(resp.versions(0).state(), "serving");

  const int list_rc = testing::RunCommand(
      {RECALL_CLI_BIN, "versions", "--addr=127.0.0.1:" + std::to_string(grpc_port_)}, &out);
  EXPECT_EQ(list_rc, 0) << out;
  EXPECT_NE(out.find("serving"), std::string::npos) << out;
}

TEST_F(ServerIntegrationTest, MetricsEndpointCountsRequests) {
  auto stub = Stub();
  RecallResponse resp;
  ASSERT_TRUE(Call(*stub, RequestFor(2, 5), &resp).ok());
  const std::string body = testing::ScrapeMetrics(metrics_port_);
  ASSERT_FALSE(body.empty());
  EXPECT_NE(body.find("recall_requests_total{code=\"OK\",method=\"Recall\"}"), std::string::npos)
      << body.substr(0, 2000);
  EXPECT_NE(body.find("recall_request_duration_seconds_bucket"), std::string::npos);
  EXPECT_NE(body.find("recall_serving_model_version 1"), std::string::npos);
}

}  // namespace
}  // namespace recall
