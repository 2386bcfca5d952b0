#include "server/write_ahead_log.h"

#include <errno.h>
#include <fcntl.h>
#include <glog/logging.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/crc32c.h"

namespace recall::server {
namespace {

// A group stops growing at this many bytes so the leader's own latency stays bounded (leveldb
// uses the same 1 MiB), and at this many records so it is one writev (2 iovecs per record).
constexpr size_t kMaxGroupBytes = size_t{1} << 20;
constexpr size_t kMaxGroupRecords = IOV_MAX / 2;
// Recovery read buffer; payloads larger than this are read straight into their own buffer.
constexpr size_t kReadBufferBytes = size_t{256} << 10;

absl::Status IoError(int err, absl::string_view op, absl::string_view file) {
  return absl::ErrnoToStatus(err, absl::StrCat(op, " ", file));
}

void EncodeLE32(uint32_t v, char* out) {
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

uint32_t DecodeLE32(const char* in) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t{static_cast<uint8_t>(in[i])} << (8 * i);
  return v;
}

// The crc covers the length bytes too, so a corrupted length cannot pair with a valid crc.
uint32_t RecordCrc(const char* length_bytes, absl::string_view payload) {
  return Crc32cExtend(Crc32c(length_bytes, 4), payload.data(), payload.size());
}

void EncodeHeader(absl::string_view payload, char* header) {
  EncodeLE32(static_cast<uint32_t>(payload.size()), header + 4);
  EncodeLE32(Crc32cMask(RecordCrc(header + 4, payload)), header);
}

std::string DirName(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// A rename or a new directory entry is only durable once its directory is synced.
absl::Status FsyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return IoError(errno, "open directory", dir);
  absl::Status s;
  if (::fsync(fd) != 0) s = IoError(errno, "fsync directory", dir);
  ::close(fd);
  return s;
}

// mkdir -p of `dir`, syncing the parent of every directory it creates.
absl::Status MakeDirs(const std::string& dir) {
  if (dir.empty() || dir == "." || dir == "/") return absl::OkStatus();
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return absl::OkStatus();
    return IoError(ENOTDIR, "mkdir", dir);
  }
  for (size_t pos = dir.find('/', 1);; pos = dir.find('/', pos + 1)) {
    const std::string prefix = pos == std::string::npos ? dir : dir.substr(0, pos);
    if (::mkdir(prefix.c_str(), 0755) == 0) {
      if (auto s = FsyncDir(DirName(prefix)); !s.ok()) return s;
    } else if (errno != EEXIST) {
      return IoError(errno, "mkdir", prefix);
    }
    if (pos == std::string::npos) break;
  }
  return absl::OkStatus();
}

// Writes every byte of iov[0, n) (which it consumes), resuming after short writes and EINTR.
absl::Status WriteFully(int fd, iovec* iov, size_t n, const std::string& path) {
  size_t i = 0;
  while (i < n && iov[i].iov_len == 0) ++i;
  while (i < n) {
    const int count = static_cast<int>(std::min<size_t>(n - i, IOV_MAX));
    ssize_t r = ::writev(fd, iov + i, count);
    if (r < 0) {
      if (errno == EINTR) continue;
      return IoError(errno, "write", path);
    }
    if (r == 0) return IoError(EIO, "write (no progress)", path);
    size_t left = static_cast<size_t>(r);
    while (left > 0) {
      if (left >= iov[i].iov_len) {
        left -= iov[i].iov_len;
        ++i;
      } else {
        iov[i].iov_base = static_cast<char*>(iov[i].iov_base) + left;
        iov[i].iov_len -= left;
        left = 0;
      }
    }
    while (i < n && iov[i].iov_len == 0) ++i;
  }
  return absl::OkStatus();
}

// Sequential pread-based reader for recovery. The view it returns is valid until the next Read.
class LogReader {
 public:
  LogReader(int fd, const std::string& path) : fd_(fd), path_(path), buf_(kReadBufferBytes, '\0') {}

