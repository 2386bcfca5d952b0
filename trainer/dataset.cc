// Dataset itself, and its dense-id formats: LightGCN train/test files and the items.tsv /
// users.tsv feature files (read and written). Generic interactions files: interactions.cc.
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

namespace fs = std::filesystem;

// One LightGCN file, parsed: its lines as (user, items), and where the largest ids are.
struct LightGcnFile {
  std::string path;
  std::vector<std::pair<int64_t, std::vector<int64_t>>> lines;
  int64_t max_user = -1, max_user_line = 0, max_item = -1, max_item_line = 0;
  int64_t num_items = 0;  // item tokens over all lines
};

// Reads one LightGCN file. An empty file (no user line at all) is InvalidArgument: it is a
// truncated or misnamed file, never a dataset.
absl::StatusOr<LightGcnFile> ReadLightGcnFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadWholeFile(path);
  if (!text.ok()) return text.status();
  LightGcnFile out;
  out.path = path;
  absl::Status s = ForEachLine(*text, [&](absl::string_view line, int64_t line_no) -> absl::Status {
    size_t i = 0;
    std::vector<int64_t>* items = nullptr;
    while (true) {
      while (i < line.size() && IsSpace(line[i])) ++i;
      if (i >= line.size()) break;
      size_t start = i;
      while (i < line.size() && !IsSpace(line[i])) ++i;
      absl::string_view tok = line.substr(start, i - start);
      int64_t id;
      if (!ParseId(tok, &id)) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ":", line_no, ": invalid ", items == nullptr ? "user" : "item",
                         " id '", tok.substr(0, 40), "' (want an integer in [0, 2^31))"));
      }
      if (items == nullptr) {
        out.lines.emplace_back(id, std::vector<int64_t>());
        items = &out.lines.back().second;
        if (id > out.max_user) {
          out.max_user = id;
          out.max_user_line = line_no;
        }
      } else {
        items->push_back(id);
        ++out.num_items;
        if (id > out.max_item) {
          out.max_item = id;
          out.max_item_line = line_no;
        }
      }
    }
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  if (out.lines.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": empty file (no user lines)"));
  }
  return out;
}

// InvalidArgument naming where the largest id of a dense-id file is, if it leaves most of the
// id range empty (see kDenseSlack).
absl::Status CheckDense(const std::string& path, int64_t line_no, absl::string_view what,
                        int64_t max_id, int64_t distinct) {
  if (!TooSparse(max_id, distinct)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      path, ":", line_no, ": ", what, " id ", max_id, " is out of range: the ids are dense ",
      "(0..n-1) and only ", distinct, " distinct ", what, " ids were seen"));
}

// Reads dir/<file> (header "<id_col>\t<name>...") into names/values; grows *num_entities.
absl::Status ReadFeatureTsv(const std::string& path, const std::string& id_col,
                            std::vector<std::string>* names,
                            std::vector<std::vector<std::string>>* values,
                            int64_t* num_entities) {
  absl::StatusOr<std::string> text = ReadWholeFile(path);
  if (!text.ok()) return text.status();
  bool have_header = false;
  std::vector<std::pair<int64_t, std::vector<std::string>>> rows;
  absl::flat_hash_set<int64_t> seen;
  int64_t max_id = -1, max_line = 0;
  absl::Status s = ForEachLine(*text, [&](absl::string_view line, int64_t line_no) -> absl::Status {
    if (!have_header) {
      std::vector<absl::string_view> f = SplitTabs(line);
      if (f.empty() || f[0] != id_col) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ":", line_no, ": header must start with '", id_col, "'"));
      }
      names->clear();
      for (size_t j = 1; j < f.size(); ++j) names->emplace_back(f[j]);
      have_header = true;
      return CheckHeaderNames(path, line_no, *names);
    }
    if (line.empty()) return absl::OkStatus();
    std::vector<absl::string_view> f = SplitTabs(line);
    if (f.size() != names->size() + 1) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", line_no, ": expected ",
                                                     names->size() + 1, " tab-separated fields, got ",
                                                     f.size()));
    }
    int64_t id;
    if (!ParseId(f[0], &id)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", line_no, ": invalid id '", f[0].substr(0, 40), "'"));
    }
    if (!seen.insert(id).second) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", line_no, ": duplicate id ", id));
    }
    if (absl::Status c = CheckNumericCells(path, line_no, *names, f); !c.ok()) return c;
    // The external id column WriteDatasetFiles adds (TakeExternalIdColumn reads it later,
    // when the line is no longer known).
    if (!names->empty() && (*names)[0] == "external_id") {
      int64_t ext;
      if (!ParseExternalId(f[1], &ext)) {
        return absl::InvalidArgumentError(absl::StrCat(path, ":", line_no, ": external_id '",
                                                       f[1].substr(0, 40), "' is not an int64"));
      }
      if (id_col == "item_id" && ext == kReservedItemId) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ":", line_no, ": external_id -1 is reserved (the index's \"no result\" id)"));
      }
    }
    if (id > max_id) {
      max_id = id;
      max_line = line_no;
    }
    std::vector<std::string> vals;
    vals.reserve(f.size() - 1);
    for (size_t j = 1; j < f.size(); ++j) vals.emplace_back(f[j]);
    rows.emplace_back(id, std::move(vals));
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  if (!have_header) return absl::InvalidArgumentError(absl::StrCat(path, ": empty file, no header"));
  // Ids up to the interaction files' count are fine; beyond it they must stay dense.
  if (max_id >= *num_entities) {
    s = CheckDense(path, max_line, id_col == "item_id" ? "item" : "user", max_id,
                   std::max<int64_t>(*num_entities, static_cast<int64_t>(rows.size())));
    if (!s.ok()) return s;
  }
  *num_entities = std::max(*num_entities, max_id + 1);
  values->assign(names->size(), std::vector<std::string>(*num_entities));
  for (auto& [id, vals] : rows) {
    for (size_t f = 0; f < vals.size(); ++f) (*values)[f][id] = std::move(vals[f]);
  }
  return absl::OkStatus();
}

