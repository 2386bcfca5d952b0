// ThreadSanitizer annotations for Debian's Abseil synchronization primitives (TSan builds only;
// CMakeLists.txt links this into every executable and routes the calls through it with the
// linker's --wrap).
//
// Why: libabsl_synchronization.so from Debian is not built with -fsanitize=thread, so TSan does
// not see absl::Mutex, absl::CondVar or absl::Notification synchronize anything: every access
// to state guarded by an absl::Mutex looked like a race (e.g. two Appends pushing onto the
// write-ahead log's queue, both under its mutex). Abseil built with TSan annotates itself with
// the __tsan_mutex_* interface; these wrappers make the same annotations at the call boundary,
// around the real (uninstrumented) functions, so the suppression file never has to hide a
// race in this project's code.
//
// Await / CondVar::Wait release and re-acquire the mutex inside: they are annotated as an
// unlock before and a lock after. Between __tsan_mutex_pre_unlock and __tsan_mutex_post_unlock
// TSan ignores memory accesses, so the waiter's condition, which Abseil evaluates with the
// mutex held (in the waiting or in the unlocking thread), is not reported either.
#include <sanitizer/tsan_interface.h>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

// Accesses made inside Abseil's own bookkeeping (its deadlock detector's graph, guarded by an
// internal spin lock TSan cannot see either) are not this project's to check.
extern "C" void AnnotateIgnoreReadsBegin(const char* file, int line);
extern "C" void AnnotateIgnoreReadsEnd(const char* file, int line);
extern "C" void AnnotateIgnoreWritesBegin(const char* file, int line);
extern "C" void AnnotateIgnoreWritesEnd(const char* file, int line);

namespace {
struct IgnoreAccesses {
  IgnoreAccesses() {
    AnnotateIgnoreReadsBegin(__FILE__, __LINE__);
    AnnotateIgnoreWritesBegin(__FILE__, __LINE__);
  }
  ~IgnoreAccesses() {
    AnnotateIgnoreWritesEnd(__FILE__, __LINE__);
    AnnotateIgnoreReadsEnd(__FILE__, __LINE__);
  }
};
// Runs `wait`, which releases `mu` and takes it again before it returns (Await*, CondVar::Wait),
// annotated as an unlock before and a lock after.
template <typename Wait>
auto Released(absl::Mutex* mu, Wait wait) {
  __tsan_mutex_pre_unlock(mu, 0);
  auto result = wait();
  __tsan_mutex_post_unlock(mu, 0);
  __tsan_mutex_pre_lock(mu, 0);
  __tsan_mutex_post_lock(mu, 0, 0);
  return result;
}
}  // namespace

#define RECALL_WRAP(ret, sym, ...) \
  ret __real_##sym(__VA_ARGS__);   \
  ret __wrap_##sym(__VA_ARGS__)

extern "C" {

// absl::Mutex::Lock()
RECALL_WRAP(void, _ZN4absl7debian35Mutex4LockEv, absl::Mutex* mu) {
  __tsan_mutex_pre_lock(mu, 0);
  __real__ZN4absl7debian35Mutex4LockEv(mu);
  __tsan_mutex_post_lock(mu, 0, 0);
}

// absl::Mutex::Unlock()
RECALL_WRAP(void, _ZN4absl7debian35Mutex6UnlockEv, absl::Mutex* mu) {
  __tsan_mutex_pre_unlock(mu, 0);
  __real__ZN4absl7debian35Mutex6UnlockEv(mu);
  __tsan_mutex_post_unlock(mu, 0);
}

// absl::Mutex::ReaderLock()
RECALL_WRAP(void, _ZN4absl7debian35Mutex10ReaderLockEv, absl::Mutex* mu) {
  __tsan_mutex_pre_lock(mu, __tsan_mutex_read_lock);
  __real__ZN4absl7debian35Mutex10ReaderLockEv(mu);
  __tsan_mutex_post_lock(mu, __tsan_mutex_read_lock, 0);
}

// absl::Mutex::ReaderUnlock()
RECALL_WRAP(void, _ZN4absl7debian35Mutex12ReaderUnlockEv, absl::Mutex* mu) {
  __tsan_mutex_pre_unlock(mu, __tsan_mutex_read_lock);
  __real__ZN4absl7debian35Mutex12ReaderUnlockEv(mu);
  __tsan_mutex_post_unlock(mu, __tsan_mutex_read_lock);
}

// absl::Mutex::Await(const Condition&), with the mutex held exclusively (as this project does).
RECALL_WRAP(void, _ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE, absl::Mutex* mu,
            const absl::Condition& cond) {
  Released(mu, [&] {
    __real__ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE(mu, cond);
    return 0;
  });
}

// absl::Mutex::AwaitWithTimeout(const Condition&, Duration)
RECALL_WRAP(bool, _ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE,
            absl::Mutex* mu, const absl::Condition& cond, absl::Duration timeout) {
  return Released(mu, [&] {
    return __real__ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE(
        mu, cond, timeout);
  });
}

// absl::Mutex::AwaitWithDeadline(const Condition&, Time)
RECALL_WRAP(bool, _ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE,
            absl::Mutex* mu, const absl::Condition& cond, absl::Time deadline) {
  return Released(mu, [&] {
    return __real__ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE(
        mu, cond, deadline);
  });
}

// absl::Mutex::~Mutex(): the address may hold another mutex later.
RECALL_WRAP(void, _ZN4absl7debian35MutexD1Ev, absl::Mutex* mu) {
  __tsan_mutex_destroy(mu, 0);
  IgnoreAccesses ignore;
  __real__ZN4absl7debian35MutexD1Ev(mu);
}

// absl::CondVar::Wait(Mutex*)
RECALL_WRAP(void, _ZN4absl7debian37CondVar4WaitEPNS0_5MutexE, absl::CondVar* cv,
            absl::Mutex* mu) {
  Released(mu, [&] {
    __real__ZN4absl7debian37CondVar4WaitEPNS0_5MutexE(cv, mu);
    return 0;
  });
}

// absl::Notification::Notify(): everything before it happens before a successful wait.
RECALL_WRAP(void, _ZN4absl7debian312Notification6NotifyEv, absl::Notification* n) {
  __tsan_release(n);
  IgnoreAccesses ignore;
  __real__ZN4absl7debian312Notification6NotifyEv(n);
}

// absl::Notification::~Notification()
RECALL_WRAP(void, _ZN4absl7debian312NotificationD1Ev, absl::Notification* n) {
  IgnoreAccesses ignore;
  __real__ZN4absl7debian312NotificationD1Ev(n);
}

// absl::Notification::WaitForNotification() const
RECALL_WRAP(void, _ZNK4absl7debian312Notification19WaitForNotificationEv,
            const absl::Notification* n) {
  {
    IgnoreAccesses ignore;
    __real__ZNK4absl7debian312Notification19WaitForNotificationEv(n);
  }
  __tsan_acquire(const_cast<absl::Notification*>(n));
}

// absl::Notification::WaitForNotificationWithTimeout(Duration) const
RECALL_WRAP(bool, _ZNK4absl7debian312Notification30WaitForNotificationWithTimeoutENS0_8DurationE,
            const absl::Notification* n, absl::Duration timeout) {
  bool notified;
  {
    IgnoreAccesses ignore;
    notified =
        __real__ZNK4absl7debian312Notification30WaitForNotificationWithTimeoutENS0_8DurationE(
            n, timeout);
  }
  if (notified) __tsan_acquire(const_cast<absl::Notification*>(n));
  return notified;
}

}  // extern "C"
