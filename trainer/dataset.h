// Interaction datasets for training and evaluation: the in-memory form, the LightGCN split
// loader, and a writer of human-readable files (trainer/DATASETS.md describes every format).
#ifndef RECALL_TRAINER_DATASET_H_
#define RECALL_TRAINER_DATASET_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace recall::trainer {

// Users and items carry dense ids 0..n-1. Train and test lists have set semantics: each list
// is sorted ascending and free of duplicates (every loader and generator guarantees this; code
// that builds a Dataset by hand should call Normalize()).
struct Dataset {
  std::string name;  // "synthetic", "gowalla", ...
  int64_t num_users = 0;
  int64_t num_items = 0;
  std::vector<std::vector<int64_t>> train;  // [user] -> train items
  std::vector<std::vector<int64_t>> test;   // [user] -> held-out items (may be empty)

  // Optional categorical side features: names[f] with values[f][entity] ("" = missing).
  // values[f] has num_items (resp. num_users) entries.
  std::vector<std::string> item_cat_names;
  std::vector<std::vector<std::string>> item_cat_values;
  std::vector<std::string> user_cat_names;
  std::vector<std::vector<std::string>> user_cat_values;

  // Optional numeric side features: names[f] with values[f][entity] (NaN = missing). In feature
  // files a numeric column is marked by a ":num" suffix on its header name ("price:num"); the
  // name here is without it.
  std::vector<std::string> item_num_names;
  std::vector<std::vector<float>> item_num_values;
  std::vector<std::string> user_num_names;
  std::vector<std::vector<float>> user_num_values;

  // External ids (dense id -> the id the outside world uses, e.g. what the index serves).
  // Empty = identity (LightGCN files and the synthetic generator use dense ids directly).
  std::vector<int64_t> user_ids;
  std::vector<int64_t> item_ids;
  int64_t ExternalUserId(int64_t u) const { return user_ids.empty() ? u : user_ids[u]; }
  int64_t ExternalItemId(int64_t i) const { return item_ids.empty() ? i : item_ids[i]; }

  int64_t num_train_interactions() const;
  int64_t num_test_interactions() const;
  // Number of users with at least one test item (the users every evaluation averages over).
  int64_t num_test_users() const;
  // Train interactions per item, size num_items.
  std::vector<int64_t> ItemPopularity() const;

  // Sorts and dedups every list and resizes train/test to num_users. Idempotent.
  void Normalize();
  // Checks the invariants above (sizes, id ranges, sorted unique lists, feature column sizes).
  absl::Status Validate() const;
};

// LightGCN split format: dir/train.txt and dir/test.txt, lines "<user> <item> <item> ..."
// (whitespace separated, 0-based ids). Blank lines are skipped; a line with a user and no items
// is allowed; a user on several lines gets the union. Malformed lines (non-integer or negative
// token, id >= 2^31) give InvalidArgument naming the file and the 1-based line number; a
// missing file gives NotFound. num_users / num_items = max id + 1 over both files. The ids are
// dense: a largest user (item) id at or past 2^20 + 16 * (distinct user (item) ids) is
// InvalidArgument naming the line that holds it (one stray id would otherwise size the tables
// by it). A file with no user line, or a train.txt that lists no item, is InvalidArgument.
// name = the directory's last path component.
absl::StatusOr<Dataset> LoadLightGcn(const std::string& dir);

// Reads the optional feature files that WriteDatasetFiles writes (dir/items.tsv, dir/users.tsv)
// into d, replacing its side features. A file that does not exist is skipped. Rows may
// come in any order; entities without a row get "" (NaN) for every feature. A column whose
// header ends in ":num" is numeric: each cell is empty (missing) or a finite number, anything
// else is InvalidArgument naming file:line. An id beyond
// num_items/num_users grows the dataset (so entities with no interactions survive a round trip),
// within the same density bound as LoadLightGcn. Column names must be non-empty and unique
// ("price" and "price:num" clash); an "external_id" column holds int64s, and -1 (the index's
// reserved id) is refused for items.
absl::Status LoadFeatureFiles(const std::string& dir, Dataset* d);

// LoadLightGcn(dir) followed by LoadFeatureFiles(dir): reads back what WriteDatasetFiles wrote.
absl::StatusOr<Dataset> LoadDatasetDir(const std::string& dir);

// Generic interactions file: one "user<sep>item[<sep>timestamp]" row per interaction, where
// <sep> is a tab, a comma or runs of spaces (detected from the first line), ids are int64
// external ids (any value but -1 for items: the index reserves it), timestamp is a finite number
// (any unit). A file with no data row is InvalidArgument. A first line whose first field is
// not an integer is a header. All data rows have the same field count. Repeated (user, item)
// pairs collapse to one (keeping the latest timestamp).
// Dense ids are assigned in ascending external-id order (Dataset::user_ids / item_ids map back).
// Split per user with n distinct items: n < 2 or test_fraction <= 0 -> all train; otherwise
// clamp(round(test_fraction * n), 1, n - 1) test items: the LATEST ones when rows carry
// timestamps (ties by external item id), else a random choice fixed by `seed`.
// Optional feature files (user_features / item_features): a header "<id column><sep><name>..."
// then "<external id><sep><value>..." rows; entities that only appear there (e.g. cold items
// with no interactions) are added with empty train/test lists. "<name>:num" columns are numeric
// as in LoadFeatureFiles; column names as there.
// Errors: NotFound for a missing file, InvalidArgument naming file:line for a malformed row.
struct InteractionsOptions {
  double test_fraction = 0.2;
  uint64_t seed = 42;
  std::string user_features;  // optional path
  std::string item_features;  // optional path
  std::string name;           // Dataset::name; default: the file name without extension
};
absl::StatusOr<Dataset> LoadInteractions(const std::string& path,
                                         const InteractionsOptions& o = {});

// Writes d in human-readable files for demos and inspection, creating dir if needed:
//   dir/items.tsv  header "item_id\t<item cat name>...\t<item num name>:num..." then one row
//                  per item (numeric values printed to round-trip a float, missing = empty),
//   dir/users.tsv  the same for users,
//   dir/train.txt, dir/test.txt in LightGCN format (one line per user, users without items
//   included as a bare "<user>" line).
// Feature values containing a tab or newline give InvalidArgument.
absl::Status WriteDatasetFiles(const Dataset& d, const std::string& dir);

}  // namespace recall::trainer

#endif  // RECALL_TRAINER_DATASET_H_
