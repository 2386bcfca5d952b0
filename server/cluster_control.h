// ClusterControl: the control state a replica set agrees on, kept in a store that already
// solves agreement (JetStream KV, jetstream_control.h), never in a consensus of our own:
//   - the serving pin (SetServingVersion is cluster-wide: every replica follows one value);
//   - the replica registry: each replica announces what it serves; entries of replicas that
//     stopped announcing expire.
// A lone recall-server has no ClusterControl: its pin lives in the process.
//
// Thread-safety: all methods are thread-safe.
#ifndef RECALL_SERVER_CLUSTER_CONTROL_H_
#define RECALL_SERVER_CLUSTER_CONTROL_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "recall/v1/recall.pb.h"

namespace recall::server {

class ClusterControl {
 public:
  virtual ~ClusterControl() = default;

  // Sets the cluster-wide pin (0 = follow the newest). Unavailable when the store is unreachable.
  virtual absl::Status PublishPin(int64_t version) = 0;
  // The cluster-wide pin (0 when none was ever set).
  virtual absl::StatusOr<int64_t> ReadPin() = 0;
  // Calls on_change(pin) from a thread of the store's with the current pin and then every
  // change, until StopWatching; it keeps (re)watching through outages of the store.
  virtual void WatchPin(std::function<void(int64_t)> on_change) = 0;
  // Returns once on_change is no longer running nor will be called. Idempotent.
  virtual void StopWatching() = 0;

  // Records this replica's status in the registry (it expires unless announced again).
  virtual absl::Status Announce(const recall::v1::ReplicaStatus& status) = 0;
  // Every replica whose announcement has not expired.
  virtual absl::StatusOr<std::vector<recall::v1::ReplicaStatus>> Replicas() = 0;

  virtual std::string Describe() const = 0;
};

}  // namespace recall::server

#endif  // RECALL_SERVER_CLUSTER_CONTROL_H_
