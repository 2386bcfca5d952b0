// The scheduling policy of recall-server's threads (--cpu_sched).
//
// Why: on a core of its own, the server's threads take turns: gRPC's polling threads read
// requests and write responses, a batch worker runs the tower and the index. Under the default
// Linux policy (SCHED_OTHER) each waking gRPC thread preempts the worker in the middle of a
// search: at 3,400 Recalls/s on one core that was ~7 context switches per Recall, each also
// evicting part of the search's working set. SCHED_BATCH threads do not preempt on wakeup: the
// woken thread runs when the running one blocks or its slice ends, and then finds more work
// queued. The README ("Performance") has the side-by-side figures.
//
// The cost: a SCHED_BATCH thread that wakes does not preempt other processes' threads either.
// Next to busy work (a trainer, other services) a request then waits for their time slice. So
// "auto" picks batch only for a process whose CPU affinity leaves out some of the machine's
// online CPUs (taskset, a cpuset: cores given to it), else normal. A cpuset that is a shared
// pool (Kubernetes' static CPU manager gives the shared pods all but the exclusive cores) also
// reads as pinned: say --cpu_sched=normal there.
//
// Thread-safety: call before the process starts serving (threads created later inherit the
// policy of the thread that creates them; so do child processes, unless spawned with their own).
#ifndef RECALL_SERVER_CPU_POLICY_H_
#define RECALL_SERVER_CPU_POLICY_H_

#include <string>

#include "absl/status/statusor.h"

namespace recall::server {

// recall-server's default (--cpu_sched), also the in-process ceiling's, so that the two compare.
inline constexpr char kDefaultCpuPolicy[] = "auto";

// Sets `policy` on every thread of this process now: "normal" (SCHED_OTHER), "batch"
// (SCHED_BATCH) or "auto" (above). Returns the policy set ("normal" or "batch").
// InvalidArgument for another name; Internal when the kernel refuses (names the thread, errno).
absl::StatusOr<std::string> SetProcessCpuPolicy(const std::string& policy);

}  // namespace recall::server

#endif  // RECALL_SERVER_CPU_POLICY_H_
