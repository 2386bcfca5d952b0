// Collective: the ranks of one data-parallel training run and the collectives the trainer
// needs, on LibTorch's c10d (ProcessGroupGloo over a TCPStore rendezvous hosted by rank 0).
// Debian's LibTorch 1.13 has no C++ DDP and its Gloo group no reduce_scatter or
// _allgather_base, so what DDP would do is here: a bucketed gradient all-reduce, and an
// all-gather with a backward for negatives gathered across ranks (CLIP-style).
//
// Failure: a rank that dies must not leave the others hanging. Every rank keeps its address
// (host:pid) in the store and beats a counter there from a watchdog thread. When a collective
// fails (a killed peer resets its sockets at once; a vanished one hits the process-group
// timeout) or a peer's counter stops for the timeout, the rank logs which rank is gone, by
// number and address, and exits the process with kExitRankLost: a Gloo group whose peer died
// cannot be torn down cleanly, and the job controller restarts the set from its checkpoint.
// See TRAINING.md "Data-parallel training".
//
// Thread-safety: the collectives are called by the one training thread, in the same order on
// every rank (they pair up by order).
#ifndef RECALL_TRAINER_COLLECTIVE_H_
#define RECALL_TRAINER_COLLECTIVE_H_

#include <ATen/core/Tensor.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "torch/csrc/distributed/c10d/ProcessGroup.hpp"
#include "torch/csrc/distributed/c10d/Store.hpp"

namespace recall::trainer {

// The exit status of a rank that lost a peer (or the store).
inline constexpr int kExitRankLost = 3;

class Collective {
 public:
  struct Options {
    int world_size = 1;                    // ranks in the run
    int rank = 0;                          // this process's rank, in [0, world_size)
    std::string master_addr = "127.0.0.1"; // rank 0's host: the TCPStore rendezvous
    int master_port = 29500;               // the store's port on rank 0
    // Gloo binds this rank's sockets to this address ("": the address master_addr is reached
    // from, i.e. the host's name resolved; loopback for a one-machine run).
    std::string host;
    // Rendezvous, every collective, and a silent peer: a rank gives up after this long.
    std::chrono::milliseconds timeout{std::chrono::seconds(120)};
  };

  // Rendezvous with every rank (blocks up to options.timeout). InvalidArgument for a bad
  // rank/world size; Unavailable when the store or a peer cannot be reached in time.
  static absl::StatusOr<std::unique_ptr<Collective>> Connect(const Options& options);
  ~Collective();

  int rank() const { return options_.rank; }
  int world_size() const { return options_.world_size; }

  // In place: each tensor becomes the sum over ranks (float32 or int64, contiguous). Tensors
  // are packed into buckets of ~bucket_bytes, one all-reduce per bucket.
  void AllReduceSum(const std::vector<at::Tensor>& tensors, int64_t bucket_bytes = 32 << 20);
  // Rank-order concatenation along dim 0 of every rank's `t` (same shape on every rank).
  at::Tensor AllGather(const at::Tensor& t);
  // `t` becomes root's `t` (same shape on every rank).
  void Broadcast(at::Tensor& t, int root = 0);
  // Bytes from root to every rank (sizes may differ before the call).
  std::string BroadcastBytes(const std::string& bytes, int root = 0);

  // The end of the collectives: stops the watchdog, then waits for every rank to get here, so
  // a rank that finishes (or a rank 0 that goes on to evaluate and publish) is never taken
  // for a dead one. No collective may follow.
  void Finish();

  // Wall seconds spent inside collectives by this process (the communication share of a step).
  double seconds_in_collectives() const { return seconds_.load(); }

 private:
  explicit Collective(const Options& o) : options_(o) {}
  // Runs a collective; on failure names the lost rank(s) and exits the process.
  template <typename F>
  void Run(const char* what, F&& f);
  [[noreturn]] void LostPeer(const std::string& cause);
  void Watchdog();

  const Options options_;
  std::vector<std::string> addresses_;  // rank -> "host:pid", from the store
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::Store> watch_store_;  // the watchdog's own connection
  c10::intrusive_ptr<c10d::ProcessGroup> group_;
  std::thread watchdog_;
  std::atomic<bool> stop_{false};
  std::atomic<double> seconds_{0};
};

// Rank-order all-gather of `t` along dim 0 with a backward: every rank's gradient of the
// gathered tensor is summed (all-reduce), and each rank keeps its own slice. With the loss of
// rank r a mean over its rows and the parameter gradients averaged over ranks, this is the
// gradient of the mean loss over the global batch. `c` may be null: `t` itself.
at::Tensor GatherWithGradient(Collective* c, const at::Tensor& t);

// Gathers without gradient (ids, keys): `t` itself when `c` is null.
at::Tensor GatherNoGradient(Collective* c, const at::Tensor& t);

}  // namespace recall::trainer

#endif  // RECALL_TRAINER_COLLECTIVE_H_
