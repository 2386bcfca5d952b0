#include "server/retrain_jobs.h"

#include <fcntl.h>
#include <glog/logging.h>
#include <signal.h>
#include <sched.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include <google/protobuf/text_format.h>
#include <google/protobuf/util/json_util.h>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "model/train_config.h"
#include "model/version_dir.h"

extern char** environ;

namespace recall::server {
namespace fs = std::filesystem;
using recall::v1::RetrainState;

namespace {

std::string Now() { return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now(), absl::UTCTimeZone()); }

bool Terminal(RetrainState s) {
  return s == recall::v1::SUCCEEDED || s == recall::v1::FAILED || s == recall::v1::REJECTED ||
         s == recall::v1::CANCELLED;
}

const char* ResultName(RetrainState s) {
  switch (s) {
    case recall::v1::SUCCEEDED: return "succeeded";
    case recall::v1::FAILED: return "failed";
    case recall::v1::REJECTED: return "rejected";
    case recall::v1::CANCELLED: return "cancelled";
    default: return "unknown";
  }
}

// A TrainingEvent JSON line (trainer/run_report.h) of the trainer's --progress=json output.
bool ParseEvent(const std::string& line, recall::v1::TrainingEvent* e) {
  if (line.empty() || line[0] != '{') return false;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;  // a newer trainer may report more
  return google::protobuf::util::JsonStringToMessage(line, e, options).ok();
}

// A dataset goes into argv as one --dataset=value element, so a shell is never involved; the
// charset still keeps it to a plain path.
bool SafeValue(absl::string_view v) {
  if (v.empty() || v.size() > 256) return false;
  for (char c : v) {
    if (!(absl::ascii_isalnum(c) || c == '.' || c == '_' || c == '-' || c == ',' || c == ':' ||
          c == '/' || c == '+')) {
      return false;
    }
  }
  return true;
}

// A caller's string as it appears in a message: cut to a readable length.
std::string Echo(absl::string_view v) {
  constexpr size_t kMax = 64;
  return v.size() <= kMax ? std::string(v) : absl::StrCat(v.substr(0, kMax), "...");
}

// The gate figure of a manifest: validation Recall@K when `prefer_val`, else test Recall@K.
bool GateFigure(const recall::v1::ModelManifest& m, const std::string& metric, bool prefer_val,
                double* out) {
  const auto& e = m.eval().metrics();
  auto it = e.find(prefer_val ? "val_" + metric : metric);
  if (it == e.end()) return false;
  *out = it->second;
  return true;
}

}  // namespace

RetrainJobs::RetrainJobs(Options options, VersionManager* versions)
    : options_(std::move(options)), versions_(versions) {}

RetrainJobs::~RetrainJobs() {
  {
    absl::MutexLock lock(&mu_);
    for (auto& j : jobs_) {
      if (!Terminal(j->info.state()) && j->pid > 0) {
        j->cancel_requested = true;
        ::kill(-j->pid, SIGKILL);
      }
    }
  }
  absl::MutexLock lock(&trigger_mu_);
  if (supervisor_.joinable()) supervisor_.join();
}

std::shared_ptr<RetrainJobs::Job> RetrainJobs::Find(const std::string& job_id) const {
  if (jobs_.empty()) return nullptr;
  if (job_id.empty()) return jobs_.back();
  for (const auto& j : jobs_) {
    if (j->info.job_id() == job_id) return j;
  }
  return nullptr;
}

