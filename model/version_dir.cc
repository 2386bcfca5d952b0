#include "model/version_dir.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/match.h"
#include "google/protobuf/util/json_util.h"

namespace recall {
namespace fs = std::filesystem;

namespace {

absl::Status ErrnoStatus(absl::string_view what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

absl::Status FsyncPath(const std::string& path, bool directory) {
  int fd = ::open(path.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (fd < 0) return ErrnoStatus("open", path);
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return ErrnoStatus("fsync", path);
  return absl::OkStatus();
}

absl::Status WriteFileSynced(const std::string& path, const std::string& data) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return ErrnoStatus("open", path);
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      ::close(fd);
      return ErrnoStatus("write", path);
    }
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    ::close(fd);
    return ErrnoStatus("fsync", path);
  }
  ::close(fd);
  return absl::OkStatus();
}

bool ParseVersion(const std::string& name, int64_t* v) {
  if (name.empty() || name.size() > 18) return false;
  for (char c : name) {
    if (c < '0' || c > '9') return false;
  }
  return absl::SimpleAtoi(name, v) && *v > 0;
}

}  // namespace

absl::StatusOr<std::string> Sha256File(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    if (in.gcount() > 0) EVP_DigestUpdate(ctx, buf.data(), static_cast<size_t>(in.gcount()));
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, md, &len);
  EVP_MD_CTX_free(ctx);
  static const char* kHex = "0123456789abcdef";
  std::string hex;
  hex.reserve(len * 2);
  for (unsigned int i = 0; i < len; ++i) {
    hex.push_back(kHex[md[i] >> 4]);
    hex.push_back(kHex[md[i] & 15]);
  }
  return hex;
}

std::vector<int64_t> ListVersionNumbers(const std::string& base) {
  std::vector<int64_t> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(base, ec)) {
    int64_t v;
    if (entry.is_directory(ec) && ParseVersion(entry.path().filename().string(), &v)) {
      out.push_back(v);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

int64_t NextVersionNumber(const std::string& base) {
  auto v = ListVersionNumbers(base);
  return v.empty() ? 1 : v.back() + 1;
}

std::string VersionPath(const std::string& base, int64_t version) {
  return (fs::path(base) / std::to_string(version)).string();
}

absl::StatusOr<std::string> CreateStagingDir(const std::string& base, int64_t version) {
  std::error_code ec;
  fs::create_directories(base, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", base, ": ", ec.message()));
  std::string dir =
      (fs::path(base) / absl::StrCat(".tmp-", version, "-", ::getpid())).string();
  fs::remove_all(dir, ec);
  if (!fs::create_directory(dir, ec)) {
    return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  }
  return dir;
}

absl::StatusOr<std::string> PublishVersion(const std::string& base, const std::string& staging,
                                           recall::v1::ModelManifest manifest) {
  if (manifest.version() <= 0) return absl::InvalidArgumentError("manifest.version must be > 0");
  manifest.clear_files();
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(staging, ec)) {
    if (!entry.is_regular_file()) continue;
    std::string name = entry.path().filename().string();
    if (name != kManifestFile) names.push_back(name);
  }
  if (ec) return absl::InternalError(absl::StrCat("cannot list ", staging, ": ", ec.message()));
  std::sort(names.begin(), names.end());
  for (const auto& name : names) {
    const std::string path = (fs::path(staging) / name).string();
    if (auto s = FsyncPath(path, false); !s.ok()) return s;
    auto digest = Sha256File(path);
    if (!digest.ok()) return digest.status();
    auto* f = manifest.add_files();
    f->set_path(name);
    f->set_sha256(*digest);
    f->set_size_bytes(static_cast<int64_t>(fs::file_size(path)));
  }
  if (manifest.format_version() == 0) manifest.set_format_version(1);
  if (manifest.user_tower_file().empty()) manifest.set_user_tower_file(kUserTowerFile);
  if (manifest.item_tower_file().empty()) manifest.set_item_tower_file(kItemTowerFile);
  if (manifest.index_file().empty()) manifest.set_index_file(kIndexFile);

  std::string json;
  google::protobuf::util::JsonPrintOptions opts;
  opts.add_whitespace = true;
  opts.preserve_proto_field_names = true;
  auto st = google::protobuf::util::MessageToJsonString(manifest, &json, opts);
  if (!st.ok()) return absl::InternalError(absl::StrCat("manifest to JSON: ", st.ToString()));
  if (auto s = WriteFileSynced((fs::path(staging) / kManifestFile).string(), json); !s.ok()) {
    return s;
  }
  if (auto s = FsyncPath(staging, true); !s.ok()) return s;
  const std::string target = VersionPath(base, manifest.version());
  if (fs::exists(target)) {
    return absl::AlreadyExistsError(absl::StrCat("version dir already exists: ", target));
  }
  if (::rename(staging.c_str(), target.c_str()) != 0) return ErrnoStatus("rename to", target);
  if (auto s = FsyncPath(base, true); !s.ok()) return s;
  return target;
}

absl::StatusOr<recall::v1::ModelManifest> ReadManifest(const std::string& dir) {
  const std::string path = (fs::path(dir) / kManifestFile).string();
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": missing manifest"));
  std::stringstream ss;
  ss << in.rdbuf();
  recall::v1::ModelManifest manifest;
  google::protobuf::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = true;  // forward compatible with newer writers
  auto st = google::protobuf::util::JsonStringToMessage(ss.str(), &manifest, opts);
  if (!st.ok()) {
    return absl::DataLossError(absl::StrCat(path, ": unparsable manifest: ", st.ToString()));
  }
  return manifest;
}

