// Bad input on a real recall-server child (loopback): a table of malformed requests spread over
// every RPC of RecallService and TrainingService. Each row is a request, the gRPC code it must
// get and a substring naming the offending field that the message must contain; after every
// row the server must still answer grpc.health.v1 Health/Check with SERVING, still answer a
// valid Recall, and its index must be untouched (a refused write changes nothing).
//
// The model is the small synthetic one plus a numeric feature on each side (user "age", item
// "price") next to the categorical ones (user "region", item "category"), so that feature-kind
// mix-ups are real cases.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <google/protobuf/text_format.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "recall/v1/recall.grpc.pb.h"
#include "tests/server/server_process.h"
#include "tests/server/small_model.h"

namespace recall {
namespace {

using testing::Deadline;
using v1::RecallRequest;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr int kTooBig = 5 << 20;  // past gRPC's default 4 MiB receive limit

// A serialized message holding only an unknown length-delimited field (number 15) of n bytes:
// any request type parses it (unknown fields are kept), so it sizes a request of a method whose
// request has no fields.
std::string UnknownFieldBytes(size_t n) {
  std::string out;
  out.push_back(static_cast<char>((15 << 3) | 2));
  for (uint64_t v = n; ; v >>= 7) {
    if (v < 0x80) {
      out.push_back(static_cast<char>(v));
      break;
    }
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
  }
  out.append(n, 'x');
  return out;
}

class BadInputTest : public ::testing::Test {
 protected:
  // Numeric side features with some spread (the trainer standardizes them).
  static void AddNumericFeatures(trainer::Dataset& d) {
    d.user_num_names = {"age"};
    d.user_num_values = {std::vector<float>(d.num_users)};
    for (int64_t u = 0; u < d.num_users; ++u) {
      d.user_num_values[0][u] = 18.0f + static_cast<float>((u * 7) % 50);
    }
    d.item_num_names = {"price"};
    d.item_num_values = {std::vector<float>(d.num_items)};
    for (int64_t i = 0; i < d.num_items; ++i) {
      d.item_num_values[0][i] = 1.0f + 2.5f * static_cast<float>(i % 13);
    }
  }

  static void SetUpTestSuite() {
    model_ = new testing::SmallTrainedModel("recall_bad_input", nullptr, &AddNumericFeatures);
    ASSERT_TRUE(model_->ok());
    dir_ = &model_->dir;
    dataset_ = &model_->dataset;
    auto path = model_->Export(*dir_ + "/models");
    ASSERT_TRUE(path.ok()) << path.status();
    server_ = new testing::ServerProcess();
    // /bin/false as the trainer: a TriggerRetrain row that slipped through validation must
    // not start a real training run.
    ASSERT_TRUE(server_->Start(RECALL_SERVER_BIN, *dir_ + "/models", *dir_,
                               {"--poll_interval_s=0", "--retrain_command=/bin/false"}))
        << "server did not start; see " << server_->log();
  }

