#include "index/vector_file.h"

#include <cerrno>
#include <cstdio>
#include <memory>

#include "absl/strings/str_cat.h"

namespace recall {
namespace {

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

}  // namespace

absl::Status WriteFvecs(const std::string& path, const float* values, int64_t rows, int dim) {
  if (dim <= 0 || rows < 0 || (rows > 0 && values == nullptr)) {
    return absl::InvalidArgumentError("WriteFvecs: bad dimension, row count or data");
  }
  std::FILE* raw = std::fopen(path.c_str(), "wb");
  if (raw == nullptr) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot open \"", path, "\" for writing"));
  }
  File f(raw);
  const int32_t d = dim;
  for (int64_t r = 0; r < rows; ++r) {
    if (std::fwrite(&d, sizeof(d), 1, f.get()) != 1 ||
        std::fwrite(values + r * dim, sizeof(float), dim, f.get()) != static_cast<size_t>(dim)) {
      return absl::ErrnoToStatus(errno, absl::StrCat("cannot write \"", path, "\""));
    }
  }
  if (std::fclose(f.release()) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot write \"", path, "\""));
  }
  return absl::OkStatus();
}

absl::StatusOr<VectorSet> ReadFvecs(const std::string& path) {
  File f(std::fopen(path.c_str(), "rb"));
  if (f == nullptr) return absl::NotFoundError(absl::StrCat("cannot open \"", path, "\""));
  VectorSet out;
  int32_t d = 0;
  while (std::fread(&d, sizeof(d), 1, f.get()) == 1) {
    if (d <= 0 || d > (1 << 20) || (out.dim != 0 && d != out.dim)) {
      return absl::DataLossError(absl::StrCat("\"", path, "\": row ", out.rows(),
                                              " has dimension ", d,
                                              out.dim ? absl::StrCat(", expected ", out.dim) : ""));
    }
    out.dim = d;
    const size_t at = out.values.size();
    out.values.resize(at + d);
    if (std::fread(out.values.data() + at, sizeof(float), d, f.get()) != static_cast<size_t>(d)) {
      return absl::DataLossError(absl::StrCat("\"", path, "\": truncated in row ", out.rows()));
    }
  }
  if (!std::feof(f.get())) {
    return absl::DataLossError(absl::StrCat("\"", path, "\": read error"));
  }
  return out;
}

}  // namespace recall
