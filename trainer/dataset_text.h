// Text parsing shared by the dataset loaders (dataset.cc: LightGCN files and feature TSVs;
// interactions.cc: generic delimited files): ids, numeric cells, feature headers, lines.
// Internal to trainer/'s data code; the formats are trainer/DATASETS.md's.
//
// Thread-safety: free functions without shared state.
#ifndef RECALL_TRAINER_DATASET_TEXT_H_
#define RECALL_TRAINER_DATASET_TEXT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace recall::trainer {

// Ids must stay below this bound: it keeps a corrupt file from asking for terabytes of memory.
inline constexpr int64_t kMaxId = int64_t{1} << 31;

// Dense-id formats (LightGCN files, items.tsv/users.tsv) size their tables by the largest id, so
// one stray huge id (a timestamp in the wrong column, a hashed id) would allocate gigabytes of
// empty entities and crash the trainer. Ids may leave gaps, but the largest must stay below
// kDenseSlack + kDenseFactor * (distinct ids seen); real dense files are far inside it.
inline constexpr int64_t kDenseSlack = int64_t{1} << 20;
inline constexpr int64_t kDenseFactor = 16;

// The item id the index reserves (EmbeddingIndex::kReservedId, FAISS's "no result" label): an
// item carrying it could never be served, so files that name external item ids refuse it.
inline constexpr int64_t kReservedItemId = -1;

inline constexpr absl::string_view kNumericSuffix = ":num";


// max_id leaves most of the id range empty for `distinct` ids seen (see kDenseSlack).
bool TooSparse(int64_t max_id, int64_t distinct);
void SortUnique(std::vector<int64_t>* v);
absl::Status WriteWholeFile(const std::string& path, const std::string& contents);
bool IsSpace(char c);
// Parses a non-negative id below kMaxId; false on anything else.
bool ParseId(absl::string_view tok, int64_t* out);
// Parses any int64 (the external ids of the generic formats); false on anything else.
bool ParseExternalId(absl::string_view tok, int64_t* out);
// A column whose header ends in ":num".
bool IsNumericColumn(absl::string_view name);
// A numeric cell: empty (missing -> NaN) or a number finite as a float.
bool ParseNumericCell(absl::string_view v, float* out);
// Checks the numeric cells of one data row (fields[1..] against names[0..]).
absl::Status CheckNumericCells(const std::string& path, int64_t line_no,
                               const std::vector<std::string>& names,
                               const std::vector<absl::string_view>& fields);
// Moves the ":num" columns of names/values (already checked) into num_names (without the
// suffix) / num_values.
void SplitNumericColumns(std::vector<std::string>* names,
                         std::vector<std::vector<std::string>>* values,
                         std::vector<std::string>* num_names,
                         std::vector<std::vector<float>>* num_values);
// Appends numeric columns as ":num" string columns (the inverse of SplitNumericColumns).
void JoinNumericColumns(const std::vector<std::string>& num_names,
                        const std::vector<std::vector<float>>& num_values,
                        std::vector<std::string>* names,
                        std::vector<std::vector<std::string>>* values);
// Splits a TSV line on tabs, keeping empty fields.
std::vector<absl::string_view> SplitTabs(absl::string_view line);
// The feature column names of a header (after its id column): none empty, none twice (a
// ":num" column counts under its name without the suffix, which is the feature's name).
absl::Status CheckHeaderNames(const std::string& path, int64_t line_no,
                              const std::vector<std::string>& names);

// Calls fn(line, 1-based line number) for every line; strips a trailing '\r'.
template <typename Fn>
absl::Status ForEachLine(absl::string_view text, Fn&& fn) {
  int64_t line_no = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == absl::string_view::npos) end = text.size();
    absl::string_view line = text.substr(pos, end - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    ++line_no;
    absl::Status s = fn(line, line_no);
    if (!s.ok()) return s;
    pos = end + 1;
  }
  return absl::OkStatus();
}

}  // namespace recall::trainer

#endif  // RECALL_TRAINER_DATASET_TEXT_H_