  static void TearDownTestSuite() {
    if (server_ != nullptr) server_->Stop();
    delete server_;
    delete model_;  // removes dir_
  }

  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    recall_ = server_->Recall();
    training_ = server_->Training();
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->grpc_port()),
                                   grpc::InsecureChannelCredentials());
  }

  // A Recall that must succeed: user 1 with its history and both kinds of user feature.
  static RecallRequest ValidRecall() {
    RecallRequest req;
    req.set_k(5);
    req.mutable_user()->set_user_id(1);
    for (int64_t i : dataset_->train[1]) req.mutable_user()->add_history_item_ids(i);
    (*req.mutable_user()->mutable_categorical())["region"] = "r1";
    (*req.mutable_user()->mutable_numeric())["age"] = 30.0f;
    return req;
  }

  // Raw bytes to `method` through the generic stub; the reply's bytes go to *reply.
  grpc::Status RawCall(const std::string& method, const std::string& request,
                       std::string* reply = nullptr) {
    grpc::GenericStub stub(channel_);
    grpc::Slice slice(request);
    grpc::ByteBuffer req(&slice, 1), resp;
    auto ctx = Deadline(30);
    std::promise<grpc::Status> done;
    stub.UnaryCall(ctx.get(), method, grpc::StubOptions(), &req, &resp,
                   [&done](grpc::Status s) { done.set_value(std::move(s)); });
    grpc::Status s = done.get_future().get();
    if (reply != nullptr && s.ok()) {
      std::vector<grpc::Slice> slices;
      reply->clear();
      if (resp.Valid() && resp.Dump(&slices).ok()) {
        for (const grpc::Slice& sl : slices) {
          reply->append(reinterpret_cast<const char*>(sl.begin()), sl.size());
        }
      }
    }
    return s;
  }

  // Sends `reqs` on one RecallStream and returns the status it ends with; *answered counts the
  // responses read before that.
  grpc::Status Stream(grpc::ClientContext* ctx, const std::vector<RecallRequest>& reqs,
                      int* answered) {
    auto stream = recall_->RecallStream(ctx);
    for (const RecallRequest& r : reqs) {
      if (!stream->Write(r)) break;  // the server ended the stream already
    }
    stream->WritesDone();
    v1::RecallResponse resp;
    *answered = 0;
    while (stream->Read(&resp)) ++*answered;
    return stream->Finish();
  }

  // The server is healthy: Health/Check says SERVING and a valid Recall is answered.
  void ExpectHealthy() {
    std::string reply;
    grpc::Status h = RawCall("/grpc.health.v1.Health/Check", "", &reply);
    ASSERT_TRUE(h.ok()) << h.error_message();
    EXPECT_EQ(reply, std::string("\x08\x01", 2)) << "HealthCheckResponse.status is not SERVING";
    v1::RecallResponse resp;
    grpc::Status s = recall_->Recall(Deadline().get(), ValidRecall(), &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(resp.items_size(), 5);
  }

  v1::GetIndexInfoResponse IndexInfo() {
    v1::GetIndexInfoResponse info;
    grpc::Status s = recall_->GetIndexInfo(Deadline().get(), {}, &info);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return info;
  }

  static inline testing::SmallTrainedModel* model_ = nullptr;
  static inline const std::string* dir_ = nullptr;
  static inline const trainer::Dataset* dataset_ = nullptr;
  static inline testing::ServerProcess* server_ = nullptr;
  std::unique_ptr<v1::RecallService::Stub> recall_;
  std::unique_ptr<v1::TrainingService::Stub> training_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(BadInputTest, EveryMalformedRequestIsRefusedNamingTheFieldAndTheServerStaysUp) {
  ExpectHealthy();
  const v1::GetIndexInfoResponse info = IndexInfo();
  const int dim = info.dim();
  const int64_t version = info.model_version();
  ASSERT_GT(dim, 0);
  ASSERT_EQ(version, 1);
  // The spec has what the kind cases below rely on.
  ASSERT_EQ(info.feature_spec().user_categorical(0).name(), "region");
  ASSERT_EQ(info.feature_spec().user_numeric(0).name(), "age");
  ASSERT_EQ(info.feature_spec().item_categorical(0).name(), "category");
  ASSERT_EQ(info.feature_spec().item_numeric(0).name(), "price");

  // --- request builders ---
  auto recall = [&](std::function<void(RecallRequest&)> edit) {
    return [this, edit](grpc::ClientContext* c) {
      RecallRequest req = ValidRecall();
      edit(req);
      v1::RecallResponse resp;
      return recall_->Recall(c, req, &resp);
    };
  };
  // A stream of `good_first` valid requests, then the edited one, then another valid one that
  // must never be answered: the bad request ends the stream with its status.
  auto stream = [&](int good_first, std::function<void(RecallRequest&)> edit) {
    return [this, good_first, edit](grpc::ClientContext* c) {
      std::vector<RecallRequest> reqs(good_first, ValidRecall());
      reqs.push_back(ValidRecall());
      edit(reqs.back());
      reqs.push_back(ValidRecall());
      int answered = 0;
      grpc::Status s = Stream(c, reqs, &answered);
      EXPECT_EQ(answered, good_first) << "responses before the bad request";
      return s;
    };
  };
  auto features = [](int64_t id) {
    v1::ItemUpsert u;
    u.mutable_features()->set_item_id(id);
    (*u.mutable_features()->mutable_categorical())["category"] = "c1";
    (*u.mutable_features()->mutable_numeric())["price"] = 3.5f;
    return u;
  };
  auto unit_vector = [dim, version](int64_t id) {
    v1::ItemUpsert u;
    u.mutable_vector()->set_item_id(id);
    u.mutable_vector()->set_model_version(version);
    for (int d = 0; d < dim; ++d) {
      u.mutable_vector()->add_values(1.0f / std::sqrt(static_cast<float>(dim)));
    }
    return u;
  };
  auto upsert = [&](std::vector<v1::ItemUpsert> items) {
    return [this, items](grpc::ClientContext* c) {
      v1::UpsertItemsRequest req;
      for (const auto& u : items) *req.add_items() = u;
      v1::UpsertItemsResponse resp;
      return recall_->UpsertItems(c, req, &resp);
    };
  };
  auto del = [&](std::vector<int64_t> ids) {
    return [this, ids](grpc::ClientContext* c) {
      v1::DeleteItemsRequest req;
      for (int64_t id : ids) req.add_item_ids(id);
      v1::DeleteItemsResponse resp;
      return recall_->DeleteItems(c, req, &resp);
    };
  };
  // `config`: TrainConfig overrides as textproto; `flags`: the replaced flag map.
  auto retrain = [&](std::string dataset, std::string config = "",
                     std::map<std::string, std::string> flags = {}, std::string preset = "") {
    return [this, dataset, config, flags, preset](grpc::ClientContext* c) {
      v1::TriggerRetrainRequest req;
      req.set_dataset(dataset);
      req.set_preset(preset);
      EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(config, req.mutable_config()));
      for (const auto& [k, v] : flags) (*req.mutable_overrides())[k] = v;
      v1::TriggerRetrainResponse resp;
      return training_->TriggerRetrain(c, req, &resp);
    };
  };
  auto raw = [&](std::string method, size_t bytes) {
    return [this, method, bytes](grpc::ClientContext*) {
      return RawCall(method, UnknownFieldBytes(bytes));
    };
  };
  auto with_vector = [&](std::function<void(v1::RawVector&)> edit) {
    v1::ItemUpsert u = unit_vector(dataset_->num_items + 1);
    edit(*u.mutable_vector());
    return upsert({u});
  };
  auto with_features = [&](std::function<void(v1::ItemFeatures&)> edit) {
    v1::ItemUpsert u = features(dataset_->num_items + 1);
    edit(*u.mutable_features());
    return upsert({u});
  };

  using grpc::StatusCode;
  const StatusCode kInvalid = StatusCode::INVALID_ARGUMENT;
  struct Row {
    std::string name;
    std::function<grpc::Status(grpc::ClientContext*)> call;
    StatusCode code;
    std::string field;  // must appear in the status message
  };
  const std::vector<Row> rows = {
      // ---- Recall ----
      {"Recall k = 0", recall([](auto& r) { r.set_k(0); }), kInvalid, "k:"},
      {"Recall k < 0", recall([](auto& r) { r.set_k(-3); }), kInvalid, "k:"},
      {"Recall k > max_k", recall([](auto& r) { r.set_k(1001); }), kInvalid, "k:"},
      {"Recall history too long",
       recall([](auto& r) {
         r.mutable_user()->clear_history_item_ids();
         for (int i = 0; i < 1001; ++i) r.mutable_user()->add_history_item_ids(i % 300);
       }),
       kInvalid, "user.history_item_ids:"},
      {"Recall history holds the reserved id -1",
       recall([](auto& r) { r.mutable_user()->set_history_item_ids(1, -1); }), kInvalid,
       "user.history_item_ids[1]"},
      {"Recall too many excludes",
       recall([](auto& r) {
         for (int i = 0; i < 10001; ++i) r.add_exclude_item_ids(i);
       }),
       kInvalid, "exclude_item_ids:"},
      {"Recall excludes the reserved id -1",
       recall([](auto& r) {
         r.add_exclude_item_ids(3);
         r.add_exclude_item_ids(-1);
       }),
       kInvalid, "exclude_item_ids[1]"},
      {"Recall unknown categorical feature",
       recall([](auto& r) { (*r.mutable_user()->mutable_categorical())["colour"] = "red"; }),
       kInvalid, "user.categorical[\"colour\"]"},
      {"Recall unknown numeric feature",
       recall([](auto& r) { (*r.mutable_user()->mutable_numeric())["height"] = 1.8f; }),
       kInvalid, "user.numeric[\"height\"]"},
      {"Recall numeric feature sent as categorical",
       recall([](auto& r) { (*r.mutable_user()->mutable_categorical())["age"] = "30"; }),
       kInvalid, "user.categorical[\"age\"]: \"age\" is a numeric feature"},
      {"Recall categorical feature sent as numeric",
       recall([](auto& r) { (*r.mutable_user()->mutable_numeric())["region"] = 1.0f; }),
       kInvalid, "user.numeric[\"region\"]: \"region\" is a categorical feature"},
      {"Recall item feature sent as a user feature",
       recall([](auto& r) { (*r.mutable_user()->mutable_categorical())["category"] = "c1"; }),
       kInvalid, "user.categorical[\"category\"]"},
      {"Recall numeric NaN",
       recall([](auto& r) { (*r.mutable_user()->mutable_numeric())["age"] = kNaN; }), kInvalid,
       "user.numeric[\"age\"]: must be finite"},
      {"Recall numeric +Inf",
       recall([](auto& r) { (*r.mutable_user()->mutable_numeric())["age"] = kInf; }), kInvalid,
       "user.numeric[\"age\"]: must be finite"},
      {"Recall numeric -Inf",
       recall([](auto& r) { (*r.mutable_user()->mutable_numeric())["age"] = -kInf; }), kInvalid,
       "user.numeric[\"age\"]: must be finite"},
      {"Recall request_id too long",
       recall([](auto& r) { r.set_request_id(std::string(2000, 'r')); }), kInvalid,
       "request_id:"},
      {"Recall oversized message",
       recall([](auto& r) { r.set_request_id(std::string(kTooBig, 'r')); }),
       StatusCode::RESOURCE_EXHAUSTED, "larger than max"},
      // ---- RecallStream: a bad request ends the stream with its status ----
      {"RecallStream first request k = 0", stream(0, [](auto& r) { r.set_k(0); }), kInvalid,
       "k:"},
      {"RecallStream second request numeric NaN",
       stream(1, [](auto& r) { (*r.mutable_user()->mutable_numeric())["age"] = kNaN; }),
       kInvalid, "user.numeric[\"age\"]"},
      {"RecallStream third request unknown feature",
       stream(2, [](auto& r) { (*r.mutable_user()->mutable_categorical())["colour"] = "x"; }),
       kInvalid, "user.categorical[\"colour\"]"},
      {"RecallStream excludes the reserved id",
       stream(1, [](auto& r) { r.add_exclude_item_ids(-1); }), kInvalid, "exclude_item_ids[0]"},
      {"RecallStream oversized message",
       stream(1, [](auto& r) { r.set_request_id(std::string(kTooBig, 'r')); }),
       StatusCode::RESOURCE_EXHAUSTED, "larger than max"},
      // ---- UpsertItems ----
      {"UpsertItems no items", upsert({}), kInvalid, "items: empty"},
      {"UpsertItems too many items",
       [&](grpc::ClientContext* c) {
         v1::UpsertItemsRequest req;
         for (int i = 0; i < 10001; ++i) *req.add_items() = features(100000 + i);
         v1::UpsertItemsResponse resp;
         return recall_->UpsertItems(c, req, &resp);
       },
       kInvalid, "items:"},
      {"UpsertItems item with no payload", upsert({features(5000), v1::ItemUpsert()}), kInvalid,
       "items[1]: needs a payload"},
      {"UpsertItems features with the reserved id -1", upsert({features(-1)}), kInvalid,
       "items[0].features.item_id"},
      {"UpsertItems vector with the reserved id -1", upsert({features(5000), unit_vector(-1)}),
       kInvalid, "items[1].vector.item_id"},
      {"UpsertItems duplicate id", upsert({features(5000), features(5001), features(5000)}),
       kInvalid, "items[2].features.item_id: 5000 appears twice"},
      {"UpsertItems duplicate id across payload kinds", upsert({features(5000), unit_vector(5000)}),
       kInvalid, "items[1].vector.item_id"},
      {"UpsertItems unknown categorical feature",
       with_features([](auto& f) { (*f.mutable_categorical())["colour"] = "red"; }), kInvalid,
       "items[0].features.categorical[\"colour\"]"},
      {"UpsertItems unknown numeric feature",
       with_features([](auto& f) { (*f.mutable_numeric())["weight"] = 2.0f; }), kInvalid,
       "items[0].features.numeric[\"weight\"]"},
      {"UpsertItems numeric feature sent as categorical",
       with_features([](auto& f) { (*f.mutable_categorical())["price"] = "cheap"; }), kInvalid,
       "items[0].features.categorical[\"price\"]: \"price\" is a numeric feature"},
      {"UpsertItems categorical feature sent as numeric",
       with_features([](auto& f) { (*f.mutable_numeric())["category"] = 2.0f; }), kInvalid,
       "items[0].features.numeric[\"category\"]: \"category\" is a categorical feature"},
      {"UpsertItems user feature on an item",
       with_features([](auto& f) { (*f.mutable_numeric())["age"] = 30.0f; }), kInvalid,
       "items[0].features.numeric[\"age\"]"},
      {"UpsertItems numeric NaN",
       with_features([](auto& f) { (*f.mutable_numeric())["price"] = kNaN; }), kInvalid,
       "items[0].features.numeric[\"price\"]: must be finite"},
      {"UpsertItems numeric Inf, third item",
       [&] {
         v1::ItemUpsert bad = features(5002);
         (*bad.mutable_features()->mutable_numeric())["price"] = -kInf;
         return upsert({features(5000), features(5001), bad});
       }(),
       kInvalid, "items[2].features.numeric[\"price\"]"},
      {"UpsertItems vector of another model version",
       with_vector([&](auto& v) { v.set_model_version(version + 1); }), kInvalid,
       "items[0].vector.model_version"},
      {"UpsertItems vector with version 0", with_vector([](auto& v) { v.set_model_version(0); }),
       kInvalid, "items[0].vector.model_version"},
      {"UpsertItems vector one value short",
       with_vector([&](auto& v) { v.mutable_values()->RemoveLast(); }), kInvalid,
       "items[0].vector.values: " + std::to_string(dim - 1) + " values, the model's dim is " +
           std::to_string(dim)},
      {"UpsertItems vector one value long", with_vector([](auto& v) { v.add_values(0.0f); }),
       kInvalid, "items[0].vector.values:"},
      {"UpsertItems vector with no values", with_vector([](auto& v) { v.clear_values(); }),
       kInvalid, "items[0].vector.values:"},
      {"UpsertItems vector NaN", with_vector([](auto& v) { v.set_values(3, kNaN); }), kInvalid,
       "items[0].vector.values[3]: must be finite"},
      {"UpsertItems vector Inf", with_vector([](auto& v) { v.set_values(0, kInf); }), kInvalid,
       "items[0].vector.values[0]"},
      {"UpsertItems vector not normalized",
       with_vector([](auto& v) {
         for (float& x : *v.mutable_values()) x *= 2.0f;
       }),
       kInvalid, "items[0].vector.values: L2 norm"},
      {"UpsertItems vector slightly off the unit sphere",
       with_vector([](auto& v) {
         for (float& x : *v.mutable_values()) x *= 1.01f;
       }),
       kInvalid, "items[0].vector.values: L2 norm"},
      {"UpsertItems zero vector",
       with_vector([](auto& v) {
         for (float& x : *v.mutable_values()) x = 0.0f;
       }),
       kInvalid, "items[0].vector.values: L2 norm"},
      {"UpsertItems oversized message",
       with_vector([](auto& v) {
         for (int i = 0; i < kTooBig / 4; ++i) v.add_values(0.0f);
       }),
       StatusCode::RESOURCE_EXHAUSTED, "larger than max"},
      // ---- DeleteItems ----
      {"DeleteItems no ids", del({}), kInvalid, "item_ids: empty"},
      {"DeleteItems too many ids", del(std::vector<int64_t>(10001, 7)), kInvalid, "item_ids:"},
      {"DeleteItems the reserved id -1", del({-1}), kInvalid, "item_ids[0]"},
      {"DeleteItems the reserved id after others", del({3, 4, -1}), kInvalid, "item_ids[2]"},
      {"DeleteItems duplicate id", del({3, 4, 3}), kInvalid,
       "item_ids[2]: 3 appears twice in one request (also item_ids[0])"},
      // ---- GetIndexInfo (no fields: only the size of what is sent can be wrong) ----
      {"GetIndexInfo oversized message", raw("/recall.v1.RecallService/GetIndexInfo", kTooBig),
       StatusCode::RESOURCE_EXHAUSTED, "larger than max"},
      // ---- TriggerRetrain ----
      {"TriggerRetrain empty dataset", retrain(""), kInvalid, "dataset: empty"},
      {"TriggerRetrain unknown dataset", retrain("movielens"), kInvalid,
       "dataset: unknown dataset"},
      {"TriggerRetrain dataset kind without a path", retrain("lightgcn:"), kInvalid,
       "dataset: 'lightgcn:' names no path"},
      {"TriggerRetrain dataset path with shell characters",
       retrain("lightgcn:/data; rm -rf /"), kInvalid, "dataset:"},
      {"TriggerRetrain unknown preset", retrain("synthetic", "", {}, "nope"), kInvalid,
       "preset: unknown preset 'nope' (presets: default, gowalla, smoke)"},
      {"TriggerRetrain old flag map names the typed field", retrain("synthetic", "", {{"lr", "0.01"}}),
       kInvalid, "overrides[\"lr\"]: trainer flags were replaced by the typed `config` (set "
                 "config.learning_rate instead"},
      {"TriggerRetrain old flag map with a run flag", retrain("synthetic", "", {{"model_base", "/etc"}}),
       kInvalid, "overrides[\"model_base\"]: trainer flags were replaced by the typed `config` "
                 "(no training option has this name"},
      {"TriggerRetrain override of the serving contract", retrain("synthetic", "tower { l2_normalize: false }"),
       kInvalid, "config.tower.l2_normalize: not overridable in TriggerRetrain"},
      {"TriggerRetrain override of a benchmark knob", retrain("synthetic", "max_steps: 5"),
       kInvalid, "config.max_steps: not overridable in TriggerRetrain"},
      {"TriggerRetrain batch of 1", retrain("synthetic", "batch_size: 1"), kInvalid,
       "config: batch_size must be >= 2"},
      {"TriggerRetrain temperature 0", retrain("synthetic", "temperature: 0"), kInvalid,
       "config: temperature must be > 0"},
      {"TriggerRetrain momentum above 1", retrain("synthetic", "momentum: 1.5"), kInvalid,
       "config: momentum must be in [0, 1]"},
      {"TriggerRetrain test fraction above 1", retrain("synthetic", "test_fraction: 1.5"),
       kInvalid, "config: test_fraction must be in (0, 1)"},
      {"TriggerRetrain ccl without global negatives", retrain("synthetic", "loss: CCL"),
       kInvalid, "config: loss ccl needs global_negatives > 0"},
      // ---- GetRetrainJob ----
      {"GetRetrainJob unknown job id",
       [&](grpc::ClientContext* c) {
         v1::GetRetrainJobRequest req;
         req.set_job_id("20990101-000000-42");
         v1::RetrainJob resp;
         return training_->GetRetrainJob(c, req, &resp);
       },
       StatusCode::NOT_FOUND, "job_id: no job '20990101-000000-42'"},
      {"GetRetrainJob latest job before any ran",
       [&](grpc::ClientContext* c) {
         v1::RetrainJob resp;
         return training_->GetRetrainJob(c, v1::GetRetrainJobRequest(), &resp);
       },
       StatusCode::NOT_FOUND, "job_id:"},
      {"GetRetrainJob huge job id is not echoed whole",
       [&](grpc::ClientContext* c) {
         v1::GetRetrainJobRequest req;
         req.set_job_id(std::string(100000, 'j'));
         v1::RetrainJob resp;
         grpc::Status s = training_->GetRetrainJob(c, req, &resp);
         EXPECT_LT(s.error_message().size(), 1000u);
         return s;
       },
       StatusCode::NOT_FOUND, "job_id: no job"},
      // ---- CancelRetrain ----
      {"CancelRetrain unknown job id",
       [&](grpc::ClientContext* c) {
         v1::CancelRetrainRequest req;
         req.set_job_id("no-such-job");
         v1::CancelRetrainResponse resp;
         return training_->CancelRetrain(c, req, &resp);
       },
       StatusCode::NOT_FOUND, "job_id: no job 'no-such-job'"},
      {"CancelRetrain latest job before any ran",
       [&](grpc::ClientContext* c) {
         v1::CancelRetrainResponse resp;
         return training_->CancelRetrain(c, v1::CancelRetrainRequest(), &resp);
       },
       StatusCode::NOT_FOUND, "job_id:"},
      // ---- ListVersions (no fields) ----
      {"ListVersions oversized message", raw("/recall.v1.TrainingService/ListVersions", kTooBig),
       StatusCode::RESOURCE_EXHAUSTED, "larger than max"},
      // ---- SetServingVersion ----
      {"SetServingVersion negative",
       [&](grpc::ClientContext* c) {
         v1::SetServingVersionRequest req;
         req.set_version(-1);
         v1::SetServingVersionResponse resp;
         return training_->SetServingVersion(c, req, &resp);
       },
       kInvalid, "version: must be >= 0"},
      {"SetServingVersion unknown version",
       [&](grpc::ClientContext* c) {
         v1::SetServingVersionRequest req;
         req.set_version(999);
         v1::SetServingVersionResponse resp;
         return training_->SetServingVersion(c, req, &resp);
       },
       StatusCode::NOT_FOUND, "version: 999"},
      // ---- ReloadVersions (no fields) ----
      {"ReloadVersions oversized message",
       raw("/recall.v1.TrainingService/ReloadVersions", kTooBig), StatusCode::RESOURCE_EXHAUSTED,
       "larger than max"},
  };
  ASSERT_GE(rows.size(), 40u);

  for (const Row& row : rows) {
    SCOPED_TRACE(row.name);
    grpc::Status s = row.call(Deadline(60).get());
    EXPECT_EQ(s.error_code(), row.code) << s.error_message();
    EXPECT_NE(s.error_message().find(row.field), std::string::npos)
        << "message: " << s.error_message() << "\nwant: " << row.field;
    ExpectHealthy();
    // A refused request changed nothing: same index generation, same items, same version.
    const v1::GetIndexInfoResponse now = IndexInfo();
    EXPECT_EQ(now.index_generation(), info.index_generation());
    EXPECT_EQ(now.num_items(), info.num_items());
    EXPECT_EQ(now.model_version(), version);
  }
}