absl::StatusOr<std::string> RetrainJobs::Trigger(const recall::v1::TriggerRetrainRequest& req) {
  // Whether a dataset path exists is left to the trainer (the job fails naming it): with
  // --retrain_command the trainer may run elsewhere (a Kubernetes Job) and see other files.
  const std::string& ds = req.dataset();
  constexpr absl::string_view kForms =
      "must be 'synthetic', 'lightgcn:<dir>', 'dir:<dir>' or 'interactions:<file>'";
  if (ds.empty()) return absl::InvalidArgumentError(absl::StrCat("dataset: empty; ", kForms));
  absl::string_view path;
  bool known = ds == "synthetic";
  for (absl::string_view prefix : {"lightgcn:", "dir:", "interactions:"}) {
    if (absl::StartsWith(ds, prefix)) {
      known = true;
      path = absl::string_view(ds).substr(prefix.size());
      if (path.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("dataset: '", ds, "' names no path; ", kForms));
      }
    }
  }
  if (!known) {
    return absl::InvalidArgumentError(
        absl::StrCat("dataset: unknown dataset '", Echo(ds), "'; ", kForms));
  }
  if (!SafeValue(ds)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dataset: '", Echo(ds), "' is not a plain path (letters, digits and . _ - , : / + only, ",
        "at most 256 characters)"));
  }
  // The flag map of the first API: each flag is named with the typed field that replaced it.
  for (const auto& [k, v] : req.overrides()) {
    const std::string path = TrainOptionPath(k);
    return absl::InvalidArgumentError(absl::StrCat(
        "overrides[\"", Echo(k), "\"]: trainer flags were replaced by the typed `config` (",
        path.empty() ? "no training option has this name"
                     : absl::StrCat("set config.", path, " instead"),
        "; recall-train --help lists the options)"));
  }
  const std::string preset = req.preset().empty() ? "default" : req.preset();
  auto config = LoadPreset(preset);
  if (!config.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("preset: ", config.status().message()));
  }
  if (absl::Status s = CheckRetrainOverrides(req.config()); !s.ok()) return s;
  OverlayTrainConfig(req.config(), &*config);
  if (absl::Status s = CheckTrainConfig(*config); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("config: ", s.message()));
  }
  // The trainer resolves the same preset and overrides with the same library; the job shows
  // the result, and the published manifest records it again.
  std::string overrides_text;
  google::protobuf::TextFormat::Printer printer;
  printer.SetSingleLineMode(true);
  printer.PrintToString(req.config(), &overrides_text);

  absl::MutexLock trigger(&trigger_mu_);
  std::shared_ptr<Job> job;
  {
    absl::MutexLock lock(&mu_);
    if (!jobs_.empty() && !Terminal(jobs_.back()->info.state())) {
      return absl::FailedPreconditionError(absl::StrCat(
          "retrain job ", jobs_.back()->info.job_id(), " is still ",
          recall::v1::RetrainState_Name(jobs_.back()->info.state()), "; one job at a time"));
    }
    job = std::make_shared<Job>();
    job->info.set_job_id(absl::StrCat(
        absl::FormatTime("%Y%m%d-%H%M%S", absl::Now(), absl::UTCTimeZone()), "-", next_id_++));
    job->info.set_state(recall::v1::QUEUED);
    job->info.set_started_at(Now());
    job->info.set_preset(preset);
    *job->info.mutable_config() = ResolveTrainConfig(*config);
    jobs_.push_back(job);
    while (jobs_.size() > options_.keep_jobs) jobs_.pop_front();
  }
  if (supervisor_.joinable()) supervisor_.join();  // the previous job has finished

  job->version = NextVersionNumber(options_.model_base);
  job->staging_base = (fs::path(options_.model_base) / (".retrain-" + job->info.job_id())).string();
  std::vector<std::string> argv = options_.command;
  argv.push_back("--dataset=" + ds);
  argv.push_back("--model_base=" + job->staging_base);
  argv.push_back(absl::StrCat("--publish_version=", job->version));
  argv.push_back("--progress=json");
  argv.push_back("--preset=" + preset);
  if (!overrides_text.empty()) argv.push_back("--overrides=" + overrides_text);
  LOG(INFO) << "retrain job " << job->info.job_id() << ": " << absl::StrJoin(argv, " ");
  supervisor_ = std::thread([this, job, argv] { Supervise(job, argv); });
  return job->info.job_id();
}

void RetrainJobs::SetState(const std::shared_ptr<Job>& job, RetrainState state,
                           const std::string& message) {
  if (Terminal(state) && !job->staging_base.empty()) {
    // Before the state is visible: a caller that sees the job finished must not find its
    // staging directory still under model_base (operations_test caught this race).
    std::error_code e;
    fs::remove_all(job->staging_base, e);
  }
  bool finished;
  {
    absl::MutexLock lock(&mu_);
    job->info.set_state(state);
    job->info.set_message(message);
    finished = Terminal(state);
    if (finished) {
      job->info.set_finished_at(Now());
      if (state == recall::v1::SUCCEEDED) job->info.set_progress(1.0);
    }
  }
  LOG(INFO) << "retrain job " << job->info.job_id() << ": "
            << recall::v1::RetrainState_Name(state) << (message.empty() ? "" : ": ") << message;
  if (finished && options_.on_finish) options_.on_finish(ResultName(state));
  if (options_.on_running) options_.on_running(state == recall::v1::RUNNING);
}

