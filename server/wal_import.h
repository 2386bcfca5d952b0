// ImportLocalWal: moves the online writes of a lone server's local WAL into a replicated write
// log (server/REPLICATION.md, "Moving a local WAL into a stream"). It folds the WAL and its
// newest checkpoint (read only; the files are not changed) and appends the fold to `log` as
// ordinary writes: upserts of up to 256 items and deletes of up to 1000 ids, in id order, with
// request ids "import-<n>", so a re-run after a crash appends nothing twice within the log's
// de-duplication window.
//
// Refuses (FailedPrecondition) a log that already holds writes other than an earlier import's:
// the import must come before any replica writes.
#ifndef RECALL_SERVER_WAL_IMPORT_H_
#define RECALL_SERVER_WAL_IMPORT_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "server/write_log.h"

namespace recall::server {

struct WalImportResult {
  int64_t items = 0;    // item ids in the fold
  int64_t records = 0;  // writes appended to the log (or found there from an earlier run)
  uint64_t covered = 0; // the local log's last sequence that the fold covers
};

// `snapshot_dir`: the local log's checkpoints (recall-server's default "<wal_path>.snapshots").
absl::StatusOr<WalImportResult> ImportLocalWal(const std::string& wal_path,
                                               const std::string& snapshot_dir, WriteLog& log);

}  // namespace recall::server

#endif  // RECALL_SERVER_WAL_IMPORT_H_
