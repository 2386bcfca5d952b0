// Bearer tokens on a real recall-server child (loopback): every admin RPC without a token,
// with a wrong one, with the read-only one and with the admin one; Recall and RecallStream
// behind the read token; a retrain override outside the allowlist refused.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "tests/server/server_process.h"
#include "tests/server/small_model.h"

namespace recall {
namespace {

using testing::Deadline;

class SecurityTest : public testing::SmallModelSuite<SecurityTest> {
 public:
  static constexpr char kTempName[] = "recall_security";

 protected:
  static void SetUpTestSuite() {
    SmallModelSuite::SetUpTestSuite();
    auto path = model_->Export(*dir_ + "/models");
    ASSERT_TRUE(path.ok()) << path.status();
    std::ofstream(*dir_ + "/admin.token") << "admin-token-0123456789\n";
    std::ofstream(*dir_ + "/read.token") << "read-token-abcdef\n";
    server_ = new testing::ServerProcess();
    ASSERT_TRUE(server_->Start(RECALL_SERVER_BIN, *dir_ + "/models", *dir_,
                               {"--poll_interval_s=0", "--admin_token_file=" + *dir_ + "/admin.token",
                                "--recall_token_file=" + *dir_ + "/read.token"}))
        << "server did not start";
  }
  static void TearDownTestSuite() {
    if (server_ != nullptr) server_->Stop();
    delete server_;
    server_ = nullptr;
    SmallModelSuite::TearDownTestSuite();
  }

  // A context carrying `token` (empty: no authorization header at all).
  static std::unique_ptr<grpc::ClientContext> As(const std::string& token) {
    auto ctx = Deadline(30);
    if (!token.empty()) ctx->AddMetadata("authorization", "Bearer " + token);
    return ctx;
  }

  static v1::RecallRequest ValidRecall() {
    v1::RecallRequest req;
    req.set_k(5);
    req.mutable_user()->set_user_id(1);
    for (int64_t i : dataset_->train[1]) req.mutable_user()->add_history_item_ids(i);
    return req;
  }

  static inline testing::ServerProcess* server_ = nullptr;
};

constexpr char kAdmin[] = "admin-token-0123456789";
constexpr char kRead[] = "read-token-abcdef";

TEST_F(SecurityTest, AdminRpcsNeedTheAdminToken) {
  auto recall = server_->Recall();
  auto training = server_->Training();
  // Each admin RPC once per credential; `ok_code` is what the admin token gets (the request
  // itself may be refused after authorization, which proves it got past the check).
  struct Rpc {
    const char* name;
    std::function<grpc::Status(grpc::ClientContext*)> call;
    grpc::StatusCode ok_code;
  };
  const std::vector<Rpc> rpcs = {
      {"UpsertItems",
       [&](grpc::ClientContext* c) {
         v1::UpsertItemsRequest req;
         auto* item = req.add_items();
         item->mutable_features()->set_item_id(dataset_->num_items + 5);
         v1::UpsertItemsResponse resp;
         return recall->UpsertItems(c, req, &resp);
       },
       grpc::StatusCode::OK},
      {"DeleteItems",
       [&](grpc::ClientContext* c) {
         v1::DeleteItemsRequest req;
         req.add_item_ids(dataset_->num_items + 5);
         v1::DeleteItemsResponse resp;
         return recall->DeleteItems(c, req, &resp);
       },
       grpc::StatusCode::OK},
      {"SetServingVersion",
       [&](grpc::ClientContext* c) {
         v1::SetServingVersionRequest req;
         req.set_version(0);
         v1::SetServingVersionResponse resp;
         return training->SetServingVersion(c, req, &resp);
       },
       grpc::StatusCode::OK},
      {"ReloadVersions",
       [&](grpc::ClientContext* c) {
         v1::ListVersionsResponse resp;
         return training->ReloadVersions(c, v1::ReloadVersionsRequest(), &resp);
       },
       grpc::StatusCode::OK},
      {"CancelRetrain",
       [&](grpc::ClientContext* c) {
         v1::CancelRetrainRequest req;
         req.set_job_id("no-such-job");
         v1::CancelRetrainResponse resp;
         return training->CancelRetrain(c, req, &resp);
       },
       grpc::StatusCode::NOT_FOUND},
      {"TriggerRetrain (override outside the allowlist)",
       [&](grpc::ClientContext* c) {
         v1::TriggerRetrainRequest req;
         req.set_dataset("synthetic");
         (*req.mutable_overrides())["model_base"] = "/etc";
         v1::TriggerRetrainResponse resp;
         return training->TriggerRetrain(c, req, &resp);
       },
       grpc::StatusCode::INVALID_ARGUMENT},
  };
  for (const Rpc& rpc : rpcs) {
    SCOPED_TRACE(rpc.name);
    grpc::Status none = rpc.call(As("").get());
    EXPECT_EQ(none.error_code(), grpc::StatusCode::UNAUTHENTICATED) << none.error_message();
    EXPECT_NE(none.error_message().find("authorization"), std::string::npos);
    EXPECT_EQ(rpc.call(As("wrong-token").get()).error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_EQ(rpc.call(As(kRead).get()).error_code(), grpc::StatusCode::PERMISSION_DENIED);
    grpc::Status right = rpc.call(As(kAdmin).get());
    EXPECT_EQ(right.error_code(), rpc.ok_code) << right.error_message();
  }
}

TEST_F(SecurityTest, RecallAndStreamNeedTheReadOrAdminToken) {
  auto recall = server_->Recall();
  v1::RecallResponse resp;
  EXPECT_EQ(recall->Recall(As("").get(), ValidRecall(), &resp).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(recall->Recall(As("nope").get(), ValidRecall(), &resp).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  for (const char* token : {kRead, kAdmin}) {
    resp.Clear();
    grpc::Status s = recall->Recall(As(token).get(), ValidRecall(), &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(resp.items_size(), 5);
  }
  for (const std::string token : {"", "nope"}) {
    auto ctx = As(token);
    auto stream = recall->RecallStream(ctx.get());
    stream->Write(ValidRecall());
    stream->WritesDone();
    v1::RecallResponse r;
    EXPECT_FALSE(stream->Read(&r));
    EXPECT_EQ(stream->Finish().error_code(), token.empty() ? grpc::StatusCode::UNAUTHENTICATED
                                                           : grpc::StatusCode::PERMISSION_DENIED);
  }
  auto ctx = As(kRead);
  auto stream = recall->RecallStream(ctx.get());
  ASSERT_TRUE(stream->Write(ValidRecall()));
  stream->WritesDone();
  v1::RecallResponse r;
  ASSERT_TRUE(stream->Read(&r));
  EXPECT_EQ(r.items_size(), 5);
  EXPECT_TRUE(stream->Finish().ok());
}

}  // namespace
}  // namespace recall