void RetrainJobs::OnLine(const std::shared_ptr<Job>& job, const std::string& line) {
  absl::MutexLock lock(&mu_);
  job->tail.push_back(line);
  while (job->tail.size() > options_.log_tail_lines) job->tail.pop_front();
  recall::v1::TrainingEvent e;
  if (!ParseEvent(line, &e) || e.epochs() <= 0 ||
      (e.event() != recall::v1::TrainingEvent::STEP &&
       e.event() != recall::v1::TrainingEvent::EPOCH) ||
      (e.has_member() && e.member() != 0)) {
    return;  // an ensemble's members train side by side: member 0 stands for them
  }
  const double within =
      e.event() == recall::v1::TrainingEvent::STEP && e.steps() > 0 ? 1.0 * e.step() / e.steps() : 1.0;
  // Training is ~95% of a job; evaluation and publishing the rest.
  const double p = 0.95 * std::clamp((e.epoch() - 1 + within) / e.epochs(), 0.0, 1.0);
  job->info.set_progress(std::max(job->info.progress(), p));
}

void RetrainJobs::Supervise(std::shared_ptr<Job> job, std::vector<std::string> argv) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    SetState(job, recall::v1::FAILED, absl::StrCat("pipe: ", std::strerror(errno)));
    return;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // The whole group, so that cancel kills it all; and the default scheduling policy, not the
  // serving threads' (--cpu_sched=batch is for request threads, server/cpu_policy.h).
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSCHEDULER);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setschedpolicy(&attr, SCHED_OTHER);
  const sched_param normal{};
  posix_spawnattr_setschedparam(&attr, &normal);
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  pid_t pid = -1;
  const int rc = ::posix_spawnp(&pid, cargv[0], &actions, &attr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    SetState(job, recall::v1::FAILED,
             absl::StrCat("cannot start ", argv[0], ": ", std::strerror(rc)));
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    job->pid = pid;
    if (job->cancel_requested) ::kill(-pid, SIGTERM);
  }
  SetState(job, recall::v1::RUNNING, absl::StrCat("recall-train running as pid ", pid));

  // Read lines until the child (and anything it started) closes the pipe.
  std::string pending;
  char buf[4096];
  while (true) {
    const ssize_t n = ::read(fds[0], buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    pending.append(buf, static_cast<size_t>(n));
    size_t nl;
    while ((nl = pending.find_first_of("\n\r")) != std::string::npos) {
      if (nl > 0) OnLine(job, pending.substr(0, nl));
      pending.erase(0, nl + 1);
    }
  }
  if (!pending.empty()) OnLine(job, pending);
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  {
    absl::MutexLock lock(&mu_);
    job->pid = -1;
  }
  Finish(job, status);
}

