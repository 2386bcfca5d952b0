// JetStreamControl: ClusterControl on two JetStream KV buckets.
//   <bucket>           key "serving_pin": the cluster-wide pin, a decimal version (0 = none)
//   <bucket>_replicas  key "replica.<id>": a replica's ReplicaStatus as proto3 JSON; the
//                      bucket's TTL expires replicas that stopped announcing
// Both buckets are created on first contact with the replicas (R) given. The pin is watched
// with a KV watcher (an ordered consumer), re-created after any error.
//
// Thread-safety: all methods are thread-safe.
#ifndef RECALL_SERVER_JETSTREAM_CONTROL_H_
#define RECALL_SERVER_JETSTREAM_CONTROL_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/cluster_control.h"
#include "server/nats_connection.h"

struct __kvStore;
struct __jsCtx;

namespace recall::server {

class JetStreamControl final : public ClusterControl {
 public:
  struct Options {
    NatsConnection* connection = nullptr;  // required; must outlive this
    std::string bucket = "recall_control";
    int replicas = 1;
    absl::Duration replica_ttl = absl::Seconds(30);  // announce well within it
    // Longest wait for one KV request: a bucket whose stream is still electing its leader
    // (just created, or a node just died) does not answer, and callers retry rather than wait.
    absl::Duration request_timeout = absl::Seconds(1);
  };
  explicit JetStreamControl(Options options);
  ~JetStreamControl() override;

  absl::Status PublishPin(int64_t version) override;
  absl::StatusOr<int64_t> ReadPin() override;
  void WatchPin(std::function<void(int64_t)> on_change) override;
  void StopWatching() override;
  absl::Status Announce(const recall::v1::ReplicaStatus& status) override;
  absl::StatusOr<std::vector<recall::v1::ReplicaStatus>> Replicas() override;
  std::string Describe() const override;

 private:
  // The bucket handle (created or bound on first use).
  absl::StatusOr<__kvStore*> Bucket(bool registry);
  void WatchLoop(std::function<void(int64_t)> on_change);

  const Options options_;
  __jsCtx* js_ = nullptr;  // this store's own context, for its shorter request timeout
  absl::Mutex mu_;
  __kvStore* control_ ABSL_GUARDED_BY(mu_) = nullptr;
  __kvStore* registry_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread watcher_;
};

// A KV key for `id`: characters other than [A-Za-z0-9_-] become '_'.
std::string ReplicaKey(const std::string& id);

}  // namespace recall::server

#endif  // RECALL_SERVER_JETSTREAM_CONTROL_H_
