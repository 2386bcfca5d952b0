#include "client/cli_util.h"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <unistd.h>

namespace recall::cli {
namespace {

TEST(ParseInt64List, ParsesAndStripsWhitespace) {
  auto r = ParseInt64List(" 1, 2 ,-3,9223372036854775807");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, (std::vector<int64_t>{1, 2, -3, INT64_MAX}));
}

TEST(ParseInt64List, EmptyIsEmpty) {
  auto r = ParseInt64List("");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->empty());
  r = ParseInt64List("   ");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->empty());
}

TEST(ParseInt64List, RejectsGarbageAndEmptyElements) {
  EXPECT_FALSE(ParseInt64List("1,x").ok());
  EXPECT_FALSE(ParseInt64List("1,,2").ok());
  EXPECT_FALSE(ParseInt64List("1,").ok());
  EXPECT_FALSE(ParseInt64List("1.5").ok());
  EXPECT_FALSE(ParseInt64List("99999999999999999999").ok());  // overflow
  auto r = ParseInt64List("1,abc");
  EXPECT_NE(std::string(r.status().message()).find("abc"), std::string::npos);
}

TEST(ParseFloatList, ParsesAndChecksFiniteness) {
  auto r = ParseFloatList("0.5,-2,3e-2");
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 3u);
  EXPECT_FLOAT_EQ((*r)[0], 0.5f);
  EXPECT_FLOAT_EQ((*r)[1], -2.f);
  EXPECT_FLOAT_EQ((*r)[2], 0.03f);
  EXPECT_FALSE(ParseFloatList("1,nan").ok());
  EXPECT_FALSE(ParseFloatList("inf").ok());
  auto nf = ParseFloatList("1,nan", /*allow_non_finite=*/true);
  ASSERT_TRUE(nf.ok());
  EXPECT_TRUE(std::isnan((*nf)[1]));
  EXPECT_FALSE(ParseFloatList("1,two").ok());
}

TEST(ParseStringPairs, SplitsAtFirstSeparator) {
  auto r = ParseStringPairs("city:paris, url:http://x ,empty:");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->size(), 3u);
  EXPECT_EQ(r->at("city"), "paris");
  EXPECT_EQ(r->at("url"), "http://x");
  EXPECT_EQ(r->at("empty"), "");
}

TEST(ParseStringPairs, Errors) {
  EXPECT_FALSE(ParseStringPairs("novalue").ok());
  EXPECT_FALSE(ParseStringPairs(":v").ok());
  EXPECT_FALSE(ParseStringPairs("a:1,a:2").ok());
  EXPECT_TRUE(ParseStringPairs("").ok());
}

TEST(ParseStringPairs, OtherSeparator) {
  auto r = ParseStringPairs("epochs=3,lr=0.01,note=a=b", '=');
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->at("epochs"), "3");
  EXPECT_EQ(r->at("lr"), "0.01");
  EXPECT_EQ(r->at("note"), "a=b");
  EXPECT_FALSE(ParseStringPairs("epochs:3", '=').ok());
}

TEST(ParseFloatPairs, Parses) {
  auto r = ParseFloatPairs("age:31.5,score:-1");
  ASSERT_TRUE(r.ok());
  EXPECT_FLOAT_EQ(r->at("age"), 31.5f);
  EXPECT_FLOAT_EQ(r->at("score"), -1.f);
  EXPECT_FALSE(ParseFloatPairs("age:old").ok());
  EXPECT_TRUE(ParseFloatPairs("age:nan").ok());  // passes through for the server to judge
  EXPECT_FALSE(ParseFloatPairs("age:nan", /*allow_non_finite=*/false).ok());
}

TEST(ItemFeatureTsv, ParsesHeaderRowsCommentsAndCrlf) {
  auto t = ParseItemFeatureTsv(
      "item_id\tcategory\tbrand\r\n"
      "# comment\n"
      "1\tc1\tb1\r\n"
      "\n"
      "2\tc2\n"  // short row: padded
      "3\tc1\tb3\n");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->columns, (std::vector<std::string>{"category", "brand"}));
  ASSERT_EQ(t->rows.size(), 3u);
  ASSERT_NE(t->Find(2), nullptr);
  EXPECT_EQ(*t->Find(2), (std::vector<std::string>{"c2", ""}));
  EXPECT_EQ(*t->Find(1), (std::vector<std::string>{"c1", "b1"}));
  EXPECT_EQ(t->Find(99), nullptr);
}

TEST(ItemFeatureTsv, Errors) {
  EXPECT_FALSE(ParseItemFeatureTsv("").ok());                       // no header
  EXPECT_FALSE(ParseItemFeatureTsv("item_id\n1\n").ok());           // no feature column
  EXPECT_FALSE(ParseItemFeatureTsv("item_id\tc\nx\tc1\n").ok());    // bad id
  auto too_many = ParseItemFeatureTsv("item_id\tc\n1\ta\tb\n", "f.tsv");
  ASSERT_FALSE(too_many.ok());
  EXPECT_NE(std::string(too_many.status().message()).find("f.tsv:2"), std::string::npos);
}

