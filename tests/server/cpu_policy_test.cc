// SetProcessCpuPolicy: every thread of the process takes the policy, those already running
// included; threads started afterwards inherit it; "auto" follows the CPU affinity; an unknown
// name changes nothing.
#include "server/cpu_policy.h"

#include <gtest/gtest.h>
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "absl/synchronization/notification.h"

namespace recall::server {
namespace {

// A thread that reports its tid and waits until released.
class ParkedThread {
 public:
  ParkedThread()
      : thread_([this] {
          tid_ = static_cast<pid_t>(syscall(SYS_gettid));
          started_.Notify();
          release_.WaitForNotification();
        }) {
    started_.WaitForNotification();
  }
  ~ParkedThread() {
    release_.Notify();
    thread_.join();
  }
  pid_t tid() const { return tid_; }

 private:
  absl::Notification started_, release_;
  pid_t tid_ = 0;
  std::thread thread_;
};

TEST(CpuPolicyTest, ReachesRunningAndLaterThreads) {
  ParkedThread before;
  ASSERT_EQ(SetProcessCpuPolicy("batch").value_or(""), "batch");
  EXPECT_EQ(sched_getscheduler(0), SCHED_BATCH);
  EXPECT_EQ(sched_getscheduler(before.tid()), SCHED_BATCH);
  {
    ParkedThread after;
    EXPECT_EQ(sched_getscheduler(after.tid()), SCHED_BATCH);
  }
  ASSERT_EQ(SetProcessCpuPolicy("normal").value_or(""), "normal");
  EXPECT_EQ(sched_getscheduler(0), SCHED_OTHER);
  EXPECT_EQ(sched_getscheduler(before.tid()), SCHED_OTHER);
}

TEST(CpuPolicyTest, UnknownPolicyIsRefusedAndChangesNothing) {
  ASSERT_TRUE(SetProcessCpuPolicy("normal").ok());
  const absl::Status s = SetProcessCpuPolicy("fifo").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("\"fifo\""), std::string::npos) << s;
  EXPECT_EQ(sched_getscheduler(0), SCHED_OTHER);
}

// "auto" is batch exactly when this thread may not run on every online CPU (the affinity it
// checks is the calling thread's, which the threads it starts inherit).
TEST(CpuPolicyTest, AutoIsBatchWhenPinned) {
  cpu_set_t original;
  ASSERT_EQ(sched_getaffinity(0, sizeof(original), &original), 0);
  const bool pinned_already = CPU_COUNT(&original) < get_nprocs();
  EXPECT_EQ(SetProcessCpuPolicy("auto").value_or(""), pinned_already ? "batch" : "normal");
  if (get_nprocs() > 1) {
    cpu_set_t one;
    CPU_ZERO(&one);
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      if (CPU_ISSET(cpu, &original)) {
        CPU_SET(cpu, &one);
        break;
      }
    }
    ASSERT_EQ(sched_setaffinity(0, sizeof(one), &one), 0);
    EXPECT_EQ(SetProcessCpuPolicy("auto").value_or(""), "batch");
    EXPECT_EQ(sched_getscheduler(0), SCHED_BATCH);
    ASSERT_EQ(sched_setaffinity(0, sizeof(original), &original), 0);
  }
  EXPECT_EQ(SetProcessCpuPolicy(kDefaultCpuPolicy).value_or(""),
            pinned_already ? "batch" : "normal");
  ASSERT_TRUE(SetProcessCpuPolicy("normal").ok());
}

}  // namespace
}  // namespace recall::server