  // Sets *out to the next min(n, bytes left in the file) bytes.
  absl::Status Read(size_t n, absl::string_view* out) {
    if (end_ - pos_ < n) {
      std::memmove(buf_.data(), buf_.data() + pos_, end_ - pos_);
      end_ -= pos_;
      pos_ = 0;
      if (n <= buf_.size()) {
        // Fill the whole buffer: many small records then cost one pread.
        if (auto s = ReadUpTo(buf_.data(), n, buf_.size(), &end_); !s.ok()) return s;
      } else {
        large_.resize(n);
        std::memcpy(large_.data(), buf_.data(), end_);
        size_t got = end_;
        pos_ = end_ = 0;
        if (auto s = ReadUpTo(large_.data(), n, n, &got); !s.ok()) return s;
        *out = absl::string_view(large_.data(), got);
        return absl::OkStatus();
      }
    }
    const size_t got = std::min(n, end_ - pos_);
    *out = absl::string_view(buf_.data() + pos_, got);
    pos_ += got;
    return absl::OkStatus();
  }

 private:
  // Reads into dst[*have, cap) until *have >= want or end of file.
  absl::Status ReadUpTo(char* dst, size_t want, size_t cap, size_t* have) {
    while (*have < want) {
      ssize_t r = ::pread(fd_, dst + *have, cap - *have, static_cast<off_t>(file_offset_));
      if (r < 0) {
        if (errno == EINTR) continue;
        return IoError(errno, "read", path_);
      }
      if (r == 0) break;
      *have += static_cast<size_t>(r);
      file_offset_ += static_cast<uint64_t>(r);
    }
    return absl::OkStatus();
  }

  const int fd_;
  const std::string& path_;
  uint64_t file_offset_ = 0;  // next byte to pread
  std::string buf_;
  size_t pos_ = 0, end_ = 0;  // unread bytes are buf_[pos_, end_)
  std::string large_;
};

absl::StatusOr<uint64_t> FileSize(int fd, const std::string& path) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return IoError(errno, "fstat", path);
  return static_cast<uint64_t>(st.st_size);
}

// Reads records from the start of fd until the end or the first bad record.
absl::Status ScanLog(int fd, const std::string& path, const WriteAheadLog::ReplayFn& fn,
                     WalRecoveryInfo* info) {
  *info = WalRecoveryInfo();
  auto size = FileSize(fd, path);
  if (!size.ok()) return size.status();
  LogReader reader(fd, path);
  uint64_t offset = 0;
  std::string reason;
  for (;;) {
    absl::string_view header;
    if (auto s = reader.Read(kWalHeaderBytes, &header); !s.ok()) return s;
    if (header.empty()) break;
    if (header.size() < kWalHeaderBytes) {
      reason = absl::StrCat("short header (", header.size(), " of ", kWalHeaderBytes, " bytes)");
      break;
    }
    char length_bytes[4];
    std::memcpy(length_bytes, header.data() + 4, 4);
    const uint32_t expected_crc = Crc32cUnmask(DecodeLE32(header.data()));
    const uint32_t length = DecodeLE32(length_bytes);
    if (length > kWalMaxPayloadBytes) {
      reason = absl::StrCat("record length ", length, " exceeds the limit ", kWalMaxPayloadBytes);
      break;
    }
    // A plausible-but-corrupt length must not make us allocate and read megabytes past the end.
    if (offset + kWalHeaderBytes + length > *size) {
      size = FileSize(fd, path);  // ReadWal may be reading a log that is still growing
      if (!size.ok()) return size.status();
    }
    if (offset + kWalHeaderBytes + length > *size) {
      reason = absl::StrCat("short payload (", *size - offset - kWalHeaderBytes, " of ", length,
                            " bytes)");
      break;
    }
    absl::string_view payload;
    if (auto s = reader.Read(length, &payload); !s.ok()) return s;
    if (payload.size() < length) {
      reason = absl::StrCat("short payload (", payload.size(), " of ", length, " bytes)");
      break;
    }
    if (RecordCrc(length_bytes, payload) != expected_crc) {
      reason = absl::StrCat("checksum mismatch in a record of ", length, " bytes");
      break;
    }
    if (fn) {
      if (auto s = fn(info->records, payload); !s.ok()) return s;
    }
    ++info->records;
    offset += kWalHeaderBytes + length;
  }
  info->valid_bytes = offset;
  if (!reason.empty()) {
    size = FileSize(fd, path);
    if (!size.ok()) return size.status();
    info->dropped_bytes = *size > offset ? *size - offset : 0;
    info->drop_reason = absl::StrCat(reason, " at offset ", offset);
  }
  return absl::OkStatus();
}