TEST(ItemFeatureTsv, ReadsFile) {
  const std::string path = ::testing::TempDir() + "/cli_util_test_items_" + std::to_string(::getpid()) + ".tsv";
  {
    std::ofstream out(path);
    out << "item_id\tcategory\n7\tc3\n";
  }
  auto t = ReadItemFeatureTsv(path);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t->Find(7))[0], "c3");
  std::remove(path.c_str());
  EXPECT_FALSE(ReadItemFeatureTsv(path).ok());
}

TEST(MostCommonValue, CountsTiesAndMissing) {
  auto t = ParseItemFeatureTsv("item_id\tcategory\n1\tc3\n2\tc3\n3\tc1\n4\tc2\n5\tc2\n");
  ASSERT_TRUE(t.ok());
  ValueSummary s = MostCommonValue(*t, {1, 2, 3, 99});
  EXPECT_EQ(s.column, "category");
  EXPECT_EQ(s.value, "c3");
  EXPECT_EQ(s.count, 2);
  EXPECT_EQ(s.total, 4);
  EXPECT_EQ(s.missing, 1);
  EXPECT_EQ(FormatSummary(s), "category: c3 in 2/4 (1 not in table)");
  // tie between c2 and c3 -> smallest value
  s = MostCommonValue(*t, {4, 5, 1, 2});
  EXPECT_EQ(s.value, "c2");
  EXPECT_EQ(FormatSummary(s), "category: c2 in 2/4");
  s = MostCommonValue(*t, {});
  EXPECT_EQ(FormatSummary(s), "category: - in 0/0");
}

TEST(HealthCodec, EncodesRequest) {
  EXPECT_EQ(EncodeHealthCheckRequest(""), "");
  EXPECT_EQ(EncodeHealthCheckRequest("ab"), std::string("\x0a\x02" "ab", 4));
  const std::string long_name(200, 'x');
  const std::string enc = EncodeHealthCheckRequest(long_name);
  ASSERT_EQ(enc.size(), 3 + 200u);
  EXPECT_EQ(static_cast<uint8_t>(enc[1]), 0xC8);  // 200 = 0b1_1001000 -> C8 01
  EXPECT_EQ(static_cast<uint8_t>(enc[2]), 0x01);
}

TEST(HealthCodec, DecodesResponse) {
  auto r = DecodeHealthCheckResponse(std::string("\x08\x01", 2));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 1);
  EXPECT_EQ(HealthStatusName(*r), "SERVING");
  r = DecodeHealthCheckResponse("");  // proto3 default: UNKNOWN
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 0);
  // unknown fields of every wire type are skipped
  r = DecodeHealthCheckResponse(std::string("\x12\x01z" "\x19" "12345678" "\x25" "1234" "\x08\x02",
                                            3 + 9 + 5 + 2));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, 2);
  EXPECT_EQ(HealthStatusName(2), "NOT_SERVING");
  EXPECT_EQ(HealthStatusName(3), "SERVICE_UNKNOWN");
  EXPECT_FALSE(DecodeHealthCheckResponse(std::string("\x08", 1)).ok());
  EXPECT_FALSE(DecodeHealthCheckResponse(std::string("\x12\x05" "ab", 4)).ok());
  EXPECT_FALSE(DecodeHealthCheckResponse(std::string("\x0b", 1)).ok());  // group wire type
}

TEST(StatusCodes, NamesAndExitCodes) {
  EXPECT_EQ(StatusCodeName(grpc::StatusCode::INVALID_ARGUMENT), "INVALID_ARGUMENT");
  EXPECT_EQ(StatusCodeName(grpc::StatusCode::UNAVAILABLE), "UNAVAILABLE");
  EXPECT_EQ(StatusCodeName(static_cast<grpc::StatusCode>(42)), "CODE_42");
  EXPECT_EQ(ExitCodeFor(grpc::StatusCode::OK), kExitOk);
  EXPECT_EQ(ExitCodeFor(grpc::StatusCode::INVALID_ARGUMENT), kExitBadRequest);
  EXPECT_EQ(ExitCodeFor(grpc::StatusCode::NOT_FOUND), kExitBadRequest);
  EXPECT_EQ(ExitCodeFor(grpc::StatusCode::FAILED_PRECONDITION), kExitBadRequest);
  EXPECT_EQ(ExitCodeFor(grpc::StatusCode::UNAUTHENTICATED), kExitAuth);
  EXPECT_EQ(ExitCodeFor(grpc::StatusCode::UNAVAILABLE), kExitRpcError);
  EXPECT_EQ(ExitCodeFor(grpc::StatusCode::INTERNAL), kExitRpcError);
}

TEST(FormatTable, AlignsColumns) {
  std::string t = FormatTable({"rank", "item_id", "cat"}, {{"1", "12345", "c3"}, {"10", "7", "c10"}},
                              {true, true, false});
  EXPECT_EQ(t,
            "rank  item_id  cat\n"
            "   1    12345  c3\n"
            "  10        7  c10\n");
}

TEST(ContentLines, SkipsBlankAndCommentLines) {
  auto lines = ContentLines("a\n\n# c\n  \nb\r\n");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], std::make_pair(1, std::string("a")));
  EXPECT_EQ(lines[1], std::make_pair(5, std::string("b")));
}

}  // namespace
}  // namespace recall::cli
