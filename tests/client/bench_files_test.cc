// The request and exact top-K files of the load generators (client/bench_files.h): round trips,
// damaged files, the recall@k scoring, and RunBench's JSON (client/bench_run.h) against an
// in-process fake target. No network, no model.
#include "client/bench_files.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "client/bench_run.h"

namespace recall::bench {
namespace {

using recall::v1::RecallRequest;
using recall::v1::RecallResponse;

class BenchFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("bench_files_test_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  std::filesystem::path dir_;
};

RecallResponse Answer(const std::string& request_id, std::vector<std::pair<int64_t, float>> items) {
  RecallResponse r;
  r.set_request_id(request_id);
  r.set_model_version(7);
  for (auto [id, score] : items) {
    auto* it = r.add_items();
    it->set_item_id(id);
    it->set_score(score);
  }
  return r;
}

TEST_F(BenchFilesTest, RequestsAndAnswersRoundTrip) {
  std::vector<RecallRequest> reqs = MakeRequests(50, {1, 2, 3, 400000000000}, 1000, 0, 30, 10, 5);
  reqs[3].add_exclude_item_ids(2);
  reqs[3].set_exclude_history(true);
  (*reqs[4].mutable_user()->mutable_categorical())["region"] = "r\n\x01";  // any bytes
  (*reqs[4].mutable_user()->mutable_numeric())["age"] = 31.5f;
  std::vector<RecallResponse> exact;
  for (int i = 0; i < 20; ++i) {
    exact.push_back(Answer(reqs[i].request_id(), {{i, 0.9f}, {i + 1, 0.5f}}));
    exact.back().add_user_embedding(0.6f);
    exact.back().add_user_embedding(0.8f);
  }
  ASSERT_TRUE(WriteRequestFile(Path("r.bin"), reqs).ok());
  ASSERT_TRUE(WriteTopKFile(Path("t.bin"), exact).ok());
  auto r = ReadRequestFile(Path("r.bin"));
  auto t = ReadTopKFile(Path("t.bin"));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(r->size(), reqs.size());
  ASSERT_EQ(t->size(), exact.size());
  for (size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_EQ((*r)[i].SerializeAsString(), reqs[i].SerializeAsString()) << i;
  }
  for (size_t i = 0; i < exact.size(); ++i) {
    EXPECT_EQ((*t)[i].SerializeAsString(), exact[i].SerializeAsString()) << i;
  }
  EXPECT_TRUE(CheckTopKMatchesRequests(*r, *t).ok());

  // Empty lists make empty files and back.
  ASSERT_TRUE(WriteRequestFile(Path("empty.bin"), {}).ok());
  EXPECT_EQ(std::filesystem::file_size(Path("empty.bin")), 0u);
  auto empty = ReadRequestFile(Path("empty.bin"));
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

// The framing is protobuf's delimited one: a varint length, then the message.
TEST_F(BenchFilesTest, FramingIsVarintLengthThenMessage) {
  RecallRequest a;
  a.set_k(3);
  a.set_request_id(std::string(200, 'x'));  // a 2-byte varint length
  ASSERT_TRUE(WriteRequestFile(Path("r.bin"), {a}).ok());
  std::ifstream in(Path("r.bin"), std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string body = a.SerializeAsString();
  ASSERT_GE(body.size(), 128u);
  ASSERT_EQ(bytes.size(), body.size() + 2);
  const size_t len = (static_cast<uint8_t>(bytes[0]) & 0x7f) |
                     (static_cast<size_t>(static_cast<uint8_t>(bytes[1])) << 7);
  EXPECT_TRUE(static_cast<uint8_t>(bytes[0]) & 0x80);
  EXPECT_EQ(len, body.size());
  EXPECT_EQ(bytes.substr(2), body);
}

TEST_F(BenchFilesTest, DamagedAndMissingFilesAreErrors) {
  EXPECT_EQ(ReadRequestFile(Path("missing.bin")).status().code(), absl::StatusCode::kNotFound);
  std::vector<RecallRequest> reqs = MakeRequests(3, {1, 2}, 10, 5, 5, 10, 1);
  ASSERT_TRUE(WriteRequestFile(Path("r.bin"), reqs).ok());
  const auto size = std::filesystem::file_size(Path("r.bin"));
  std::filesystem::resize_file(Path("r.bin"), size - 3);  // the last message cut short
  auto r = ReadRequestFile(Path("r.bin"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find("message 2"), std::string::npos) << r.status();
}

TEST(CheckTopKMatchesRequests, NamesTheFirstMismatch) {
  std::vector<RecallRequest> reqs = MakeRequests(3, {1}, 10, 1, 1, 5, 1);
  std::vector<RecallResponse> exact = {Answer(reqs[0].request_id(), {}), Answer("other", {})};
  auto s = CheckTopKMatchesRequests(reqs, exact);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("answer 1"), std::string::npos) << s;
  exact.resize(1);
  EXPECT_TRUE(CheckTopKMatchesRequests(reqs, exact).ok());  // a prefix is fine
  exact = {Answer(reqs[0].request_id(), {}), Answer(reqs[1].request_id(), {}),
           Answer(reqs[2].request_id(), {}), Answer("x", {})};
  EXPECT_FALSE(CheckTopKMatchesRequests(reqs, exact).ok());  // more answers than requests
}

TEST(ScoreAnswer, TiesAtTheBoundaryCountByScoreNotById) {
  // Exact top 3: 10, 11, 12; 13 ties with 12 (within the tolerance) and follows it in the file.
  const RecallResponse exact = Answer("a", {{10, 0.9f}, {11, 0.8f}, {12, 0.7f}, {13, 0.69995f}});
  AnswerScore s = ScoreAnswer(Answer("a", {{10, 0}, {11, 0}, {12, 0}}), exact, 3);
  EXPECT_DOUBLE_EQ(s.recall, 1.0);
  EXPECT_DOUBLE_EQ(s.id_recall, 1.0);
  s = ScoreAnswer(Answer("a", {{10, 0}, {11, 0}, {13, 0}}), exact, 3);  // the tied one instead
  EXPECT_DOUBLE_EQ(s.recall, 1.0);
  EXPECT_NEAR(s.id_recall, 2.0 / 3, 1e-12);
  s = ScoreAnswer(Answer("a", {{10, 0}, {99, 0}, {98, 0}}), exact, 3);  // one of three
  EXPECT_NEAR(s.recall, 1.0 / 3, 1e-12);
  EXPECT_NEAR(s.id_recall, 1.0 / 3, 1e-12);
  s = ScoreAnswer(Answer("a", {{10, 0}, {10, 0}, {10, 0}}), exact, 3);  // repeats count once
  EXPECT_NEAR(s.recall, 1.0 / 3, 1e-12);
  // Fewer eligible items than k: the denominator is what exists.
  s = ScoreAnswer(Answer("a", {{10, 0}}), Answer("a", {{10, 0.9f}}), 5);
  EXPECT_DOUBLE_EQ(s.recall, 1.0);
  // Nothing eligible: an empty answer is right, anything else wrong.
  EXPECT_DOUBLE_EQ(ScoreAnswer(Answer("a", {}), Answer("a", {}), 5).recall, 1.0);
  EXPECT_DOUBLE_EQ(ScoreAnswer(Answer("a", {{1, 0}}), Answer("a", {}), 5).recall, 0.0);
}

// A fake target that answers item ids request_index*10 + {0, 1, 2}, the second one wrong for
// odd requests.
std::unique_ptr<Target> FakeTarget() {
  return MakeFunctionTarget("fake", [](const RecallRequest* req, RecallResponse* resp,
                                       std::function<void(const grpc::Status&)> done) {
    const int i = std::stoi(req->request_id().substr(req->request_id().find('-') + 1));
    resp->set_request_id(req->request_id());
    for (int j = 0; j < 3; ++j) {
      resp->add_items()->set_item_id(j == 1 && i % 2 ? -5 : i * 10 + j);
    }
    done(grpc::Status::OK);
  });
}

TEST(RecallAgainstTopK, AveragesOverTheCheckedPrefix) {
  std::vector<RecallRequest> reqs = MakeRequests(10, {1}, 10, 1, 1, 3, 1);
  std::vector<RecallResponse> exact;
  for (int i = 0; i < 4; ++i) {
    exact.push_back(Answer(reqs[i].request_id(), {{i * 10, 3}, {i * 10 + 1, 2}, {i * 10 + 2, 1}}));
  }
  auto target = FakeTarget();
  auto r = RecallAgainstTopK(*target, reqs, exact, 100);  // capped at the 4 answers
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->queries, 4);
  EXPECT_NEAR(r->recall, (1 + 2.0 / 3 + 1 + 2.0 / 3) / 4, 1e-12);
  r = RecallAgainstTopK(*target, reqs, exact, 1);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->queries, 1);
  EXPECT_DOUBLE_EQ(r->recall, 1.0);
}

TEST(RunBench, RecallModeJsonHasTheHeaderAndRecall) {
  std::vector<RecallRequest> reqs = MakeRequests(4, {1, 2}, 10, 2, 6, 3, 1);
  std::vector<RecallResponse> exact;
  for (int i = 0; i < 2; ++i) {
    exact.push_back(Answer(reqs[i].request_id(), {{i * 10, 3}, {i * 10 + 1, 2}, {i * 10 + 2, 1}}));
  }
  auto target = FakeTarget();
  RunOptions o;
  o.mode = "recall";
  RunHeader h{"inprocess", "", 7, 1234};
  auto json = RunBench(o, h, *target, reqs, &exact);
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_EQ(json->rfind("{\"target\": \"inprocess\", \"addr\": \"\", \"model_version\": 7, "
                        "\"items\": 1234, \"k\": 3, \"history\": [",
                        0),
            0u)
      << *json;
  EXPECT_NE(json->find("\"recall_at_k\": 0.8333, \"id_recall_at_k\": 0.8333}"), std::string::npos)
      << *json;
  EXPECT_EQ(json->find("closed_loop"), std::string::npos) << *json;
  // Without a top-K file: no recall fields.
  json = RunBench(o, h, *target, reqs, nullptr);
  ASSERT_TRUE(json.ok());
  EXPECT_EQ(json->find("recall_at_k"), std::string::npos) << *json;
  o.mode = "nonsense";
  EXPECT_FALSE(RunBench(o, h, *target, reqs, &exact).ok());
  o.mode = "recall";
  EXPECT_FALSE(RunBench(o, h, *target, {}, nullptr).ok());
}

TEST(RunBench, ClosedModeReportsPointsAndMaxQps) {
  std::vector<RecallRequest> reqs = MakeRequests(4, {1, 2}, 10, 2, 6, 3, 1);
  auto target = FakeTarget();
  RunOptions o;
  o.mode = "closed";
  o.concurrency = {1, 2};
  o.duration_s = 0.1;
  o.warmup_s = 0;
  o.recall_queries = 0;
  auto json = RunBench(o, RunHeader{"grpc", "127.0.0.1:1", 1, 2}, *target, reqs, nullptr);
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_NE(json->find("\"closed_loop\": [{\"concurrency\": 1, \"stats\": {\"ok\": "),
            std::string::npos)
      << *json;
  EXPECT_NE(json->find("\"max_qps\": "), std::string::npos) << *json;
  EXPECT_NE(json->find("\"max_qps_concurrency\": "), std::string::npos) << *json;
  EXPECT_EQ(json->find("open_loop"), std::string::npos) << *json;
}

TEST(ParsePositives, SkipsWhatIsNotPositive) {
  EXPECT_EQ(ParsePositiveInts("1,2,,x,-3,0,64"), (std::vector<int>{1, 2, 64}));
  EXPECT_EQ(ParsePositiveDoubles("0.25,0,0.5"), (std::vector<double>{0.25, 0.5}));
}

}  // namespace
}  // namespace recall::bench
