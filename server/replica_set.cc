#include "server/replica_set.h"

#include <glog/logging.h>

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace recall::server {

ReplicaSet::ReplicaSet(ClusterControl* control, VersionManager* versions,
                       const OnlineWrites* writes, Metrics* metrics, Options options)
    : control_(control),
      versions_(versions),
      writes_(writes),
      metrics_(metrics),
      options_(std::move(options)) {}

ReplicaSet::~ReplicaSet() {
  control_->StopWatching();
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (announcer_.joinable()) announcer_.join();
}

recall::v1::ReplicaStatus ReplicaSet::Status() const {
  recall::v1::ReplicaStatus s;
  s.set_replica_id(options_.replica_id);
  s.set_serving_version(versions_->serving_version());
  s.set_pinned_version(versions_->pinned_version());
  if (writes_) s.set_applied_write_sequence(writes_->applied_sequence());
  s.set_updated_at(absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now(), absl::UTCTimeZone()));
  return s;
}

absl::Status ReplicaSet::Start() {
  absl::Status loaded;
  // A bucket another replica has just created may take a moment to answer (its stream elects a
  // leader): retry briefly rather than start on the newest version and switch a moment later.
  auto pin = control_->ReadPin();
  for (int attempt = 0; attempt < 10 && absl::IsUnavailable(pin.status()); ++attempt) {
    absl::SleepFor(absl::Milliseconds(200));
    pin = control_->ReadPin();
  }
  if (!pin.ok()) {
    LOG(WARNING) << "cluster pin unknown (" << pin.status().message()
                 << "); serving the newest version until the pin is read";
  }
  {
    absl::MutexLock lock(&pin_mu_);
    if (pin.ok() && *pin > 0) {
      loaded = versions_->SetServingVersion(*pin);
      if (!loaded.ok()) {
        LOG(ERROR) << "cannot serve the cluster-pinned version " << *pin << ": "
                   << loaded.message() << "; serving the newest instead";
      }
    }
    if (!pin.ok() || *pin == 0 || !loaded.ok()) loaded = versions_->LoadNewest();
    if (metrics_) metrics_->SetPinnedVersion(versions_->pinned_version());
  }
  control_->WatchPin([this](int64_t v) { ApplyPin(v); });
  announcer_ = std::thread([this] { AnnounceLoop(); });
  return loaded;
}

void ReplicaSet::ApplyPin(int64_t version) {
  absl::MutexLock lock(&pin_mu_);
  if (versions_->pinned_version() == version &&
      (version == 0 || versions_->serving_version() == version)) {
    return;
  }
  absl::Status s = versions_->SetServingVersion(version);
  if (s.ok()) {
    LOG(INFO) << "following the cluster pin: " << (version ? "pinned to " : "unpinned, serving ")
              << versions_->serving_version();
  } else {
    LOG(ERROR) << "the cluster pinned version " << version << ", which fails here: "
               << s.message() << "; still serving " << versions_->serving_version();
  }
  if (metrics_) metrics_->SetPinnedVersion(versions_->pinned_version());
  if (auto a = control_->Announce(Status()); !a.ok()) VLOG(1) << a.message();
}

absl::Status ReplicaSet::SetServingVersion(int64_t version) {
  absl::MutexLock lock(&pin_mu_);
  const int64_t previous = versions_->pinned_version();
  if (absl::Status s = versions_->SetServingVersion(version); !s.ok()) return s;
  if (absl::Status s = control_->PublishPin(version); !s.ok()) {
    absl::Status back = versions_->SetServingVersion(previous);
    if (!back.ok()) LOG(ERROR) << "restoring pin " << previous << ": " << back.message();
    return absl::UnavailableError(absl::StrCat(
        "the pin was not published to the replica set, so this replica went back to ",
        previous ? absl::StrCat("pin ", previous) : std::string("following the newest"), ": ",
        s.message()));
  }
  if (metrics_) metrics_->SetPinnedVersion(versions_->pinned_version());
  if (auto a = control_->Announce(Status()); !a.ok()) VLOG(1) << a.message();
  return absl::OkStatus();
}

std::vector<recall::v1::ReplicaStatus> ReplicaSet::Replicas() {
  auto r = control_->Replicas();
  if (!r.ok()) return {};
  std::sort(r->begin(), r->end(), [](const auto& a, const auto& b) {
    return a.replica_id() < b.replica_id();
  });
  return *std::move(r);
}

absl::StatusOr<std::vector<int64_t>> ReplicaSet::NeededVersions() {
  auto pin = control_->ReadPin();
  if (!pin.ok()) return pin.status();
  auto replicas = control_->Replicas();
  if (!replicas.ok()) return replicas.status();
  std::vector<int64_t> out = {*pin, versions_->serving_version(), versions_->pinned_version()};
  for (const auto& r : *replicas) {
    out.push_back(r.serving_version());
    out.push_back(r.pinned_version());
  }
  return out;
}

void ReplicaSet::AnnounceLoop() {
  absl::MutexLock lock(&mu_);
  while (!stop_) {
    mu_.Unlock();
    if (auto s = control_->Announce(Status()); !s.ok()) {
      LOG_EVERY_N(WARNING, 12) << "announcing this replica: " << s.message();
    }
    mu_.Lock();
    mu_.AwaitWithTimeout(absl::Condition(&stop_), options_.announce_every);
  }
}

}  // namespace recall::server