// Writes `payloads` as framed records to `fd` (at its end) and fsyncs it; returns the bytes
// written. `name` is for error messages.
absl::StatusOr<uint64_t> WriteRecords(int fd, const std::vector<std::string>& payloads,
                                      const std::string& name) {
  uint64_t size = 0;
  std::vector<char> headers(kWalHeaderBytes * std::min(payloads.size(), kMaxGroupRecords));
  std::vector<iovec> iov;
  for (size_t begin = 0; begin < payloads.size(); begin += kMaxGroupRecords) {
    const size_t end = std::min(payloads.size(), begin + kMaxGroupRecords);
    iov.clear();
    for (size_t i = begin; i < end; ++i) {
      char* header = headers.data() + kWalHeaderBytes * (i - begin);
      EncodeHeader(payloads[i], header);
      iov.push_back({header, kWalHeaderBytes});
      iov.push_back({const_cast<char*>(payloads[i].data()), payloads[i].size()});
      size += kWalHeaderBytes + payloads[i].size();
    }
    if (auto s = WriteFully(fd, iov.data(), iov.size(), name); !s.ok()) return s;
  }
  if (::fsync(fd) != 0) return IoError(errno, "fsync", name);
  return size;
}

}  // namespace

absl::StatusOr<WalSyncPolicy> ParseWalSyncPolicy(absl::string_view name) {
  if (name == "always") return WalSyncPolicy::kAlways;
  if (name == "none") return WalSyncPolicy::kNone;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown WAL sync policy \"", name, "\" (expected \"always\" or \"none\")"));
}

absl::string_view WalSyncPolicyName(WalSyncPolicy policy) {
  switch (policy) {
    case WalSyncPolicy::kAlways:
      return "always";
    case WalSyncPolicy::kNone:
      return "none";
  }
  return "unknown";
}

struct WriteAheadLog::Writer {
  absl::string_view payload;                            // Append
  char header[kWalHeaderBytes];                         // Append, computed before queueing
  const std::vector<std::string>* rewrite = nullptr;    // Rewrite
  bool done = false;
  absl::Status status;
  uint64_t seq = 0;
  absl::CondVar cv;
};

WriteAheadLog::WriteAheadLog(Options options, int fd, uint64_t records, uint64_t file_bytes)
    : options_(std::move(options)), fd_(fd) {
  stats_.next_sequence = records;
  stats_.file_bytes = file_bytes;
}

WriteAheadLog::~WriteAheadLog() {
  if (fd_ >= 0) ::close(fd_);
}