absl::Status AppendFeatureTsv(const std::string& id_col, const std::vector<std::string>& names,
                              const std::vector<std::vector<std::string>>& values, int64_t n,
                              const char* what, std::string* out) {
  if (values.size() != names.size()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " feature names (", names.size(),
                                                   ") and value columns (", values.size(),
                                                   ") differ"));
  }
  for (size_t f = 0; f < names.size(); ++f) {
    if (names[f].find_first_of("\t\n\r") != std::string::npos || names[f] == id_col) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " feature name '", names[f], "' is not usable as a TSV column"));
    }
  }
  absl::StrAppend(out, id_col);
  for (const std::string& name : names) absl::StrAppend(out, "\t", name);
  out->push_back('\n');
  for (int64_t e = 0; e < n; ++e) {
    absl::StrAppend(out, e);
    for (size_t f = 0; f < names.size(); ++f) {
      // Both arms string_view: with `: ""` the conditional's type is std::string, a temporary
      // the view would outlive (ASan: stack-use-after-scope).
      const absl::string_view v = e < static_cast<int64_t>(values[f].size())
                                      ? absl::string_view(values[f][e])
                                      : absl::string_view();
      if (v.find_first_of("\t\n\r") != absl::string_view::npos) {
        return absl::InvalidArgumentError(absl::StrCat(what, " ", e, " feature '", names[f],
                                                       "' contains a tab or newline"));
      }
      absl::StrAppend(out, "\t", v);
    }
    out->push_back('\n');
  }
  return absl::OkStatus();
}

void AppendLightGcn(const std::vector<std::vector<int64_t>>& lists, int64_t num_users,
                    std::string* out) {
  for (int64_t u = 0; u < num_users; ++u) {
    absl::StrAppend(out, u);
    if (u < static_cast<int64_t>(lists.size())) {
      for (int64_t i : lists[u]) absl::StrAppend(out, " ", i);
    }
    out->push_back('\n');
  }
}

// Moves an "external_id" first column (written by WriteDatasetFiles) into ids.
absl::Status TakeExternalIdColumn(const std::string& what, std::vector<std::string>* names,
                                  std::vector<std::vector<std::string>>* values,
                                  std::vector<int64_t>* ids) {
  if (names->empty() || (*names)[0] != "external_id") return absl::OkStatus();
  ids->assign((*values)[0].size(), 0);
  for (size_t e = 0; e < ids->size(); ++e) {
    if (!ParseExternalId((*values)[0][e], &(*ids)[e])) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": external_id of entity ", e, " is '",
                                                     (*values)[0][e], "', want an int64"));
    }
  }
  names->erase(names->begin());
  values->erase(values->begin());
  return absl::OkStatus();
}
}  // namespace

int64_t Dataset::num_train_interactions() const {
  int64_t n = 0;
  for (const auto& l : train) n += static_cast<int64_t>(l.size());
  return n;
}

int64_t Dataset::num_test_interactions() const {
  int64_t n = 0;
  for (const auto& l : test) n += static_cast<int64_t>(l.size());
  return n;
}

