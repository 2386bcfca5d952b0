// ReplicaSet: what makes a recall-server one replica of a set (--write_log=nats://...):
//   - it serves the cluster-wide pin: at start it loads the pinned version (or the newest),
//     then follows every change of the pin, whichever replica made it;
//   - SetServingVersion loads and warms the version here first and only then publishes the
//     pin, so a version this replica cannot load never reaches the others;
//   - it announces its serving version, pin and applied write sequence every few seconds;
//   - it tells the version manager which versions the set still needs, so pruning
//     (--keep_versions) never deletes a version any live replica serves or the pin names.
//
// Thread-safety: all methods are thread-safe.
#ifndef RECALL_SERVER_REPLICA_SET_H_
#define RECALL_SERVER_REPLICA_SET_H_

#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/cluster_control.h"
#include "server/metrics.h"
#include "server/online_writes.h"
#include "server/version_manager.h"

namespace recall::server {

class ReplicaSet {
 public:
  struct Options {
    std::string replica_id;                           // unique in the set
    absl::Duration announce_every = absl::Seconds(5);  // well within the registry's TTL
  };
  // None of the pointers is owned; all must outlive this. `writes` and `metrics` may be null.
  ReplicaSet(ClusterControl* control, VersionManager* versions, const OnlineWrites* writes,
             Metrics* metrics, Options options);
  ~ReplicaSet();

  // Loads the pinned version (the newest when there is no pin, the store is unreachable, or the
  // pinned version fails here), then starts following the pin and announcing. Returns the
  // status of the load (NotFound when there is no version yet).
  absl::Status Start();
  // The cluster-wide SetServingVersion (0 = unpin). Unavailable naming the store when the pin
  // could not be published; this replica then goes back to the previous pin.
  absl::Status SetServingVersion(int64_t version);
  // Every live replica as announced (empty when the store is unreachable).
  std::vector<recall::v1::ReplicaStatus> Replicas();
  // The versions no replica may prune: the pin and every live replica's serving version.
  absl::StatusOr<std::vector<int64_t>> NeededVersions();

  recall::v1::ReplicaStatus Status() const;

 private:
  void ApplyPin(int64_t version);
  void AnnounceLoop();

  ClusterControl* const control_;
  VersionManager* const versions_;
  const OnlineWrites* const writes_;
  Metrics* const metrics_;
  const Options options_;
  absl::Mutex pin_mu_;  // one pin change at a time (RPC or watcher)
  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread announcer_;
};

}  // namespace recall::server

#endif  // RECALL_SERVER_REPLICA_SET_H_