absl::StatusOr<recall::v1::ModelManifest> VerifyVersionDir(const std::string& dir) {
  auto manifest = ReadManifest(dir);
  if (!manifest.ok()) return manifest.status();
  int64_t dir_version = 0;
  const std::string name = fs::path(dir).lexically_normal().filename().string();
  if (!ParseVersion(name.empty() ? fs::path(dir).parent_path().filename().string() : name,
                    &dir_version) ||
      dir_version != manifest->version()) {
    return absl::DataLossError(absl::StrCat(dir, "/", kManifestFile, ": version ",
                                            manifest->version(),
                                            " does not match the directory name"));
  }
  if (manifest->embedding_dim() <= 0) {
    return absl::DataLossError(absl::StrCat(dir, "/", kManifestFile, ": embedding_dim <= 0"));
  }
  if (const int s = manifest->score_offset_stride();
      s < 0 || s == 1 || (s > 0 && manifest->embedding_dim() % s != 0)) {
    return absl::DataLossError(absl::StrCat(dir, "/", kManifestFile, ": score_offset_stride ", s,
                                            " does not split embedding_dim ",
                                            manifest->embedding_dim(), " into blocks"));
  }
  std::vector<std::string> listed;
  for (const auto& f : manifest->files()) {
    if (f.path().empty() || absl::StrContains(f.path(), "/") || f.path() == "..") {
      return absl::DataLossError(absl::StrCat(dir, "/", kManifestFile, ": bad file name \"",
                                              f.path(), "\""));
    }
    const std::string path = (fs::path(dir) / f.path()).string();
    std::error_code ec;
    const auto size = fs::file_size(path, ec);
    if (ec) return absl::DataLossError(absl::StrCat(path, ": missing"));
    if (static_cast<int64_t>(size) != f.size_bytes()) {
      return absl::DataLossError(absl::StrCat(path, ": size ", size, " != ", f.size_bytes(),
                                              " in the manifest"));
    }
    auto digest = Sha256File(path);
    if (!digest.ok()) return absl::DataLossError(absl::StrCat(path, ": unreadable"));
    if (*digest != f.sha256()) {
      return absl::DataLossError(absl::StrCat(path, ": sha256 mismatch (file corrupted)"));
    }
    listed.push_back(f.path());
  }
  // Every file the loader reads must be checksummed: the towers, the index and the spec's
  // vocabularies (ModelVersion::Load reads those too).
  std::vector<std::string> required = {manifest->user_tower_file(), manifest->item_tower_file(),
                                       manifest->index_file()};
  const auto& spec = manifest->feature_spec();
  for (const std::string* vocab : {&spec.user_id().vocab_file(), &spec.item_id().vocab_file()}) {
    if (!vocab->empty()) required.push_back(*vocab);
  }
  for (const std::string& needed : required) {
    if (std::find(listed.begin(), listed.end(), needed) == listed.end()) {
      return absl::DataLossError(absl::StrCat(dir, "/", needed.empty() ? "<unnamed>" : needed,
                                              ": not listed in the manifest"));
    }
  }
  return manifest;
}

int RemoveStaleStagingDirs(const std::string& base) {
  int removed = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(base, ec)) {
    const std::string name = entry.path().filename().string();
    if (!absl::StartsWith(name, ".tmp-")) continue;
    std::vector<std::string> parts = absl::StrSplit(name, '-');
    int pid = 0;
    if (parts.size() == 3 && absl::SimpleAtoi(parts[2], &pid) && pid > 0 &&
        (::kill(pid, 0) == 0 || errno == EPERM)) {
      continue;  // writer still alive
    }
    fs::remove_all(entry.path(), ec);
    if (!ec) ++removed;
  }
  return removed;
}

}  // namespace recall
