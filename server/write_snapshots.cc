#include "server/write_snapshots.h"

#include <glog/logging.h>

#include <algorithm>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/write_ahead_log.h"

namespace recall::server {
namespace fs = std::filesystem;
namespace {
constexpr char kSuffix[] = ".snapshot";
}  // namespace

std::string WriteSnapshots::PathOf(uint64_t seq) const {
  return (fs::path(dir_) / absl::StrCat(seq, kSuffix)).string();
}

absl::Status WriteSnapshots::Write(uint64_t seq, const std::vector<std::string>& records) const {
  std::error_code ec;
  if (fs::exists(PathOf(seq), ec)) return absl::OkStatus();
  return WriteRecordFile(PathOf(seq), records);
}

std::vector<uint64_t> WriteSnapshots::List() const {
  std::vector<uint64_t> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    if (!absl::EndsWith(name, kSuffix)) continue;
    uint64_t seq;
    if (absl::SimpleAtoi(name.substr(0, name.size() - sizeof(kSuffix) + 1), &seq) && seq > 0) {
      out.push_back(seq);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

absl::StatusOr<std::vector<std::string>> WriteSnapshots::Read(uint64_t seq) const {
  const std::string path = PathOf(seq);
  std::vector<std::string> records;
  WalRecoveryInfo info;
  absl::Status s = ReadWal(
      path,
      [&records](uint64_t, absl::string_view payload) {
        records.emplace_back(payload);
        return absl::OkStatus();
      },
      &info);
  if (absl::IsNotFound(s)) return s;
  if (!s.ok()) return absl::DataLossError(absl::StrCat(path, ": ", s.message()));
  // A snapshot is written whole before its rename: any damage makes all of it untrustworthy.
  if (info.dropped_bytes > 0) {
    return absl::DataLossError(absl::StrCat(path, ": damaged (", info.drop_reason, ")"));
  }
  return records;
}

uint64_t WriteSnapshots::Prune(size_t keep) const {
  keep = std::max<size_t>(keep, 1);
  std::vector<uint64_t> seqs = List();
  std::error_code ec;
  for (size_t i = 0; i + keep < seqs.size(); ++i) {
    fs::remove(PathOf(seqs[i]), ec);
    if (ec) LOG(WARNING) << "cannot remove " << PathOf(seqs[i]) << ": " << ec.message();
  }
  // Temp files of writers that died before their rename (a live writer renames within a
  // moment; one that lost its file to this simply fails and is retried at the next boundary).
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    if (absl::StrContains(name, ".snapshot.tmp-")) {
      const auto age = fs::file_time_type::clock::now() - fs::last_write_time(entry.path(), ec);
      if (!ec && age > std::chrono::minutes(10)) fs::remove(entry.path(), ec);
    }
  }
  return seqs.empty() ? 0 : seqs[seqs.size() > keep ? seqs.size() - keep : 0];
}

}  // namespace recall::server
