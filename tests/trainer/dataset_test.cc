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

TEST(SyntheticTest, NumericItemFeaturesAreDistinctCarryTheCategoryAndLeaveInteractionsAlone) {
  SyntheticConfig c;
  c.num_items = 2000;
  c.num_categories = 4;
  const SyntheticData plain = GenerateSyntheticWithTruth(c);
  c.item_numeric_features = 3;
  c.item_numeric_spread = 0.2;
  const SyntheticData s = GenerateSyntheticWithTruth(c);
  const Dataset& d = s.dataset;
  ASSERT_TRUE(d.Validate().ok()) << d.Validate();
  EXPECT_EQ(d.item_num_names, (std::vector<std::string>{"x0", "x1", "x2"}));
  ASSERT_EQ(d.item_num_values.size(), 3u);
  // The features come from their own stream: same interactions and categories as without.
  EXPECT_EQ(d.train, plain.dataset.train);
  EXPECT_EQ(d.test, plain.dataset.test);
  EXPECT_EQ(s.item_category, plain.item_category);
  EXPECT_TRUE(plain.dataset.item_num_names.empty());
  // Every item's feature vector is its own.
  std::set<std::vector<float>> rows;
  for (int64_t i = 0; i < d.num_items; ++i) {
    rows.insert({d.item_num_values[0][i], d.item_num_values[1][i], d.item_num_values[2][i]});
  }
  EXPECT_EQ(static_cast<int64_t>(rows.size()), d.num_items);
  // Category center + N(0, 0.2^2): per category and feature, the spread is ~0.2 around a mean in
  // [-1, 1], and the means of different categories differ.
  for (int f = 0; f < 3; ++f) {
    std::vector<double> sum(4), sq(4), n(4);
    for (int64_t i = 0; i < d.num_items; ++i) {
      const int k = s.item_category[i];
      const double x = d.item_num_values[f][i];
      sum[k] += x;
      sq[k] += x * x;
      n[k] += 1;
    }
    std::set<long> means;
    for (int k = 0; k < 4; ++k) {
      const double mean = sum[k] / n[k], sd = std::sqrt(sq[k] / n[k] - mean * mean);
      EXPECT_LE(std::abs(mean), 1.05) << f << " " << k;
      EXPECT_NEAR(sd, 0.2, 0.03) << f << " " << k;
      means.insert(std::lround(mean * 100));
    }
    EXPECT_GT(means.size(), 1u);
  }
  // Same seed, same features.
  EXPECT_EQ(GenerateSynthetic(c).item_num_values, d.item_num_values);
  c.item_numeric_features = -1;
  EXPECT_NE(ValidateSyntheticConfig(c).message().find("item_numeric_features"), std::string::npos);
}

