#include "trainer/dataset.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <tuple>
#include <sstream>
#include <system_error>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "model/whole_file.h"
#include "trainer/dataset_text.h"


namespace recall::trainer {
namespace {

// ---- Generic delimited files (LoadInteractions) ----

enum class Sep { kTab, kComma, kSpace };

Sep DetectSep(absl::string_view line) {
  if (line.find('\t') != absl::string_view::npos) return Sep::kTab;
  if (line.find(',') != absl::string_view::npos) return Sep::kComma;
  return Sep::kSpace;
}

std::vector<absl::string_view> SplitFields(absl::string_view line, Sep sep) {
  std::vector<absl::string_view> f;
  if (sep == Sep::kSpace) {
    f = absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
  } else {
    f = absl::StrSplit(line, sep == Sep::kTab ? '\t' : ',');
    for (auto& x : f) x = absl::StripAsciiWhitespace(x);
  }
  return f;
}

// Header "<id column><sep><name>..." then "<external id><sep><value>..." rows. `items`: the
// ids are item ids, which must not be the index's reserved id.
absl::Status ReadExternalFeatures(const std::string& path, bool items,
                                  std::vector<std::string>* names,
                                  absl::flat_hash_map<int64_t, std::vector<std::string>>* rows) {
  absl::StatusOr<std::string> text = ReadWholeFile(path);
  if (!text.ok()) return text.status();
  bool have_header = false;
  Sep sep = Sep::kTab;
  absl::Status s = ForEachLine(*text, [&](absl::string_view line, int64_t line_no) -> absl::Status {
    if (absl::StripAsciiWhitespace(line).empty()) return absl::OkStatus();
    if (!have_header) {
      sep = DetectSep(line);
      std::vector<absl::string_view> f = SplitFields(line, sep);
      names->clear();
      for (size_t j = 1; j < f.size(); ++j) names->emplace_back(f[j]);
      have_header = true;
      return CheckHeaderNames(path, line_no, *names);
    }
    std::vector<absl::string_view> f = SplitFields(line, sep);
    if (f.size() != names->size() + 1) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", line_no, ": expected ",
                                                     names->size() + 1, " fields, got ", f.size()));
    }
    int64_t id;
    if (!ParseExternalId(f[0], &id)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", line_no, ": invalid id '", f[0].substr(0, 40), "'"));
    }
    if (items && id == kReservedItemId) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ":", line_no, ": item id -1 is reserved (the index's \"no result\" id)"));
    }
    if (absl::Status c = CheckNumericCells(path, line_no, *names, f); !c.ok()) return c;
    std::vector<std::string> vals;
    for (size_t j = 1; j < f.size(); ++j) vals.emplace_back(f[j]);
    if (!rows->emplace(id, std::move(vals)).second) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", line_no, ": duplicate id ", id));
    }
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  if (!have_header) return absl::InvalidArgumentError(absl::StrCat(path, ": empty file, no header"));
  return absl::OkStatus();
}

int64_t DenseOf(const std::vector<int64_t>& sorted_ext, int64_t ext) {
  return std::lower_bound(sorted_ext.begin(), sorted_ext.end(), ext) - sorted_ext.begin();
}

}  // namespace