void RetrainJobs::Finish(const std::shared_ptr<Job>& job, int status) {
  std::error_code ec;
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code e;
      fs::remove_all(dir, e);
    }
  } cleanup{job->staging_base};
  bool cancelled;
  std::string last_line;
  {
    absl::MutexLock lock(&mu_);
    cancelled = job->cancel_requested;
    if (!job->tail.empty()) last_line = job->tail.back();
  }
  if (cancelled) {
    SetState(job, recall::v1::CANCELLED, "cancelled; the serving version is untouched");
    return;
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    const std::string how = WIFEXITED(status)
                                ? absl::StrCat("exited with code ", WEXITSTATUS(status))
                                : absl::StrCat("was killed by signal ", WTERMSIG(status));
    SetState(job, recall::v1::FAILED,
             absl::StrCat("recall-train ", how, ": ", last_line,
                          "; the serving version is untouched"));
    return;
  }
  const std::string staged = VersionPath(job->staging_base, job->version);
  auto manifest = VerifyVersionDir(staged);
  if (!manifest.ok()) {
    SetState(job, recall::v1::FAILED,
             absl::StrCat("the trained version does not verify: ", manifest.status().message()));
    return;
  }
  // Quality gate against the serving version.
  if (std::shared_ptr<Servable> serving = versions_->Current()) {
    const auto& cur = serving->model->manifest();
    double a, b;
    const bool val = GateFigure(*manifest, options_.gate_metric, true, &a) &&
                     GateFigure(cur, options_.gate_metric, true, &b);
    if (val || (GateFigure(*manifest, options_.gate_metric, false, &a) &&
                GateFigure(cur, options_.gate_metric, false, &b))) {
      const std::string what = absl::StrCat(val ? "validation " : "test ", options_.gate_metric);
      if (a < b * (1.0 - options_.gate_margin)) {
        SetState(job, recall::v1::REJECTED,
                 absl::StrFormat("quality gate: %s %.4f of the new version is more than %.1f%% "
                                 "below %.4f of serving version %d; not promoted",
                                 what, a, 100 * options_.gate_margin, b, serving->version()));
        return;
      }
    }
  }
  const std::string target = VersionPath(options_.model_base, job->version);
  if (fs::exists(target)) {
    SetState(job, recall::v1::FAILED,
             absl::StrCat("version ", job->version, " was published by someone else meanwhile"));
    return;
  }
  fs::rename(staged, target, ec);
  if (ec) {
    SetState(job, recall::v1::FAILED, absl::StrCat("cannot move ", staged, " to ", target, ": ",
                                                   ec.message()));
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    job->info.set_result_version(job->version);
  }
  absl::Status s = versions_->Reconcile();
  const int64_t serving = versions_->serving_version();
  std::string msg = absl::StrCat("published version ", job->version);
  if (serving == job->version) {
    absl::StrAppend(&msg, "; now serving it");
  } else if (versions_->pinned_version() > 0) {
    absl::StrAppend(&msg, "; version ", versions_->pinned_version(),
                    " is pinned, so it is available but not served");
  } else if (!s.ok()) {
    absl::StrAppend(&msg, "; loading it failed: ", s.message());
  }
  SetState(job, recall::v1::SUCCEEDED, msg);
}

absl::StatusOr<recall::v1::RetrainJob> RetrainJobs::Get(const std::string& job_id) const {
  absl::MutexLock lock(&mu_);
  std::shared_ptr<Job> j = Find(job_id);
  if (!j) {
    return absl::NotFoundError(job_id.empty()
                                   ? "job_id: empty (= the latest job), and no retrain job has run yet"
                                   : absl::StrCat("job_id: no job '", Echo(job_id), "'"));
  }
  recall::v1::RetrainJob out = j->info;
  for (const auto& l : j->tail) out.add_log_tail(l);
  return out;
}

absl::StatusOr<recall::v1::RetrainJob> RetrainJobs::Cancel(const std::string& job_id) {
  pid_t pid = -1;
  {
    absl::MutexLock lock(&mu_);
    std::shared_ptr<Job> j = Find(job_id);
    if (!j) {
      return absl::NotFoundError(job_id.empty()
                                     ? "job_id: empty (= the latest job), and no retrain job has run yet"
                                     : absl::StrCat("job_id: no job '", Echo(job_id), "'"));
    }
    if (!Terminal(j->info.state())) {
      j->cancel_requested = true;
      pid = j->pid;
    }
  }
  if (pid > 0) {
    ::kill(-pid, SIGTERM);
    // Escalate if the trainer ignores SIGTERM; the supervisor reaps it either way.
    const absl::Time deadline = absl::Now() + absl::Seconds(options_.cancel_grace_s);
    while (absl::Now() < deadline) {
      {
        absl::MutexLock lock(&mu_);
        std::shared_ptr<Job> j = Find(job_id);
        if (j && Terminal(j->info.state())) break;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    absl::MutexLock lock(&mu_);
    std::shared_ptr<Job> j = Find(job_id);
    if (j && !Terminal(j->info.state()) && j->pid > 0) ::kill(-j->pid, SIGKILL);
  }
  // Wait (bounded) for the supervisor to record the end, so the reply shows it.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline) {
    auto j = Get(job_id);
    if (!j.ok() || Terminal(j->state())) return j;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return Get(job_id);
}

}  // namespace recall::server
