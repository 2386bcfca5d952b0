// UsableCpus: the CPUs this process may run on (its affinity mask, as taskset or a container's
// cpuset sets it), not the machine's. Worker pools sized from std::thread::hardware_concurrency()
// in a pinned process put several busy threads on each allowed core, where they only take turns.
#ifndef RECALL_SERVER_USABLE_CPUS_H_
#define RECALL_SERVER_USABLE_CPUS_H_

#include <sched.h>

#include <algorithm>
#include <thread>

namespace recall::server {

inline int UsableCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

}  // namespace recall::server

#endif  // RECALL_SERVER_USABLE_CPUS_H_
