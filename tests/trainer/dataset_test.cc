#include "trainer/dataset.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "trainer/synthetic.h"

namespace recall::trainer {
namespace {

namespace fs = std::filesystem;

// A fresh empty directory under the test temp dir, named after the running test.
std::string FreshDir(const std::string& tag = "") {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  fs::path p = fs::path(::testing::TempDir()) /
               (std::string("recall_dataset_") + info->test_suite_name() + "_" + info->name() + tag + "_" +
                std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

TEST(LightGcnTest, LoadsSetsAndCounts) {
  const std::string dir = FreshDir();
  // Unsorted and duplicate items, a bare user line, a blank line, CRLF and tabs.
  WriteFile(dir + "/train.txt", "0 3 1 1\n1\n\n2\t5 0\r\n");
  WriteFile(dir + "/test.txt", "0 4\n2 1\n3 2\n");
  absl::StatusOr<Dataset> d = LoadLightGcn(dir);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->name, fs::path(dir).filename().string());
  EXPECT_EQ(d->num_users, 4);
  EXPECT_EQ(d->num_items, 6);
  EXPECT_EQ(d->train, (std::vector<std::vector<int64_t>>{{1, 3}, {}, {0, 5}, {}}));
  EXPECT_EQ(d->test, (std::vector<std::vector<int64_t>>{{4}, {}, {1}, {2}}));
  EXPECT_EQ(d->num_train_interactions(), 4);
  EXPECT_EQ(d->num_test_interactions(), 3);
  EXPECT_EQ(d->num_test_users(), 3);
  EXPECT_EQ(d->ItemPopularity(), (std::vector<int64_t>{1, 1, 0, 1, 0, 1}));
  EXPECT_TRUE(d->Validate().ok()) << d->Validate();
}

TEST(LightGcnTest, MalformedLineNamesFileAndLine) {
  const std::string dir = FreshDir();
  WriteFile(dir + "/train.txt", "0 1 2\n1 3\n");
  WriteFile(dir + "/test.txt", "0 4\n\n1 x7\n");
  absl::StatusOr<Dataset> d = LoadLightGcn(dir);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(d.status().message().find("test.txt:3"), std::string::npos) << d.status();
  EXPECT_NE(d.status().message().find("x7"), std::string::npos) << d.status();

  WriteFile(dir + "/test.txt", "0 4\n");
  WriteFile(dir + "/train.txt", "0 1\n-1 2\n");
  d = LoadLightGcn(dir);
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("train.txt:2"), std::string::npos) << d.status();

  WriteFile(dir + "/train.txt", "0 1 99999999999\n");
  d = LoadLightGcn(dir);
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("train.txt:1"), std::string::npos) << d.status();

