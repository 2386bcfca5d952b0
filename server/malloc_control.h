// The process's allocator, when it is tcmalloc (the release binaries link it on purpose, the
// sanitizer builds do not): its C entry points are looked up at run time, so every call is a
// no-op under another allocator.
//
// Why the server tunes it: tcmalloc lets all threads' free-memory caches grow to 32 MiB together
// by default, and keeps freed large blocks in its page heap. A loaded recall-server grew RSS by
// 18 MiB during a load sweep (13 of it thread caches), and by 10 more after each live recall probe
// (its id list and score blocks), none of it the model version's. A version load leaves the
// reader's buffers, and a swap the whole old version, in the page heap until released.
//
// Thread-safety: both calls may run from any thread at any time.
#ifndef RECALL_SERVER_MALLOC_CONTROL_H_
#define RECALL_SERVER_MALLOC_CONTROL_H_

#include <dlfcn.h>

#include <cstddef>

namespace recall::server {

// Caps the free memory all threads' caches hold together. False when the allocator is not
// tcmalloc or refused the value.
inline bool SetMallocThreadCacheLimit(size_t bytes) {
  using Set = int (*)(const char*, size_t);
  auto set = reinterpret_cast<Set>(dlsym(RTLD_DEFAULT, "MallocExtension_SetNumericProperty"));
  return set != nullptr && set("tcmalloc.max_total_thread_cache_bytes", bytes) != 0;
}

// Returns the allocator's free pages to the OS (they count in RSS until then).
inline void ReleaseFreeMemory() {
  using Release = void (*)();
  auto release = reinterpret_cast<Release>(dlsym(RTLD_DEFAULT, "MallocExtension_ReleaseFreeMemory"));
  if (release != nullptr) release();
}

}  // namespace recall::server

#endif  // RECALL_SERVER_MALLOC_CONTROL_H_