int64_t Dataset::num_test_users() const {
  int64_t n = 0;
  for (const auto& l : test) n += l.empty() ? 0 : 1;
  return n;
}

std::vector<int64_t> Dataset::ItemPopularity() const {
  std::vector<int64_t> pop(std::max<int64_t>(num_items, 0), 0);
  for (const auto& l : train) {
    for (int64_t i : l) {
      if (i >= 0 && i < num_items) ++pop[i];
    }
  }
  return pop;
}

void Dataset::Normalize() {
  train.resize(num_users);
  test.resize(num_users);
  for (auto& l : train) SortUnique(&l);
  for (auto& l : test) SortUnique(&l);
}

absl::Status Dataset::Validate() const {
  if (num_users < 0 || num_items < 0) return absl::InvalidArgumentError("negative entity count");
  if (static_cast<int64_t>(train.size()) != num_users ||
      static_cast<int64_t>(test.size()) != num_users) {
    return absl::InvalidArgumentError(absl::StrCat("train/test have ", train.size(), "/",
                                                   test.size(), " users, want ", num_users));
  }
  for (int split = 0; split < 2; ++split) {
    const auto& lists = split == 0 ? train : test;
    for (int64_t u = 0; u < num_users; ++u) {
      const auto& l = lists[u];
      for (size_t j = 0; j < l.size(); ++j) {
        if (l[j] < 0 || l[j] >= num_items || (j > 0 && l[j] <= l[j - 1])) {
          return absl::InvalidArgumentError(
              absl::StrCat(split == 0 ? "train" : "test", " list of user ", u,
                           " is not sorted unique ids in [0, num_items)"));
        }
      }
    }
  }
  if ((!user_ids.empty() && static_cast<int64_t>(user_ids.size()) != num_users) ||
      (!item_ids.empty() && static_cast<int64_t>(item_ids.size()) != num_items)) {
    return absl::InvalidArgumentError("external id maps must be empty or have one id per entity");
  }
  if (item_cat_values.size() != item_cat_names.size() ||
      user_cat_values.size() != user_cat_names.size()) {
    return absl::InvalidArgumentError("feature names and value columns differ in count");
  }
  for (const auto& col : item_cat_values) {
    if (static_cast<int64_t>(col.size()) != num_items) {
      return absl::InvalidArgumentError("item feature column size != num_items");
    }
  }
  for (const auto& col : user_cat_values) {
    if (static_cast<int64_t>(col.size()) != num_users) {
      return absl::InvalidArgumentError("user feature column size != num_users");
    }
  }
  if (item_num_values.size() != item_num_names.size() ||
      user_num_values.size() != user_num_names.size()) {
    return absl::InvalidArgumentError("numeric feature names and value columns differ in count");
  }
  for (const auto& col : item_num_values) {
    if (static_cast<int64_t>(col.size()) != num_items) {
      return absl::InvalidArgumentError("item numeric feature column size != num_items");
    }
  }
  for (const auto& col : user_num_values) {
    if (static_cast<int64_t>(col.size()) != num_users) {
      return absl::InvalidArgumentError("user numeric feature column size != num_users");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Dataset> LoadLightGcn(const std::string& dir) {
  Dataset d;
  fs::path p(dir);
  d.name = (p.has_filename() ? p.filename() : p.parent_path().filename()).string();
  absl::StatusOr<LightGcnFile> train = ReadLightGcnFile((p / "train.txt").string());
  if (!train.ok()) return train.status();
  if (train->num_items == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(train->path, ": no interactions (no line lists an item)"));
  }
  absl::StatusOr<LightGcnFile> test = ReadLightGcnFile((p / "test.txt").string());
  if (!test.ok()) return test.status();
  // Nothing is allocated by id before the ids are known to be dense enough.
  absl::flat_hash_set<int64_t> users, items;
  for (const LightGcnFile* f : {&*train, &*test}) {
    for (const auto& [user, list] : f->lines) {
      users.insert(user);
      items.insert(list.begin(), list.end());
    }
  }
  for (const LightGcnFile* f : {&*train, &*test}) {
    absl::Status s = CheckDense(f->path, f->max_user_line, "user", f->max_user,
                                static_cast<int64_t>(users.size()));
    if (s.ok()) {
      s = CheckDense(f->path, f->max_item_line, "item", f->max_item,
                     static_cast<int64_t>(items.size()));
    }
    if (!s.ok()) return s;
  }
  d.num_users = std::max(train->max_user, test->max_user) + 1;
  d.num_items = std::max(train->max_item, test->max_item) + 1;
  d.train.resize(d.num_users);
  d.test.resize(d.num_users);
  for (auto [f, lists] : {std::make_pair(&*train, &d.train), std::make_pair(&*test, &d.test)}) {
    for (auto& [user, list] : f->lines) {
      auto& l = (*lists)[user];
      l.insert(l.end(), list.begin(), list.end());
    }
  }
  d.Normalize();
  return d;
}

absl::Status LoadFeatureFiles(const std::string& dir, Dataset* d) {
  fs::path p(dir);
  std::error_code ec;
  int64_t num_items = d->num_items, num_users = d->num_users;
  const std::string items_path = (p / "items.tsv").string();
  if (fs::exists(items_path, ec)) {
    absl::Status s = ReadFeatureTsv(items_path, "item_id", &d->item_cat_names,
                                    &d->item_cat_values, &num_items);
    if (!s.ok()) return s;
  }
  const std::string users_path = (p / "users.tsv").string();
  if (fs::exists(users_path, ec)) {
    absl::Status s = ReadFeatureTsv(users_path, "user_id", &d->user_cat_names,
                                    &d->user_cat_values, &num_users);
    if (!s.ok()) return s;
  }
  // Grow every column to the final entity counts.
  d->num_items = num_items;
  d->num_users = num_users;
  for (auto& col : d->item_cat_values) col.resize(num_items);
  for (auto& col : d->user_cat_values) col.resize(num_users);
  absl::Status s =
      TakeExternalIdColumn(items_path, &d->item_cat_names, &d->item_cat_values, &d->item_ids);
  if (!s.ok()) return s;
  s = TakeExternalIdColumn(users_path, &d->user_cat_names, &d->user_cat_values, &d->user_ids);
  if (!s.ok()) return s;
  if (fs::exists(items_path, ec)) {
    SplitNumericColumns(&d->item_cat_names, &d->item_cat_values, &d->item_num_names,
                        &d->item_num_values);
  }
  if (fs::exists(users_path, ec)) {
    SplitNumericColumns(&d->user_cat_names, &d->user_cat_values, &d->user_num_names,
                        &d->user_num_values);
  }
  d->train.resize(num_users);
  d->test.resize(num_users);
  return absl::OkStatus();
}

absl::StatusOr<Dataset> LoadDatasetDir(const std::string& dir) {
  absl::StatusOr<Dataset> d = LoadLightGcn(dir);
  if (!d.ok()) return d.status();
  absl::Status s = LoadFeatureFiles(dir, &*d);
  if (!s.ok()) return s;
  return d;
}

absl::Status WriteDatasetFiles(const Dataset& d, const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat(dir, ": cannot create: ", ec.message()));
  fs::path p(dir);
  // Non-identity external ids travel as an "external_id" first feature column.
  auto with_ids = [](const std::vector<int64_t>& ids, std::vector<std::string> names,
                     std::vector<std::vector<std::string>> values,
                     const std::vector<std::string>& num_names,
                     const std::vector<std::vector<float>>& num_values) {
    JoinNumericColumns(num_names, num_values, &names, &values);
    if (!ids.empty()) {
      std::vector<std::string> col(ids.size());
      for (size_t e = 0; e < ids.size(); ++e) col[e] = absl::StrCat(ids[e]);
      names.insert(names.begin(), "external_id");
      values.insert(values.begin(), std::move(col));
    }
    return std::make_pair(std::move(names), std::move(values));
  };
  std::string buf;
  const auto [item_names, item_values] = with_ids(d.item_ids, d.item_cat_names, d.item_cat_values,
                                                   d.item_num_names, d.item_num_values);
  absl::Status s =
      AppendFeatureTsv("item_id", item_names, item_values, d.num_items, "item", &buf);
  if (!s.ok()) return s;
  s = WriteWholeFile((p / "items.tsv").string(), buf);
  if (!s.ok()) return s;
  buf.clear();
  const auto [user_names, user_values] = with_ids(d.user_ids, d.user_cat_names, d.user_cat_values,
                                                   d.user_num_names, d.user_num_values);
  s = AppendFeatureTsv("user_id", user_names, user_values, d.num_users, "user", &buf);
  if (!s.ok()) return s;
  s = WriteWholeFile((p / "users.tsv").string(), buf);
  if (!s.ok()) return s;
  buf.clear();
  AppendLightGcn(d.train, d.num_users, &buf);
  s = WriteWholeFile((p / "train.txt").string(), buf);
  if (!s.ok()) return s;
  buf.clear();
  AppendLightGcn(d.test, d.num_users, &buf);
  return WriteWholeFile((p / "test.txt").string(), buf);
}

}  // namespace recall::trainer