  fs::remove(dir + "/train.txt");
  d = LoadLightGcn(dir);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(d.status().message().find("train.txt"), std::string::npos) << d.status();
}

TEST(SyntheticTest, DeterministicForASeed) {
  SyntheticConfig c;
  const SyntheticData a = GenerateSyntheticWithTruth(c);
  const SyntheticData b = GenerateSyntheticWithTruth(c);
  EXPECT_EQ(a.dataset.train, b.dataset.train);
  EXPECT_EQ(a.dataset.test, b.dataset.test);
  EXPECT_EQ(a.dataset.item_cat_values, b.dataset.item_cat_values);
  EXPECT_EQ(a.dataset.user_cat_values, b.dataset.user_cat_values);
  EXPECT_EQ(a.user_category, b.user_category);
  EXPECT_EQ(a.item_category, b.item_category);
  EXPECT_EQ(GenerateSynthetic(c).train, a.dataset.train);

  c.seed = 43;
  const Dataset other = GenerateSynthetic(c);
  EXPECT_NE(other.train, a.dataset.train);
}

TEST(SyntheticTest, StructureAndSplit) {
  SyntheticConfig c;
  const SyntheticData s = GenerateSyntheticWithTruth(c);
  const Dataset& d = s.dataset;
  ASSERT_TRUE(d.Validate().ok()) << d.Validate();
  EXPECT_EQ(d.name, "synthetic");
  EXPECT_EQ(d.num_users, c.num_users);
  EXPECT_EQ(d.num_items, c.num_items);
  ASSERT_EQ(d.item_cat_names, std::vector<std::string>{"category"});
  ASSERT_EQ(d.user_cat_names, std::vector<std::string>{"region"});

  int64_t in_pref = 0, total = 0, region_match = 0, test_total = 0;
  for (int64_t u = 0; u < d.num_users; ++u) {
    ASSERT_GE(d.train[u].size(), 1u) << u;
    ASSERT_GE(d.test[u].size(), 1u) << u;
    const int64_t n = d.train[u].size() + d.test[u].size();
    ASSERT_GE(n, c.min_interactions);
    ASSERT_LE(n, c.max_interactions);
    std::vector<int64_t> all = d.train[u];
    all.insert(all.end(), d.test[u].begin(), d.test[u].end());
    ASSERT_EQ(std::set<int64_t>(all.begin(), all.end()).size(), all.size()) << "train∩test " << u;
    for (int64_t i : all) in_pref += s.item_category[i] == s.user_category[u];
    total += n;
    test_total += d.test[u].size();
    region_match += d.user_cat_values[0][u] == "r" + std::to_string(s.user_category[u]);
  }
  for (int64_t i = 0; i < d.num_items; ++i) {
    ASSERT_EQ(d.item_cat_values[0][i], "c" + std::to_string(s.item_category[i]));
  }
  const double share = static_cast<double>(in_pref) / total;
  EXPECT_GT(share, 0.8);
  EXPECT_NEAR(share, 1.0 - c.off_category_rate, 0.02);
  const double region = static_cast<double>(region_match) / d.num_users;
  EXPECT_GT(region, 0.7);  // 0.7 + 0.3 / 10 expected
  EXPECT_LT(region, 0.8);
  EXPECT_NEAR(static_cast<double>(test_total) / total, c.test_fraction, 0.03);

  // Popularity is skewed: the most popular item has several times the mean count.
  const std::vector<int64_t> pop = d.ItemPopularity();
  const double mean = static_cast<double>(d.num_train_interactions()) / d.num_items;
  EXPECT_GT(*std::max_element(pop.begin(), pop.end()), 4 * mean);
}

TEST(SyntheticTest, ValidateAndClamp) {
  SyntheticConfig c;
  EXPECT_TRUE(ValidateSyntheticConfig(c).ok());
  c.min_interactions = 1;
  absl::Status st = ValidateSyntheticConfig(c);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("min_interactions"), std::string::npos) << st;

  // A degenerate config is clamped, still with >= 1 train and test item per user.
  SyntheticConfig tiny;
  tiny.num_users = 5;
  tiny.num_items = 3;
  tiny.num_categories = 10;
  tiny.min_interactions = 1;
  tiny.max_interactions = 100;
  tiny.test_fraction = 0.9;
  EXPECT_FALSE(ValidateSyntheticConfig(tiny).ok());
  const Dataset d = GenerateSynthetic(tiny);
  ASSERT_TRUE(d.Validate().ok()) << d.Validate();
  for (int64_t u = 0; u < d.num_users; ++u) {
    EXPECT_GE(d.train[u].size(), 1u);
    EXPECT_GE(d.test[u].size(), 1u);
  }
}

TEST(WriteDatasetFilesTest, RoundTrip) {
  SyntheticConfig c;
  c.num_users = 300;
  c.num_items = 5000;  // many items without interactions: the tail ids are only in items.tsv
  const Dataset d = GenerateSynthetic(c);
  const std::string dir = FreshDir();
  ASSERT_TRUE(WriteDatasetFiles(d, dir).ok());
  for (const char* f : {"items.tsv", "users.tsv", "train.txt", "test.txt"}) {
    EXPECT_TRUE(fs::exists(fs::path(dir) / f)) << f;
  }
  std::ifstream items(dir + "/items.tsv");
  std::string header, row;
  std::getline(items, header);
  std::getline(items, row);
  EXPECT_EQ(header, "item_id\tcategory");
  EXPECT_EQ(row, "0\t" + d.item_cat_values[0][0]);

  absl::StatusOr<Dataset> back = LoadLightGcn(dir);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->num_users, d.num_users);
  EXPECT_LE(back->num_items, d.num_items);
  EXPECT_EQ(back->train, d.train);
  EXPECT_EQ(back->test, d.test);

  absl::StatusOr<Dataset> full = LoadDatasetDir(dir);
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(full->num_items, d.num_items);
  EXPECT_EQ(full->train, d.train);
  EXPECT_EQ(full->test, d.test);
  EXPECT_EQ(full->item_cat_names, d.item_cat_names);
  EXPECT_EQ(full->item_cat_values, d.item_cat_values);
  EXPECT_EQ(full->user_cat_names, d.user_cat_names);
  EXPECT_EQ(full->user_cat_values, d.user_cat_values);
  EXPECT_TRUE(full->Validate().ok()) << full->Validate();
}

