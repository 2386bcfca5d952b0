#include "server/cpu_policy.h"

#include <dirent.h>
#include <sched.h>
#include <sys/sysinfo.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "server/usable_cpus.h"

namespace recall::server {

absl::StatusOr<std::string> SetProcessCpuPolicy(const std::string& policy) {
  std::string chosen = policy;
  if (policy == "auto") chosen = UsableCpus() < get_nprocs() ? "batch" : "normal";
  int p;
  if (chosen == "normal") {
    p = SCHED_OTHER;
  } else if (chosen == "batch") {
    p = SCHED_BATCH;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown CPU scheduling policy \"", policy, "\" (normal | batch | auto)"));
  }
  // sched_setscheduler on Linux acts on one thread (a tid), so walk them all: LibTorch, glog
  // and the metrics server may have started threads before this call.
  DIR* dir = opendir("/proc/self/task");
  if (dir == nullptr) {
    return absl::InternalError(absl::StrCat("/proc/self/task: ", std::strerror(errno)));
  }
  absl::Status status;
  const sched_param param{};  // priority 0: the only one SCHED_OTHER and SCHED_BATCH accept
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    const pid_t tid = static_cast<pid_t>(std::atoi(e->d_name));
    // A thread that exited since the listing is not an error.
    if (sched_setscheduler(tid, p, &param) != 0 && errno != ESRCH && status.ok()) {
      status = absl::InternalError(
          absl::StrCat("sched_setscheduler(thread ", tid, "): ", std::strerror(errno)));
    }
  }
  closedir(dir);
  if (!status.ok()) return status;
  return chosen;
}

}  // namespace recall::server