// Ids other than -1 are ordinary item ids, negative ones included: the index and the generic
// interactions format allow any int64 but FAISS's "no result" -1.
// TriggerRetrain resolves a preset and typed overrides through the same library as
// recall-train: the job's resolved config equals `recall-train --print_config` for the same
// preset and options (no training: the server's trainer here is /bin/false). A field not
// marked (retrain_override) is refused, naming it.
TEST_F(BadInputTest, RetrainResolvesThePresetExactlyAsRecallTrainDoes) {
  struct Case {
    std::string preset, overrides;
    std::vector<std::string> train_flags;
  };
  const Case cases[] = {
      {"gowalla", "", {"--preset=gowalla"}},
      {"smoke", "epochs: 7 logq_weight: 1.5 tower { dim: 24 pooling: SQRT }",
       {"--preset=smoke", "--epochs=7", "--logq_weight=1.5", "--dim=24", "--pooling=sqrt"}},
      {"", "ensemble: 2", {"--ensemble=2"}},  // no preset: `default`, as recall-train
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.preset + " / " + c.overrides);
    v1::TriggerRetrainRequest req;
    req.set_dataset("synthetic");
    req.set_preset(c.preset);
    ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(c.overrides, req.mutable_config()));
    v1::TriggerRetrainResponse resp;
    {
      grpc::ClientContext ctx;
      ASSERT_TRUE(training_->TriggerRetrain(&ctx, req, &resp).ok());
    }
    v1::RetrainJob job;
    for (int i = 0; i < 600; ++i) {  // /bin/false ends at once; one job at a time
      grpc::ClientContext ctx;
      v1::GetRetrainJobRequest get;
      get.set_job_id(resp.job_id());
      ASSERT_TRUE(training_->GetRetrainJob(&ctx, get, &job).ok());
      if (job.state() != v1::QUEUED && job.state() != v1::RUNNING) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_EQ(job.state(), v1::FAILED) << "the /bin/false trainer";
    EXPECT_EQ(job.preset(), c.preset.empty() ? "default" : c.preset);

    std::vector<std::string> argv = {RECALL_TRAIN_BIN, "--print_config"};
    argv.insert(argv.end(), c.train_flags.begin(), c.train_flags.end());
    std::string printed;
    ASSERT_EQ(testing::RunCommand(argv, &printed), 0) << printed;
    v1::TrainConfig from_cli;
    ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(printed, &from_cli)) << printed;
    std::string diff;
    google::protobuf::util::MessageDifferencer d;
    d.ReportDifferencesToString(&diff);
    EXPECT_TRUE(d.Compare(from_cli, job.config())) << diff;
    EXPECT_TRUE(job.config().has_momentum()) << "resolved: every field set";
  }
  v1::TriggerRetrainRequest req;
  req.set_dataset("synthetic");
  req.set_preset("gowalla");
  req.mutable_config()->set_epochs(3);
  req.mutable_config()->mutable_tower()->set_init_std(0.5f);
  v1::TriggerRetrainResponse resp;
  grpc::ClientContext ctx;
  const grpc::Status refused = training_->TriggerRetrain(&ctx, req, &resp);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(refused.error_message().rfind("config.tower.init_std: not overridable", 0), 0u)
      << refused.error_message();
}