TEST(WriteDatasetFilesTest, RejectsTabsInValuesAndBadTsv) {
  Dataset d;
  d.num_users = 1;
  d.num_items = 1;
  d.train = {{0}};
  d.test = {{}};
  d.item_cat_names = {"brand"};
  d.item_cat_values = {{"a\tb"}};
  const std::string dir = FreshDir();
  EXPECT_EQ(WriteDatasetFiles(d, dir).code(), absl::StatusCode::kInvalidArgument);

  d.item_cat_values = {{"acme"}};
  ASSERT_TRUE(WriteDatasetFiles(d, dir).ok());
  WriteFile(dir + "/items.tsv", "item_id\tbrand\n0\tacme\n1\n");
  absl::StatusOr<Dataset> back = LoadDatasetDir(dir);
  ASSERT_FALSE(back.ok());
  EXPECT_NE(back.status().message().find("items.tsv:3"), std::string::npos) << back.status();
}

TEST(InteractionsTest, TemporalSplitExternalIdsAndFeatures) {
  const std::string dir = FreshDir();
  WriteFile(dir + "/events.csv",
            "user_id,item_id,ts\n"
            "100,7,5\n"
            "100,-3,1\n"
            "100,42,9\n"
            "100,7,2\n"      // repeat of (100, 7): collapses, keeps ts 5
            "100,9,7\n"
            "55,42,1\n"      // a single interaction: train only
            "\n");
  WriteFile(dir + "/items.csv", "item_id,brand\n42,acme\n1000,newco\n");  // 1000: cold item
  WriteFile(dir + "/users.tsv", "user\tcountry\n55\tde\n");
  InteractionsOptions o;
  o.test_fraction = 0.5;
  o.item_features = dir + "/items.csv";
  o.user_features = dir + "/users.tsv";
  absl::StatusOr<Dataset> d = LoadInteractions(dir + "/events.csv", o);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->name, "events");
  EXPECT_TRUE(d->Validate().ok()) << d->Validate();
  EXPECT_EQ(d->user_ids, (std::vector<int64_t>{55, 100}));
  EXPECT_EQ(d->item_ids, (std::vector<int64_t>{-3, 7, 9, 42, 1000}));
  EXPECT_EQ(d->ExternalItemId(4), 1000);
  // user 100 (dense 1): -3@1, 7@5, 9@7, 42@9 -> latest 2 are test.
  EXPECT_EQ(d->train[1], (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(d->test[1], (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(d->train[0], (std::vector<int64_t>{3}));
  EXPECT_TRUE(d->test[0].empty());
  EXPECT_EQ(d->item_cat_names, std::vector<std::string>{"brand"});
  EXPECT_EQ(d->item_cat_values[0], (std::vector<std::string>{"", "", "", "acme", "newco"}));
  EXPECT_EQ(d->user_cat_values[0], (std::vector<std::string>{"de", ""}));

  // Round trip through WriteDatasetFiles keeps the external ids.
  const std::string out = dir + "/out";
  ASSERT_TRUE(WriteDatasetFiles(*d, out).ok());
  absl::StatusOr<Dataset> back = LoadDatasetDir(out);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->item_ids, d->item_ids);
  EXPECT_EQ(back->user_ids, d->user_ids);
  EXPECT_EQ(back->item_cat_names, d->item_cat_names);
  EXPECT_EQ(back->item_cat_values, d->item_cat_values);
  EXPECT_EQ(back->train, d->train);
  EXPECT_EQ(back->test, d->test);
}

TEST(InteractionsTest, NumericColumnsParseRoundTripAndErrorsNameTheLine) {
  const std::string dir = FreshDir();
  WriteFile(dir + "/events.tsv", "1\t10\n1\t11\n2\t10\n");
  WriteFile(dir + "/items.csv", "item_id,brand,price:num\n10,acme,9.5\n11,acme,\n12,newco,-2e3\n");
  WriteFile(dir + "/users.tsv", "user_id\tage:num\n2\t31\n");
  InteractionsOptions o;
  o.test_fraction = 0;
  o.item_features = dir + "/items.csv";
  o.user_features = dir + "/users.tsv";
  absl::StatusOr<Dataset> d = LoadInteractions(dir + "/events.tsv", o);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->Validate().ok()) << d->Validate();
  EXPECT_EQ(d->item_cat_names, std::vector<std::string>{"brand"});
  ASSERT_EQ(d->item_num_names, std::vector<std::string>{"price"});
  ASSERT_EQ(d->item_num_values[0].size(), 3u);  // items 10, 11, 12 (12 only in the side file)
  EXPECT_FLOAT_EQ(d->item_num_values[0][0], 9.5f);
  EXPECT_TRUE(std::isnan(d->item_num_values[0][1]));  // empty cell = missing
  EXPECT_FLOAT_EQ(d->item_num_values[0][2], -2000.0f);
  ASSERT_EQ(d->user_num_names, std::vector<std::string>{"age"});
  EXPECT_TRUE(std::isnan(d->user_num_values[0][0]));
  EXPECT_FLOAT_EQ(d->user_num_values[0][1], 31.0f);

  const std::string out = dir + "/out";
  ASSERT_TRUE(WriteDatasetFiles(*d, out).ok());
  absl::StatusOr<Dataset> back = LoadDatasetDir(out);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->item_cat_values, d->item_cat_values);
  EXPECT_EQ(back->item_num_names, d->item_num_names);
  EXPECT_EQ(back->user_num_names, d->user_num_names);
  for (size_t e = 0; e < 3; ++e) {
    const float a = d->item_num_values[0][e], b = back->item_num_values[0][e];
    EXPECT_TRUE((std::isnan(a) && std::isnan(b)) || a == b) << e << ": " << a << " vs " << b;
  }

  for (const char* bad : {"abc", "inf", "nan", "1e999", "3 apples"}) {
    WriteFile(dir + "/items.csv", std::string("item_id,price:num\n10,1\n11,") + bad + "\n");
    absl::StatusOr<Dataset> r = LoadInteractions(dir + "/events.tsv", o);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find("items.csv:3"), std::string::npos) << r.status();
    EXPECT_NE(r.status().message().find("price:num"), std::string::npos) << r.status();
  }
  WriteFile(out + "/items.tsv", "item_id\tbrand\tprice:num\n10\tacme\tcheap\n");
  absl::StatusOr<Dataset> r = LoadDatasetDir(out);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("items.tsv:2"), std::string::npos) << r.status();
}

