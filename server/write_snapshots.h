// WriteSnapshots: checkpoints of the folded write log in one directory, one file per
// checkpoint, named by the sequence it covers ("<dir>/<seq>.snapshot"). A file is a record file
// in the WAL framing (server/WAL.md) written atomically (temp file, fsync, rename, fsync of the
// directory), so a reader sees a whole snapshot or none. The fold is deterministic, so two
// replicas that checkpoint the same sequence write the same bytes and either may do it.
//
// Thread-safety: methods may be called concurrently (also from several processes sharing the
// directory): writes are atomic renames, reads tolerate files disappearing.
#ifndef RECALL_SERVER_WRITE_SNAPSHOTS_H_
#define RECALL_SERVER_WRITE_SNAPSHOTS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace recall::server {

class WriteSnapshots {
 public:
  explicit WriteSnapshots(std::string dir) : dir_(std::move(dir)) {}

  // Writes the snapshot covering `seq`; OK at once when one exists already. Creates the dir.
  absl::Status Write(uint64_t seq, const std::vector<std::string>& records) const;
  // Sequences of the snapshots on disk, ascending (unreadable names are ignored).
  std::vector<uint64_t> List() const;
  // The records of snapshot `seq`; DataLoss when the file is torn or corrupt, NotFound when
  // it is gone.
  absl::StatusOr<std::vector<std::string>> Read(uint64_t seq) const;
  // Deletes all but the newest `keep` snapshots (never fewer than 1) and leftover temp files;
  // returns the oldest kept sequence (0 when there is none).
  uint64_t Prune(size_t keep) const;

  std::string PathOf(uint64_t seq) const;
  const std::string& dir() const { return dir_; }

 private:
  const std::string dir_;
};

}  // namespace recall::server

#endif  // RECALL_SERVER_WRITE_SNAPSHOTS_H_