TEST_F(BadInputTest, NegativeIdsOtherThanMinusOneAreItemIds) {
  v1::UpsertItemsRequest up;
  auto* f = up.add_items()->mutable_features();
  f->set_item_id(-7);
  (*f->mutable_categorical())["category"] = "c2";
  (*f->mutable_numeric())["price"] = 4.0f;
  v1::UpsertItemsResponse up_resp;
  grpc::Status s = recall_->UpsertItems(Deadline().get(), up, &up_resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(up_resp.upserted(), 1);

  RecallRequest req = ValidRecall();
  req.add_exclude_item_ids(-7);
  req.mutable_user()->add_history_item_ids(-12345);  // unknown: the OOV row, not an error
  req.mutable_user()->set_user_id(-3);               // unknown user: the OOV row
  v1::RecallResponse resp;
  s = recall_->Recall(Deadline().get(), req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  for (const auto& item : resp.items()) EXPECT_NE(item.item_id(), -7);

  v1::DeleteItemsRequest d;
  d.add_item_ids(-7);
  v1::DeleteItemsResponse d_resp;
  s = recall_->DeleteItems(Deadline().get(), d, &d_resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(d_resp.deleted(), 1);
  ExpectHealthy();
}

// recall-train refuses a malformed dataset: non-zero exit, and the loader's "path:line: what"
// on its output, for each dataset kind (the loaders' cases are in tests/trainer/dataset_test).
TEST(RecallTrainBadInputTest, MalformedDatasetExitsNonZeroNamingFileAndLine) {
  const std::string dir = testing::FreshTempDir("recall_bad_dataset");
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir + "/" + name, std::ios::binary) << text;
  };
  write("train.txt", "0 1 2\n1 2 x3\n");
  write("test.txt", "0 3\n1 1\n");
  write("ev.csv", "user,item\n1,2\n1,-1\n");
  write("empty.csv", "");
  struct Case {
    std::string dataset, want;
  };
  for (const Case& c : std::vector<Case>{
           {"lightgcn:" + dir, dir + "/train.txt:2: invalid item id 'x3'"},
           {"dir:" + dir, dir + "/train.txt:2: invalid item id 'x3'"},
           {"interactions:" + dir + "/ev.csv", dir + "/ev.csv:3: item id -1 is reserved"},
           {"interactions:" + dir + "/empty.csv", dir + "/empty.csv: empty file"}}) {
    SCOPED_TRACE(c.dataset);
    std::string out;
    const int rc = testing::RunCommand(
        {RECALL_TRAIN_BIN, "--preset=smoke", "--dataset=" + c.dataset, "--epochs=1", "--progress=none",
         "--threads=1"},
        &out);
    EXPECT_NE(rc, 0) << out;
    EXPECT_LT(rc, 128) << "killed by a signal: " << out;
    EXPECT_NE(out.find("error: " + c.want), std::string::npos) << out;
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace recall
