// Abseil's Mutex deadlock detector in our release binaries. Debian builds Abseil without
// NDEBUG, so absl::Mutex keeps its detector on: every lock acquisition records an edge in a
// process-wide graph (GraphCycles), about 2% of a loaded recall-server's CPU in a profile at
// concurrency 32. Release builds (NDEBUG) of the serving binaries turn it off; debug and
// sanitizer builds keep it, as the tests do.
#ifndef RECALL_SERVER_MUTEX_MODE_H_
#define RECALL_SERVER_MUTEX_MODE_H_

#include "absl/synchronization/mutex.h"

namespace recall::server {

// Call once at the start of main, before any Mutex is used.
inline void SetReleaseMutexMode() {
#ifdef NDEBUG
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
}

}  // namespace recall::server

#endif  // RECALL_SERVER_MUTEX_MODE_H_