absl::StatusOr<std::unique_ptr<WriteAheadLog>> WriteAheadLog::Open(const Options& options,
                                                                   const ReplayFn& replay,
                                                                   WalRecoveryInfo* info) {
  const std::string& path = options.path;
  if (path.empty()) return absl::InvalidArgumentError("WAL path is empty");
  auto annotate = [&path](const absl::Status& s) {
    return absl::Status(s.code(), absl::StrCat("opening WAL ", path, ": ", s.message()));
  };
  const std::string dir = DirName(path);
  if (auto s = MakeDirs(dir); !s.ok()) return annotate(s);

  // Until its rename, a .rewrite file is an unfinished compaction; the log itself is intact.
  const std::string leftover = path + ".rewrite";
  if (::unlink(leftover.c_str()) == 0) {
    LOG(WARNING) << "removed " << leftover << ", left by an interrupted WAL rewrite";
  } else if (errno != ENOENT) {
    return annotate(IoError(errno, "unlink", leftover));
  }

  struct stat st;
  const bool existed = ::stat(path.c_str(), &st) == 0;
  int fd = ::open(path.c_str(), O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return annotate(IoError(errno, "open", path));
  auto fail = [fd](absl::Status s) {
    ::close(fd);
    return s;
  };
  if (!existed) {
    if (auto s = FsyncDir(dir); !s.ok()) return fail(annotate(s));
  }

  WalRecoveryInfo local;
  if (auto s = ScanLog(fd, path, replay, &local); !s.ok()) return fail(s);
  if (local.dropped_bytes > 0) {
    LOG(WARNING) << "WAL " << path << ": dropping " << local.dropped_bytes << " bytes after "
                 << local.records << " valid records: " << local.drop_reason;
    if (::ftruncate(fd, static_cast<off_t>(local.valid_bytes)) != 0) {
      return fail(annotate(IoError(errno, "ftruncate", path)));
    }
    if (::fsync(fd) != 0) return fail(annotate(IoError(errno, "fsync", path)));
  }
  if (info != nullptr) *info = local;
  return std::unique_ptr<WriteAheadLog>(
      new WriteAheadLog(options, fd, local.records, local.valid_bytes));
}

absl::StatusOr<uint64_t> WriteAheadLog::Append(absl::string_view payload) {
  if (payload.size() > kWalMaxPayloadBytes) {
    return absl::InvalidArgumentError(absl::StrCat("WAL record of ", payload.size(),
                                                   " bytes exceeds the limit ",
                                                   kWalMaxPayloadBytes));
  }
  Writer w;
  w.payload = payload;
  EncodeHeader(payload, w.header);  // the crc is computed in parallel, outside the lock

  absl::MutexLock lock(&mu_);
  writers_.push_back(&w);
  while (!w.done && writers_.front() != &w) w.cv.Wait(&mu_);
  if (w.done) {
    if (!w.status.ok()) return w.status;
    return w.seq;
  }

  // Leader: commit every queued Append up to the next Rewrite or the group limits.
  size_t n = 0;
  size_t bytes = 0;
  for (Writer* x : writers_) {
    if (x->rewrite != nullptr || n == kMaxGroupRecords) break;
    const size_t record = kWalHeaderBytes + x->payload.size();
    if (n > 0 && bytes + record > kMaxGroupBytes) break;
    bytes += record;
    ++n;
  }
  std::vector<iovec> iov;
  iov.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    Writer* x = writers_[i];
    iov.push_back({x->header, kWalHeaderBytes});
    iov.push_back({const_cast<char*>(x->payload.data()), x->payload.size()});
  }
  absl::Status status = poison_;
  if (status.ok()) {
    // The followers' payloads stay alive: they are blocked in Append until we mark them done.
    mu_.Unlock();
    double sync_seconds = 0;
    // Only the leader moves the end of the file, so the size before this group is stable.
    const uint64_t group_start = [&] {
      absl::MutexLock relock(&mu_);
      return stats_.file_bytes;
    }();
    bool poison = false;
    status = WriteFully(fd_, iov.data(), iov.size(), options_.path);
    if (!status.ok()) {
      // A failed write (ENOSPC, EFBIG, EIO) may have left part of the group on disk. Cutting
      // the file back to the group's start keeps it a sequence of whole records, so the log
      // stays usable: once space is freed, the next Append succeeds. Only if the cut fails is
      // the log's tail unknown, and then it is poisoned (the next Open cuts the torn record).
      if (::ftruncate(fd_, static_cast<off_t>(group_start)) != 0) poison = true;
    } else if (options_.sync == WalSyncPolicy::kAlways) {
      const auto start = std::chrono::steady_clock::now();
      if (::fdatasync(fd_) != 0) {
        // After a failed fdatasync the kernel may have dropped the dirty pages and cleared the
        // error: a retry could "succeed" without the data on disk. Never trust this file again.
        status = IoError(errno, "fdatasync", options_.path);
        poison = true;
      }
      sync_seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
    if (status.ok() && options_.on_commit) options_.on_commit(bytes, sync_seconds);
    if (!status.ok() && options_.on_error) options_.on_error(status);
    mu_.Lock();
    if (status.ok()) {
      stats_.appended_records += n;
      stats_.appended_bytes += bytes;
      stats_.file_bytes += bytes;
      stats_.groups += 1;
      if (options_.sync == WalSyncPolicy::kAlways) stats_.syncs += 1;
    } else if (poison) {
      LOG(ERROR) << "WAL " << options_.path << " is now unusable: " << status;
      poison_ = status;
    } else {
      LOG(WARNING) << "WAL " << options_.path << ": append of " << n
                   << " records failed and was rolled back: " << status;
    }
  }
  const uint64_t first_seq = stats_.next_sequence;
  if (status.ok()) stats_.next_sequence += n;
  for (size_t i = 0; i < n; ++i) {
    Writer* x = writers_.front();
    writers_.pop_front();
    x->status = status;
    x->seq = first_seq + i;
    x->done = true;
    if (x != &w) x->cv.Signal();
  }
  if (!writers_.empty()) writers_.front()->cv.Signal();  // the next leader
  if (!status.ok()) return status;
  return first_seq;
}

absl::StatusOr<uint64_t> WriteAheadLog::Rewrite(const std::vector<std::string>& payloads) {
  for (const std::string& p : payloads) {
    if (p.size() > kWalMaxPayloadBytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "WAL record of ", p.size(), " bytes exceeds the limit ", kWalMaxPayloadBytes));
    }
  }
  Writer w;
  w.rewrite = &payloads;
  absl::MutexLock lock(&mu_);
  writers_.push_back(&w);
  // Leaders never take a Rewrite into their group, so only reaching the front ends this wait.
  while (writers_.front() != &w) w.cv.Wait(&mu_);

  absl::StatusOr<uint64_t> result = uint64_t{0};
  if (!poison_.ok()) {
    result = poison_;
  } else {
    mu_.Unlock();
    bool poison = false;
    result = DoRewrite(payloads, &poison);
    mu_.Lock();
    if (result.ok()) {
      stats_.file_bytes = *result;
      stats_.next_sequence = payloads.size();
      stats_.rewrites += 1;
    } else if (poison) {
      LOG(ERROR) << "WAL " << options_.path << " is now unusable: " << result.status();
      poison_ = result.status();
    }
  }
  writers_.pop_front();
  if (!writers_.empty()) writers_.front()->cv.Signal();
  return result;
}

