// Abseil's Mutex deadlock detector in our release binaries. Debian builds Abseil without
// NDEBUG, so absl::Mutex keeps its detector on: every lock acquisition records an edge in a
// process-wide graph (GraphCycles: ~2% of a loaded recall-server's CPU samples, within noise
// in the in-process bench). Release builds (NDEBUG) of the serving, benchmark and
// training binaries turn it off (the tuner times searches, each of which takes the index's
// lock); debug and sanitizer builds keep it, as the tests do.
#ifndef RECALL_MODEL_MUTEX_MODE_H_
#define RECALL_MODEL_MUTEX_MODE_H_

#include "absl/synchronization/mutex.h"

namespace recall {

// Call once at the start of main, before any Mutex is used.
inline void SetReleaseMutexMode() {
#ifdef NDEBUG
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
}

}  // namespace recall

#endif  // RECALL_MODEL_MUTEX_MODE_H_