TEST(SyntheticTest, TasteDrawsThePreferredCategorysItemsNearTheUsersTastePoint) {
  SyntheticConfig c;
  c.num_users = 500;
  c.num_items = 4000;
  c.num_categories = 4;
  c.item_numeric_features = 4;
  c.item_numeric_spread = 0.5;
  const SyntheticData plain = GenerateSyntheticWithTruth(c);
  EXPECT_TRUE(plain.user_taste.empty());
  c.taste_bandwidth = 0.3;
  ASSERT_TRUE(ValidateSyntheticConfig(c).ok());
  const SyntheticData s = GenerateSyntheticWithTruth(c);
  const Dataset& d = s.dataset;
  ASSERT_TRUE(d.Validate().ok()) << d.Validate();
  ASSERT_EQ(s.user_taste.size(), static_cast<size_t>(c.num_users));
  // Same items, features and categories; only the draws inside the preferred category move.
  EXPECT_EQ(s.item_category, plain.item_category);
  EXPECT_EQ(d.item_num_values, plain.dataset.item_num_values);
  EXPECT_NE(d.train, plain.dataset.train);
  auto dist = [&](const std::vector<float>& t, int64_t i) {
    double s2 = 0;
    for (int f = 0; f < 4; ++f) s2 += std::pow(d.item_num_values[f][i] - t[f], 2);
    return std::sqrt(s2);
  };
  // Distance from each user's taste to its in-category interactions, against its distance to
  // all items of that category: the kernel (h = 0.3 against a spread of 0.5 in 4 dimensions,
  // typical distance ~1.4) must pull the draws in by far.
  double near = 0, far = 0;
  int64_t n_near = 0, n_far = 0;
  for (int64_t u = 0; u < d.num_users; ++u) {
    ASSERT_EQ(s.user_taste[u].size(), 4u);
    const int pref = s.user_category[u];
    for (const auto* lists : {&d.train, &d.test}) {
      for (int64_t i : (*lists)[u]) {
        if (s.item_category[i] == pref) near += dist(s.user_taste[u], i), ++n_near;
      }
    }
    for (int64_t i = 0; i < d.num_items; ++i) {
      if (s.item_category[i] == pref) far += dist(s.user_taste[u], i), ++n_far;
    }
  }
  ASSERT_GT(n_near, 1000);
  EXPECT_LT(near / n_near, 0.6 * (far / n_far)) << near / n_near << " vs " << far / n_far;
  // Deterministic, and refused without features.
  EXPECT_EQ(GenerateSynthetic(c).train, d.train);
  c.item_numeric_features = 0;
  EXPECT_NE(ValidateSyntheticConfig(c).message().find("taste_bandwidth"), std::string::npos);
  c.item_numeric_features = 4;
  c.taste_bandwidth = -1;
  EXPECT_NE(ValidateSyntheticConfig(c).message().find("taste_bandwidth"), std::string::npos);
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

// Every loader refuses a malformed file with InvalidArgument "path:line: what is wrong" (or
// "path: what is wrong" for a property of the whole file) instead of crashing or skipping it.
TEST(MalformedFilesTest, EveryLoaderNamesTheFileAndLine) {
  enum Loader { kLightGcn, kDir, kInteractions };
  struct Case {
    const char* name;
    Loader loader;
    std::vector<std::pair<std::string, std::string>> files;  // written over the valid ones
    std::string want;  // substring of the message
  };
  const std::vector<Case> cases = {
      // LightGCN split files.
      {"non-integer item", kLightGcn, {{"train.txt", "0 1\n1 2 x9\n"}}, "train.txt:2: invalid item id 'x9'"},
      {"non-integer user", kLightGcn, {{"train.txt", "u0 1\n"}}, "train.txt:1: invalid user id 'u0'"},
      {"negative user", kLightGcn, {{"train.txt", "0 1\n-1 2\n"}}, "train.txt:2: invalid user id '-1'"},
      {"negative item", kLightGcn, {{"test.txt", "0 -4\n"}}, "test.txt:1: invalid item id '-4'"},
      {"fractional id", kLightGcn, {{"train.txt", "0 1.5\n"}}, "train.txt:1: invalid item id '1.5'"},
      {"id past 2^31", kLightGcn, {{"train.txt", "0 2147483648\n"}}, "train.txt:1: invalid item id"},
      {"stray huge user id", kLightGcn, {{"train.txt", "0 1\n1 2\n2000000000 3\n"}},
       "train.txt:3: user id 2000000000 is out of range"},
      {"stray huge item id", kLightGcn, {{"test.txt", "0 1\n1 40000000\n"}},
       "test.txt:2: item id 40000000 is out of range"},
      {"empty train file", kLightGcn, {{"train.txt", ""}}, "train.txt: empty file"},
      {"blank train file", kLightGcn, {{"train.txt", "\n  \n\r\n"}}, "train.txt: empty file"},
      {"train file without items", kLightGcn, {{"train.txt", "0\n1\n"}}, "train.txt: no interactions"},
      {"empty test file", kLightGcn, {{"test.txt", ""}}, "test.txt: empty file"},
      // items.tsv / users.tsv next to them.
      {"feature row with too few fields", kDir, {{"items.tsv", "item_id\tbrand\n0\tacme\n1\n"}},
       "items.tsv:3: expected 2 tab-separated fields, got 1"},
      {"feature row with too many fields", kDir, {{"items.tsv", "item_id\tbrand\n0\tacme\tx\n"}},
       "items.tsv:2: expected 2"},
      {"negative feature id", kDir, {{"items.tsv", "item_id\tbrand\n-1\tacme\n"}},
       "items.tsv:2: invalid id '-1'"},
      {"non-integer feature id", kDir, {{"users.tsv", "user_id\tregion\nseven\tr1\n"}},
       "users.tsv:2: invalid id 'seven'"},
      {"duplicate feature id", kDir, {{"items.tsv", "item_id\tbrand\n0\ta\n0\tb\n"}},
       "items.tsv:3: duplicate id 0"},
      {"stray huge feature id", kDir, {{"items.tsv", "item_id\tbrand\n0\ta\n9000000\tb\n"}},
       "items.tsv:3: item id 9000000 is out of range"},
      {"empty feature file", kDir, {{"items.tsv", ""}}, "items.tsv: empty file"},
      {"wrong id column", kDir, {{"users.tsv", "uid\tregion\n0\tr1\n"}},
       "users.tsv:1: header must start with 'user_id'"},
      {"duplicate feature column", kDir, {{"items.tsv", "item_id\tbrand\tbrand\n0\ta\tb\n"}},
       "items.tsv:1: duplicate column 'brand'"},
      {"numeric and categorical column of one name", kDir,
       {{"items.tsv", "item_id\tprice\tprice:num\n0\ta\t1\n"}}, "items.tsv:1: duplicate column 'price'"},
      {"empty feature column name", kDir, {{"items.tsv", "item_id\t\tbrand\n0\t\ta\n"}},
       "items.tsv:1: column 2 has an empty name"},
      {"non-numeric numeric cell", kDir, {{"items.tsv", "item_id\tprice:num\n0\tcheap\n"}},
       "items.tsv:2: column 'price:num' needs a finite number"},
      {"infinite numeric cell", kDir, {{"users.tsv", "user_id\tage:num\n1\tinf\n"}},
       "users.tsv:2: column 'age:num'"},
      {"external item id -1", kDir, {{"items.tsv", "item_id\texternal_id\n0\t-1\n"}},
       "items.tsv:2: external_id -1 is reserved"},
      {"external id not an integer", kDir, {{"users.tsv", "user_id\texternal_id\n0\tabc\n"}},
       "users.tsv:2: external_id 'abc' is not an int64"},
      // Generic interactions file and its feature files.
      {"empty interactions file", kInteractions, {{"ev.csv", ""}}, "ev.csv: empty file"},
      {"header only", kInteractions, {{"ev.csv", "user,item\n"}}, "ev.csv: no interaction rows"},
      {"one column", kInteractions, {{"ev.csv", "1\n"}}, "ev.csv:1: expected user, item[, timestamp]"},
      {"four columns", kInteractions, {{"ev.csv", "user,item\n1,2,3,4\n"}}, "ev.csv:2: expected user"},
      {"column count changes", kInteractions, {{"ev.csv", "1,2,5\n1,3\n"}},
       "ev.csv:2: expected 3 fields like the first row, got 2"},
      {"non-integer user", kInteractions, {{"ev.csv", "1,2\nbob,3\n"}}, "ev.csv:2: invalid user id 'bob'"},
      {"non-integer item", kInteractions, {{"ev.csv", "1,2\n1,3.5\n"}}, "ev.csv:2: invalid item id '3.5'"},
      {"item id past int64", kInteractions, {{"ev.csv", "1,99999999999999999999\n"}},
       "ev.csv:1: invalid item id"},
      {"reserved item id", kInteractions, {{"ev.csv", "1,2\n1,-1\n"}}, "ev.csv:2: item id -1 is reserved"},
      {"bad timestamp", kInteractions, {{"ev.csv", "1,2,5\n1,3,soon\n"}}, "ev.csv:2: invalid timestamp 'soon'"},
      {"infinite timestamp", kInteractions, {{"ev.csv", "1,2,inf\n"}}, "ev.csv:1: invalid timestamp 'inf'"},
      {"feature file reserved item id", kInteractions, {{"items.csv", "item,brand\n2,a\n-1,b\n"}},
       "items.csv:3: item id -1 is reserved"},
      {"feature file row with too few fields", kInteractions, {{"items.csv", "item,brand,color\n2,a\n"}},
       "items.csv:2: expected 3 fields, got 2"},
      {"feature file bad id", kInteractions, {{"users.csv", "user,age:num\nx1,3\n"}},
       "users.csv:2: invalid id 'x1'"},
      {"feature file duplicate column", kInteractions, {{"users.csv", "user,age:num,age\n1,3,x\n"}},
       "users.csv:1: duplicate column 'age'"},
      {"empty feature file", kInteractions, {{"items.csv", "\n"}}, "items.csv: empty file"},
  };
  for (size_t c = 0; c < cases.size(); ++c) {
    const Case& k = cases[c];
    SCOPED_TRACE(k.name);
    const std::string dir = FreshDir("_" + std::to_string(c));
    // Valid files, then the case's own over them.
    WriteFile(dir + "/train.txt", "0 1 2\n1 2 3\n");
    WriteFile(dir + "/test.txt", "0 3\n1 1\n");
    WriteFile(dir + "/items.tsv", "item_id\tbrand\n0\tacme\n");
    WriteFile(dir + "/users.tsv", "user_id\tregion\n0\tr1\n");
    WriteFile(dir + "/ev.csv", "user,item\n1,2\n1,3\n");
    WriteFile(dir + "/items.csv", "item,brand\n2,acme\n");
    WriteFile(dir + "/users.csv", "user,age:num\n1,30\n");
    for (const auto& [file, text] : k.files) WriteFile(dir + "/" + file, text);
    absl::Status st;
    switch (k.loader) {
      case kLightGcn: st = LoadLightGcn(dir).status(); break;
      case kDir: st = LoadDatasetDir(dir).status(); break;
      case kInteractions: {
        InteractionsOptions o;
        o.item_features = dir + "/items.csv";
        o.user_features = dir + "/users.csv";
        st = LoadInteractions(dir + "/ev.csv", o).status();
        break;
      }
    }
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
    EXPECT_NE(st.message().find(k.want), std::string::npos)
        << "message: " << st.message() << "\nwant: " << k.want;
    EXPECT_NE(st.message().find(dir), std::string::npos) << "names the full path: " << st;
    fs::remove_all(dir);
  }
}

// What the malformed cases above vary from is valid, and the dense-id bound leaves room for
// real gaps: ids up to 2^20 load even when few are used.
TEST(MalformedFilesTest, ValidBaseAndSparseButPlausibleIdsLoad) {
  const std::string dir = FreshDir();
  WriteFile(dir + "/train.txt", "0 1 2\n1 2 3\n");
  WriteFile(dir + "/test.txt", "0 3\n1 1\n");
  WriteFile(dir + "/items.tsv", "item_id\tbrand\n0\tacme\n");
  WriteFile(dir + "/users.tsv", "user_id\tregion\n0\tr1\n");
  absl::StatusOr<Dataset> d = LoadDatasetDir(dir);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->Validate().ok());
  WriteFile(dir + "/ev.csv", "user,item\n1,2\n1,3\n");
  WriteFile(dir + "/items.csv", "item,brand\n2,acme\n");
  InteractionsOptions o;
  o.item_features = dir + "/items.csv";
  EXPECT_TRUE(LoadInteractions(dir + "/ev.csv", o).ok());

  WriteFile(dir + "/train.txt", "0 1\n1000000 1000000\n");
  d = LoadLightGcn(dir);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->num_users, 1000001);
  EXPECT_EQ(d->num_items, 1000001);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace recall::trainer