TEST(InteractionsTest, RandomSplitIsSeededAndErrorsNameTheLine) {
  const std::string dir = FreshDir();
  std::string rows;
  for (int u = 0; u < 50; ++u) {
    for (int i = 0; i < 10; ++i) rows += std::to_string(u) + " " + std::to_string(u * 7 + i) + "\n";
  }
  WriteFile(dir + "/a.txt", rows);
  absl::StatusOr<Dataset> a = LoadInteractions(dir + "/a.txt");
  absl::StatusOr<Dataset> b = LoadInteractions(dir + "/a.txt");
  ASSERT_TRUE(a.ok() && b.ok()) << a.status();
  EXPECT_EQ(a->test, b->test);
  EXPECT_EQ(a->num_test_interactions(), 50 * 2);
  InteractionsOptions o;
  o.seed = 7;
  absl::StatusOr<Dataset> c = LoadInteractions(dir + "/a.txt", o);
  ASSERT_TRUE(c.ok());
  EXPECT_NE(a->test, c->test);

  WriteFile(dir + "/bad.tsv", "1\t2\t3\n4\t5\n");
  absl::StatusOr<Dataset> bad = LoadInteractions(dir + "/bad.tsv");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("bad.tsv:2"), std::string::npos) << bad.status();
  WriteFile(dir + "/bad.tsv", "1\t2\n4\tx\n");
  bad = LoadInteractions(dir + "/bad.tsv");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("bad.tsv:2"), std::string::npos) << bad.status();
  EXPECT_EQ(LoadInteractions(dir + "/missing.csv").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace recall::trainer
