#include "model/vocabulary.h"

#include <algorithm>
#include <fstream>

#include "absl/strings/str_cat.h"

namespace recall {

Vocabulary::Vocabulary(std::vector<int64_t> ids) : ids_(std::move(ids)) {
  std::sort(ids_.begin(), ids_.end());
  ids_.erase(std::unique(ids_.begin(), ids_.end()), ids_.end());
}

int64_t Vocabulary::Row(int64_t id) const {
  auto it = std::lower_bound(ids_.begin(), ids_.end(), id);
  if (it == ids_.end() || *it != id) return 0;
  return 1 + (it - ids_.begin());
}

absl::Status Vocabulary::Save(const std::string& path) const {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::InternalError(absl::StrCat("cannot open ", path, " for writing"));
  out.write(reinterpret_cast<const char*>(ids_.data()),
            static_cast<std::streamsize>(ids_.size() * sizeof(int64_t)));
  out.flush();
  if (!out) return absl::InternalError(absl::StrCat("write failed: ", path));
  return absl::OkStatus();
}

absl::StatusOr<Vocabulary> Vocabulary::Load(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open vocabulary ", path));
  const std::streamsize bytes = in.tellg();
  if (bytes % static_cast<std::streamsize>(sizeof(int64_t)) != 0) {
    return absl::DataLossError(absl::StrCat(path, ": size ", bytes, " is not a multiple of 8"));
  }
  std::vector<int64_t> ids(static_cast<size_t>(bytes) / sizeof(int64_t));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(ids.data()), bytes);
  if (!in) return absl::DataLossError(absl::StrCat("short read: ", path));
  if (!std::is_sorted(ids.begin(), ids.end()) ||
      std::adjacent_find(ids.begin(), ids.end()) != ids.end()) {
    return absl::DataLossError(absl::StrCat(path, ": ids are not strictly ascending"));
  }
  Vocabulary v;
  v.ids_ = std::move(ids);
  return v;
}

}  // namespace recall
