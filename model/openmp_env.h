// OpenMP wait policy for the binaries. libgomp's default active spin-wait lets idle team
// threads burn the cores that LibTorch, OpenBLAS and FAISS need next: on a 2-core machine it
// halved training throughput (9.8k vs 19.6k examples/s on Gowalla, batch 2048). libgomp reads
// OMP_WAIT_POLICY when it loads, before main, so a binary that wants "passive" re-executes
// itself once with it set. An explicit OMP_WAIT_POLICY from the caller always wins.
#ifndef RECALL_MODEL_OPENMP_ENV_H_
#define RECALL_MODEL_OPENMP_ENV_H_

#include <unistd.h>

#include <cstdlib>

namespace recall {

inline void EnsurePassiveOpenMpWait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  ::setenv("OMP_WAIT_POLICY", "passive", 1);
  ::execv("/proc/self/exe", argv);  // returns only on failure: then run on as we are
}

}  // namespace recall

#endif  // RECALL_MODEL_OPENMP_ENV_H_
