#include "trainer/dataset_text.h"

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


namespace recall::trainer {

bool TooSparse(int64_t max_id, int64_t distinct) {
  return max_id >= kDenseSlack + kDenseFactor * distinct;
}

void SortUnique(std::vector<int64_t>* v) {
  std::sort(v->begin(), v->end());
  v->erase(std::unique(v->begin(), v->end()), v->end());
}

absl::Status WriteWholeFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::PermissionDeniedError(absl::StrCat(path, ": cannot open for writing"));
  out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\v' || c == '\f' || c == '\r'; }

// Parses a non-negative id below kMaxId; false on anything else.
bool ParseId(absl::string_view tok, int64_t* out) {
  int64_t v = 0;
  auto [p, ec] = std::from_chars(tok.data(), tok.data() + tok.size(), v);
  if (ec != std::errc() || p != tok.data() + tok.size() || v < 0 || v >= kMaxId) return false;
  *out = v;
  return true;
}

// Parses any int64 (the external ids of the generic formats); false on anything else.
bool ParseExternalId(absl::string_view tok, int64_t* out) {
  int64_t v = 0;
  auto [p, ec] = std::from_chars(tok.data(), tok.data() + tok.size(), v);
  if (tok.empty() || ec != std::errc() || p != tok.data() + tok.size()) return false;
  *out = v;
  return true;
}

bool IsNumericColumn(absl::string_view name) {
  return name.size() > kNumericSuffix.size() && absl::EndsWith(name, kNumericSuffix);
}

// A numeric cell: empty (missing -> NaN) or a number finite as a float.
bool ParseNumericCell(absl::string_view v, float* out) {
  v = absl::StripAsciiWhitespace(v);
  if (v.empty()) {
    *out = std::numeric_limits<float>::quiet_NaN();
    return true;
  }
  double d = 0;
  if (!absl::SimpleAtod(v, &d) || !std::isfinite(d) || !std::isfinite(static_cast<float>(d))) {
    return false;
  }
  *out = static_cast<float>(d);
  return true;
}

// Checks the numeric cells of one data row (fields[1..] against names[0..]).
absl::Status CheckNumericCells(const std::string& path, int64_t line_no,
                               const std::vector<std::string>& names,
                               const std::vector<absl::string_view>& fields) {
  for (size_t j = 0; j < names.size(); ++j) {
    float x;
    if (IsNumericColumn(names[j]) && !ParseNumericCell(fields[j + 1], &x)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", line_no, ": column '", names[j], "' needs a finite number or ",
                       "nothing, got '", fields[j + 1].substr(0, 40), "'"));
    }
  }
  return absl::OkStatus();
}

// Moves the ":num" columns of names/values (already checked) into num_names (without the
// suffix) / num_values.
void SplitNumericColumns(std::vector<std::string>* names,
                         std::vector<std::vector<std::string>>* values,
                         std::vector<std::string>* num_names,
                         std::vector<std::vector<float>>* num_values) {
  num_names->clear();
  num_values->clear();
  size_t kept = 0;
  for (size_t f = 0; f < names->size(); ++f) {
    if (!IsNumericColumn((*names)[f])) {
      if (kept != f) {
        (*names)[kept] = std::move((*names)[f]);
        (*values)[kept] = std::move((*values)[f]);
      }
      ++kept;
      continue;
    }
    const std::string& n = (*names)[f];
    num_names->push_back(n.substr(0, n.size() - kNumericSuffix.size()));
    std::vector<float> col((*values)[f].size());
    for (size_t e = 0; e < col.size(); ++e) ParseNumericCell((*values)[f][e], &col[e]);
    num_values->push_back(std::move(col));
  }
  names->resize(kept);
  values->resize(kept);
}

// Appends numeric columns as ":num" string columns (the inverse of SplitNumericColumns).
void JoinNumericColumns(const std::vector<std::string>& num_names,
                        const std::vector<std::vector<float>>& num_values,
                        std::vector<std::string>* names,
                        std::vector<std::vector<std::string>>* values) {
  for (size_t f = 0; f < num_names.size() && f < num_values.size(); ++f) {
    names->push_back(absl::StrCat(num_names[f], kNumericSuffix));
    std::vector<std::string> col(num_values[f].size());
    for (size_t e = 0; e < col.size(); ++e) {
      if (!std::isnan(num_values[f][e])) col[e] = absl::StrFormat("%.9g", num_values[f][e]);
    }
    values->push_back(std::move(col));
  }
}

// Splits a TSV line on tabs, keeping empty fields.
std::vector<absl::string_view> SplitTabs(absl::string_view line) {
  return absl::StrSplit(line, '\t');
}

// The feature column names of a header (after its id column): none empty, none twice (a
// ":num" column counts under its name without the suffix, which is the feature's name).
absl::Status CheckHeaderNames(const std::string& path, int64_t line_no,
                              const std::vector<std::string>& names) {
  absl::flat_hash_set<absl::string_view> seen;
  for (size_t j = 0; j < names.size(); ++j) {
    absl::string_view n = names[j];
    if (IsNumericColumn(n)) n.remove_suffix(kNumericSuffix.size());
    if (absl::StripAsciiWhitespace(n).empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", line_no, ": column ", j + 2, " has an empty name"));
    }
    if (!seen.insert(n).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", line_no, ": duplicate column '", n, "'"));
    }
  }
  return absl::OkStatus();
}


}  // namespace recall::trainer
