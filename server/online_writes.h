// OnlineWrites: durable UpsertItems / DeleteItems on top of the serving model version.
//
// Every accepted write is appended to the write-ahead log (server/WAL.md) before it is applied
// to the live index and acknowledged, so an acknowledged write survives a crash. The store also
// keeps the folded state of the log (the last write per item id) in memory; that state is what
// it re-applies to a newly loaded version before the swap (feature upserts re-embedded by the
// new item tower, raw vectors only on the model version they were written for, deletes
// re-applied), and what compaction writes back as the new, minimal log.
//
// Ordering: writes to the same item id take effect in log order, even when concurrent. Version
// swaps take the write barrier exclusively for the last catch-up, so a write is applied either
// to the old version before the catch-up (and then carried over) or to the new one; writers
// never wait on a load, only on that short tail.
//
// Thread-safety: all methods are thread-safe.
#ifndef RECALL_SERVER_ONLINE_WRITES_H_
#define RECALL_SERVER_ONLINE_WRITES_H_

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "recall/v1/recall.pb.h"
#include "recall/v1/wal.pb.h"
#include "server/version_manager.h"
#include "server/write_ahead_log.h"

namespace recall::server {

class OnlineWrites {
 public:
  struct Options {
    std::string wal_path;
    WalSyncPolicy sync = WalSyncPolicy::kAlways;
    // Compact when the log exceeds this many bytes and twice its size after the last
    // compaction (0 = only at start-up).
    uint64_t compact_bytes = 64ull << 20;
    std::function<void(uint64_t bytes, double sync_seconds)> on_commit;  // metrics
    std::function<void(const absl::Status&)> on_error;                   // metrics: failed appends
  };

  // Opens (creates) the log and folds every complete record into memory; a torn tail is cut
  // off and reported in *recovery. Then compacts once, so start-up cost stays bounded.
  static absl::StatusOr<std::unique_ptr<OnlineWrites>> Open(Options options,
                                                            WalRecoveryInfo* recovery);
  ~OnlineWrites();

  // The VersionManager installer: re-applies the folded state to `candidate` (outside the
  // write barrier), then under the barrier applies what was written meanwhile and swaps.
  absl::Status Install(Servable& candidate, const std::function<void()>& swap);

  // Logs, applies to `servable` (the version serving right now) and returns once durable.
  // The caller has validated `req` against `servable`, and embedded its feature items into
  // `feature_vectors` (rows in the order of the feature items in req). Aborted if the serving
  // version changed since (the caller retries with the new one).
  absl::Status Upsert(const std::shared_ptr<Servable>& servable,
                      const recall::v1::UpsertItemsRequest& req,
                      const std::vector<float>& feature_vectors,
                      const VersionManager& versions);
  // Returns how many of the ids were live in the index.
  absl::StatusOr<int64_t> Delete(const std::shared_ptr<Servable>& servable,
                                 const recall::v1::DeleteItemsRequest& req,
                                 const VersionManager& versions);

  // Folds the log into a snapshot of the last write per id (and restarts the log with it).
  absl::Status Compact();

  int64_t tracked_items() const;  // ids with an online write in the folded state
  WalStats wal_stats() const { return wal_->stats(); }

 private:
  struct Entry {
    uint64_t seq = 0;
    bool deleted = false;
    recall::v1::ItemUpsert upsert;  // when !deleted
  };
  explicit OnlineWrites(Options options) : options_(std::move(options)) {}
  // Appends `rec` to the log if `servable` is still the serving version (Aborted otherwise:
  // the caller validated and embedded against it). Returns the record's log position.
  absl::StatusOr<uint64_t> LogIfServing(const std::shared_ptr<Servable>& servable,
                                        const VersionManager& versions,
                                        const recall::v1::WriteAheadRecord& rec)
      ABSL_SHARED_LOCKS_REQUIRED(barrier_);
  // Records a logged write (logical sequence number `seq`) in the folded state.
  void Fold(uint64_t seq, const recall::v1::WriteAheadRecord& record)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_mu_);
  // The logical sequence number of the log record with position `wal_seq`.
  uint64_t Logical(uint64_t wal_seq) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_mu_) {
    return seq_base_ + wal_seq;
  }
  // Applies entries with seq > after_seq to `s` (re-embedding feature upserts with its tower).
  absl::Status ApplyEntries(Servable& s, uint64_t after_seq, uint64_t* max_seq);
  void MaybeScheduleCompaction();
  void CompactionLoop();

  const Options options_;
  std::unique_ptr<WriteAheadLog> wal_;

  // Writers hold it shared across log append + apply; Install's last step and Compact hold it
  // exclusively.
  absl::Mutex barrier_;
  mutable absl::Mutex state_mu_ ABSL_ACQUIRED_AFTER(barrier_);
  absl::flat_hash_map<int64_t, Entry> state_ ABSL_GUARDED_BY(state_mu_);
  // Logical sequence numbers increase forever (0 = none); a log position maps to one through
  // seq_base_, which moves at each compaction because the rewritten log restarts at 0.
  uint64_t seq_base_ ABSL_GUARDED_BY(state_mu_) = 1;
  uint64_t last_seq_ ABSL_GUARDED_BY(state_mu_) = 0;
  uint64_t compacted_bytes_ ABSL_GUARDED_BY(state_mu_) = 0;

  absl::Mutex compact_mu_;
  bool compact_requested_ ABSL_GUARDED_BY(compact_mu_) = false;
  bool stop_ ABSL_GUARDED_BY(compact_mu_) = false;
  std::thread compactor_;
};

}  // namespace recall::server

#endif  // RECALL_SERVER_ONLINE_WRITES_H_