absl::StatusOr<uint64_t> WriteAheadLog::DoRewrite(const std::vector<std::string>& payloads,
                                                  bool* poison) {
  const std::string& path = options_.path;
  const std::string tmp = path + ".rewrite";
  // O_APPEND so that, once renamed, this descriptor simply becomes the log's.
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return IoError(errno, "open", tmp);
  auto abandon = [&](absl::Status s) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return s;
  };
  absl::StatusOr<uint64_t> size = WriteRecords(fd, payloads, tmp);
  if (!size.ok()) return abandon(size.status());
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return abandon(IoError(errno, absl::StrCat("rename ", tmp, " to"), path));
  }
  // From here the old file is gone: keep the new descriptor whatever happens, but a directory
  // that cannot be synced means the rename may not survive power loss.
  ::close(fd_);
  fd_ = fd;
  if (auto s = FsyncDir(DirName(path)); !s.ok()) {
    *poison = true;
    return s;
  }
  return size;
}

WalStats WriteAheadLog::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

absl::Status ReadWal(const std::string& path, const WriteAheadLog::ReplayFn& fn,
                     WalRecoveryInfo* info) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return IoError(errno, "open", path);
  WalRecoveryInfo local;
  absl::Status s = ScanLog(fd, path, fn, &local);
  ::close(fd);
  if (s.ok() && info != nullptr) *info = local;
  return s;
}

absl::Status WriteRecordFile(const std::string& path, const std::vector<std::string>& payloads) {
  for (const std::string& p : payloads) {
    if (p.size() > kWalMaxPayloadBytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": record of ", p.size(), " bytes exceeds the limit ", kWalMaxPayloadBytes));
    }
  }
  const std::string dir = DirName(path);
  if (auto s = MakeDirs(dir); !s.ok()) return s;
  const std::string tmp = absl::StrCat(path, ".tmp-", ::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return IoError(errno, "open", tmp);
  absl::StatusOr<uint64_t> size = WriteRecords(fd, payloads, tmp);
  ::close(fd);
  if (size.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    size = IoError(errno, absl::StrCat("rename ", tmp, " to"), path);
  }
  if (!size.ok()) {
    ::unlink(tmp.c_str());
    return size.status();
  }
  return FsyncDir(dir);
}

}  // namespace recall::server
