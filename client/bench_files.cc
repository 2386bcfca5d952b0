#include "client/bench_files.h"

#include <fcntl.h>
#include <google/protobuf/io/zero_copy_stream_impl.h>
#include <google/protobuf/util/delimited_message_util.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"

namespace recall::bench {
namespace {

using recall::v1::RecallRequest;
using recall::v1::RecallResponse;

template <typename Message>
absl::Status WriteDelimited(const std::string& path, const std::vector<Message>& messages) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::PermissionDeniedError(absl::StrCat(path, ": cannot write"));
  for (const Message& m : messages) {
    if (!google::protobuf::util::SerializeDelimitedToOstream(m, &out)) {
      return absl::InternalError(absl::StrCat(path, ": write failed"));
    }
  }
  out.close();
  if (!out) return absl::InternalError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

template <typename Message>
absl::StatusOr<std::vector<Message>> ReadDelimited(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const std::string why = std::strerror(errno);
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat(path, ": ", why));
    return absl::PermissionDeniedError(absl::StrCat(path, ": ", why));
  }
  std::vector<Message> out;
  {
    google::protobuf::io::FileInputStream in(fd);
    for (;;) {
      Message m;
      bool clean_eof = false;
      if (!google::protobuf::util::ParseDelimitedFromZeroCopyStream(&m, &in, &clean_eof)) {
        if (clean_eof) break;
        ::close(fd);
        return absl::DataLossError(absl::StrCat(path, ": message ", out.size(),
                                                " is truncated or malformed"));
      }
      out.push_back(std::move(m));
    }
  }
  ::close(fd);
  return out;
}

}  // namespace

absl::Status WriteRequestFile(const std::string& path, const std::vector<RecallRequest>& requests) {
  return WriteDelimited(path, requests);
}
absl::StatusOr<std::vector<RecallRequest>> ReadRequestFile(const std::string& path) {
  return ReadDelimited<RecallRequest>(path);
}
absl::Status WriteTopKFile(const std::string& path, const std::vector<RecallResponse>& exact) {
  return WriteDelimited(path, exact);
}
absl::StatusOr<std::vector<RecallResponse>> ReadTopKFile(const std::string& path) {
  return ReadDelimited<RecallResponse>(path);
}

absl::Status CheckTopKMatchesRequests(const std::vector<RecallRequest>& pool,
                                      const std::vector<RecallResponse>& exact) {
  if (exact.size() > pool.size()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the top-K file has ", exact.size(), " answers for ", pool.size(), " requests"));
  }
  for (size_t i = 0; i < exact.size(); ++i) {
    if (exact[i].request_id() != pool[i].request_id()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "answer ", i, " of the top-K file is for request_id '", exact[i].request_id(),
          "', request ", i, " is '", pool[i].request_id(),
          "': the files were not written together"));
    }
  }
  return absl::OkStatus();
}

AnswerScore ScoreAnswer(const RecallResponse& served, const RecallResponse& exact, int k) {
  const int top = std::min(std::max(0, k), exact.items_size());
  if (top == 0) {
    const double s = served.items_size() == 0 ? 1.0 : 0.0;
    return {s, s};
  }
  std::unordered_set<int64_t> top_ids, tied_ids;
  for (int j = 0; j < exact.items_size(); ++j) {
    (j < top ? top_ids : tied_ids).insert(exact.items(j).item_id());
  }
  int by_score = 0, by_id = 0;
  std::unordered_set<int64_t> seen;
  for (const auto& item : served.items()) {
    if (!seen.insert(item.item_id()).second) continue;  // a repeated id counts once
    const bool in_top = top_ids.count(item.item_id()) > 0;
    by_id += in_top;
    by_score += in_top || tied_ids.count(item.item_id()) > 0;
  }
  return {std::min(by_score, top) / static_cast<double>(top), by_id / static_cast<double>(top)};
}

absl::StatusOr<RecallResult> RecallAgainstTopK(Target& target,
                                               const std::vector<RecallRequest>& pool,
                                               const std::vector<RecallResponse>& exact, int n) {
  if (auto s = CheckTopKMatchesRequests(pool, exact); !s.ok()) return s;
  RecallResult r;
  double sum = 0, id_sum = 0;
  const int count = std::min<int>(std::max(0, n), static_cast<int>(exact.size()));
  for (int i = 0; i < count; ++i) {
    RecallResponse resp;
    absl::Notification done;
    grpc::Status status;
    target.Call(&pool[i], &resp, [&](const grpc::Status& s) {
      status = s;
      done.Notify();
    });
    done.WaitForNotification();
    if (!status.ok()) {
      return absl::UnavailableError(absl::StrCat("recall check: request ", i, ": ",
                                                 status.error_message()));
    }
    const AnswerScore a = ScoreAnswer(resp, exact[i], pool[i].k());
    sum += a.recall;
    id_sum += a.id_recall;
    ++r.queries;
  }
  if (r.queries > 0) {
    r.recall = sum / r.queries;
    r.id_recall = id_sum / r.queries;
  }
  return r;
}

absl::StatusOr<BenchInputs> ReadBenchInputs(const std::string& requests_file,
                                            const std::string& topk_file) {
  BenchInputs in;
  auto pool = ReadRequestFile(requests_file);
  if (!pool.ok()) {
    return absl::Status(pool.status().code(),
                        absl::StrCat("--requests_file: ", pool.status().message()));
  }
  in.pool = *std::move(pool);
  if (topk_file.empty()) return in;
  auto exact = ReadTopKFile(topk_file);
  if (!exact.ok()) {
    return absl::Status(exact.status().code(),
                        absl::StrCat("--topk_file: ", exact.status().message()));
  }
  in.exact = *std::move(exact);
  if (auto s = CheckTopKMatchesRequests(in.pool, in.exact); !s.ok()) return s;
  return in;
}

}  // namespace recall::bench