absl::StatusOr<Dataset> LoadInteractions(const std::string& path, const InteractionsOptions& o) {
  absl::StatusOr<std::string> text = ReadWholeFile(path);
  if (!text.ok()) return text.status();
  struct Row {
    int64_t user, item;
    double ts;
  };
  std::vector<Row> rows;
  bool first = true;
  Sep sep = Sep::kSpace;
  size_t num_fields = 0;
  absl::Status s = ForEachLine(*text, [&](absl::string_view line, int64_t line_no) -> absl::Status {
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) return absl::OkStatus();
    if (first) sep = DetectSep(line);
    std::vector<absl::string_view> f = SplitFields(line, sep);
    int64_t user = 0, item = 0;
    const bool user_ok = !f.empty() && ParseExternalId(f[0], &user);
    if (first) {
      first = false;
      if (!user_ok) return absl::OkStatus();  // header
    }
    if (num_fields == 0) {
      if (f.size() != 2 && f.size() != 3) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ":", line_no, ": expected user, item[, timestamp]; got ", f.size(), " fields"));
      }
      num_fields = f.size();
    } else if (f.size() != num_fields) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", line_no, ": expected ", num_fields,
                                                     " fields like the first row, got ", f.size()));
    }
    if (!user_ok) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", line_no, ": invalid user id '",
                                                     f[0].substr(0, 40), "'"));
    }
    if (!ParseExternalId(f[1], &item)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", line_no, ": invalid item id '",
                                                     f[1].substr(0, 40), "'"));
    }
    if (item == kReservedItemId) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ":", line_no, ": item id -1 is reserved (the index's \"no result\" id)"));
    }
    double ts = 0.0;
    if (num_fields == 3 && (!absl::SimpleAtod(f[2], &ts) || !std::isfinite(ts))) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", line_no, ": invalid timestamp '",
                                                     f[2].substr(0, 40), "'"));
    }
    rows.push_back({user, item, ts});
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  if (rows.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, first ? ": empty file" : ": no interaction rows (only a header)"));
  }

  std::vector<std::string> user_names, item_names;
  absl::flat_hash_map<int64_t, std::vector<std::string>> user_feats, item_feats;
  if (!o.user_features.empty()) {
    s = ReadExternalFeatures(o.user_features, false, &user_names, &user_feats);
    if (!s.ok()) return s;
  }
  if (!o.item_features.empty()) {
    s = ReadExternalFeatures(o.item_features, true, &item_names, &item_feats);
    if (!s.ok()) return s;
  }

  Dataset d;
  d.name = !o.name.empty() ? o.name : std::filesystem::path(path).stem().string();
  for (const Row& r : rows) {
    d.user_ids.push_back(r.user);
    d.item_ids.push_back(r.item);
  }
  for (const auto& [id, v] : user_feats) d.user_ids.push_back(id);
  for (const auto& [id, v] : item_feats) d.item_ids.push_back(id);
  SortUnique(&d.user_ids);
  SortUnique(&d.item_ids);
  if (static_cast<int64_t>(d.user_ids.size()) >= kMaxId ||
      static_cast<int64_t>(d.item_ids.size()) >= kMaxId) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": more than 2^31 users or items"));
  }
  d.num_users = static_cast<int64_t>(d.user_ids.size());
  d.num_items = static_cast<int64_t>(d.item_ids.size());

  // Rows in dense ids, grouped by user; repeated pairs keep the latest timestamp.
  for (Row& r : rows) {
    r.user = DenseOf(d.user_ids, r.user);
    r.item = DenseOf(d.item_ids, r.item);
  }
  std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) {
    return std::tie(a.user, a.item, b.ts) < std::tie(b.user, b.item, a.ts);  // latest first
  });
  rows.erase(std::unique(rows.begin(), rows.end(),
                         [](const Row& a, const Row& b) { return a.user == b.user && a.item == b.item; }),
             rows.end());

  d.train.assign(d.num_users, {});
  d.test.assign(d.num_users, {});
  std::mt19937_64 rng(o.seed);
  const bool temporal = num_fields == 3;
  std::vector<Row> mine;
  for (size_t begin = 0; begin < rows.size();) {
    size_t end = begin;
    while (end < rows.size() && rows[end].user == rows[begin].user) ++end;
    mine.assign(rows.begin() + begin, rows.begin() + end);
    const int64_t u = rows[begin].user;
    const int64_t n = static_cast<int64_t>(mine.size());
    int64_t num_test = 0;
    if (n >= 2 && o.test_fraction > 0) {
      num_test = std::clamp<int64_t>(std::llround(o.test_fraction * static_cast<double>(n)), 1,
                                     n - 1);
    }
    if (temporal) {
      // Oldest first; dense item order equals external id order, so ties go by external id.
      std::stable_sort(mine.begin(), mine.end(),
                       [](const Row& a, const Row& b) { return a.ts < b.ts; });
    } else {
      for (int64_t i = n - 1; i > 0; --i) {
        const int64_t j = static_cast<int64_t>(
            (static_cast<unsigned __int128>(rng()) * static_cast<uint64_t>(i + 1)) >> 64);
        std::swap(mine[i], mine[j]);
      }
    }
    for (int64_t j = 0; j < n; ++j) (j < n - num_test ? d.train[u] : d.test[u]).push_back(mine[j].item);
    std::sort(d.train[u].begin(), d.train[u].end());
    std::sort(d.test[u].begin(), d.test[u].end());
    begin = end;
  }

  auto place = [](const std::vector<std::string>& names,
                  const absl::flat_hash_map<int64_t, std::vector<std::string>>& feats,
                  const std::vector<int64_t>& ext, std::vector<std::vector<std::string>>* values) {
    values->assign(names.size(), std::vector<std::string>(ext.size()));
    for (const auto& [id, vals] : feats) {
      const int64_t e = DenseOf(ext, id);
      for (size_t f = 0; f < vals.size(); ++f) (*values)[f][e] = vals[f];
    }
  };
  d.user_cat_names = user_names;
  d.item_cat_names = item_names;
  place(user_names, user_feats, d.user_ids, &d.user_cat_values);
  place(item_names, item_feats, d.item_ids, &d.item_cat_values);
  SplitNumericColumns(&d.user_cat_names, &d.user_cat_values, &d.user_num_names,
                      &d.user_num_values);
  SplitNumericColumns(&d.item_cat_names, &d.item_cat_values, &d.item_num_names,
                      &d.item_num_values);
  return d;
}

}  // namespace recall::trainer
