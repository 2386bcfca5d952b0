#include "server/version_manager.h"

#include <glog/logging.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "model/version_dir.h"
#include "server/malloc_control.h"

namespace recall::server {
namespace {
// The search parameters EmbeddingIndex::SetSearchParameter knows, and whether each takes an
// integer. A name outside this list is a typo on every kind, so the override refuses it.
struct KnownParam {
  const char* name;
  bool integer;
};
constexpr KnownParam kKnownParams[] = {{"efSearch", true}, {"nprobe", true}, {"k_factor", false}};

absl::Status CheckParamValue(absl::string_view name, double value) {
  for (const KnownParam& p : kKnownParams) {
    if (name != p.name) continue;
    if (!std::isfinite(value) || value < 1 || value > 1e9 ||
        (p.integer && value != std::floor(value))) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, "=", value, ": must be ", p.integer ? "an integer" : "a number", " >= 1"));
    }
    return absl::OkStatus();
  }
  std::vector<std::string> known;
  for (const KnownParam& p : kKnownParams) known.push_back(p.name);
  return absl::InvalidArgumentError(absl::StrCat("unknown search parameter \"", name,
                                                 "\" (known: ", absl::StrJoin(known, ", "), ")"));
}

}  // namespace
namespace fs = std::filesystem;

absl::StatusOr<IndexParams> ParseIndexParams(absl::string_view text) {
  IndexParams out;
  for (absl::string_view element : absl::StrSplit(text, ',')) {
    element = absl::StripAsciiWhitespace(element);
    if (element.empty()) {
      if (absl::StripAsciiWhitespace(text).empty()) break;
      return absl::InvalidArgumentError(absl::StrCat("empty element in \"", text, "\""));
    }
    const size_t eq = element.find('=');
    if (eq == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", element, "\": expected name=value (e.g. nprobe=64)"));
    }
    const std::string name(absl::StripAsciiWhitespace(element.substr(0, eq)));
    const absl::string_view value_text = absl::StripAsciiWhitespace(element.substr(eq + 1));
    double value = 0;
    if (!absl::SimpleAtod(value_text, &value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", element, "\": \"", value_text, "\" is not a number"));
    }
    if (auto s = CheckParamValue(name, value); !s.ok()) return s;
    for (const auto& [n, v] : out) {
      if (n == name) return absl::InvalidArgumentError(absl::StrCat(name, " given twice"));
    }
    out.emplace_back(name, value);
  }
  return out;
}

std::string FormatIndexParams(const IndexParams& params) {
  if (params.empty()) return "-";
  return absl::StrJoin(params, ", ", [](std::string* out, const auto& p) {
    absl::StrAppend(out, p.first, "=", p.second);
  });
}

absl::StatusOr<IndexParams> VersionManager::ResolvedIndexParams(const Options& options) {
  IndexParams params;
  for (const auto& [name, value] : options.index_params) {
    if (auto s = CheckParamValue(name, value); !s.ok()) return s;
    for (const auto& [n, v] : params) {
      if (n == name) return absl::InvalidArgumentError(absl::StrCat(name, " given twice"));
    }
    params.emplace_back(name, value);
  }
  if (options.ef_search != 0) {
    if (options.ef_search < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("ef_search must be >= 0 (0 = none), got ", options.ef_search));
    }
    for (const auto& [n, v] : params) {
      if (n == "efSearch") {
        return absl::InvalidArgumentError(
            "efSearch given twice: the deprecated ef_search and index_params (use index_params)");
      }
    }
    params.emplace_back("efSearch", options.ef_search);
  }
  return params;
}

VersionManager::VersionManager(Options options)
    : options_(std::move(options)), index_params_(ResolvedIndexParams(options_)) {
  if (!index_params_.ok()) {
    LOG(ERROR) << "index search parameters: " << index_params_.status().message()
               << "; every model version load fails until this is fixed";
  }
}

VersionManager::~VersionManager() { Stop(); }

absl::StatusOr<std::shared_ptr<Servable>> VersionManager::LoadServable(
    const std::string& dir, const IndexParams& overrides) {
  auto model = ModelVersion::Load(dir);
  if (!model.ok()) return model.status();
  const auto& m = (*model)->manifest();
  const std::string index_path = (fs::path(dir) / m.index_file()).string();
  auto index = EmbeddingIndex::Load(index_path, m.index_factory());
  if (!index.ok()) {
    return absl::Status(index.status().code(),
                        absl::StrCat(index_path, ": ", index.status().message()));
  }
  if ((*index)->dim() != (*model)->dim()) {
    return absl::DataLossError(absl::StrCat(index_path, ": dim ", (*index)->dim(),
                                            " != manifest embedding_dim ", (*model)->dim()));
  }
  // The tuner's pick from the manifest (sorted by name: a proto map has no order), then the
  // operator's override.
  const std::map<std::string, double> manifest_params(m.index_search_params().begin(),
                                                      m.index_search_params().end());
  for (const auto& [name, value] : manifest_params) {
    if (auto s = (*index)->SetSearchParameter(name, value); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          (fs::path(dir) / kManifestFile).string(), ": index_search_params ", name, "=", value,
          ": ", s.message()));
    }
  }
  for (const auto& [name, value] : overrides) {
    if (!(*index)->GetSearchParameter(name).ok()) {
      LOG(WARNING) << "index search parameter override " << name << "=" << value
                   << " skipped for " << dir << ": its index \"" << m.index_factory()
                   << "\" has no " << name;
      continue;
    }
    if (auto s = (*index)->SetSearchParameter(name, value); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("index search parameter override ", name,
                                                     "=", value, ": ", s.message()));
    }
  }
  auto servable = std::make_shared<Servable>();
  servable->model = *std::move(model);
  servable->index = *std::move(index);

  // Warm-up: one synthetic request through both towers and the index, so the first real
  // request does not pay for TorchScript's first-run optimization or cold pages.
  recall::v1::UserFeatures user;
  user.set_user_id(0);
  recall::v1::ItemFeatures item;
  const recall::v1::UserFeatures* up = &user;
  const recall::v1::ItemFeatures* ip = &item;
  for (int i = 0; i < 2; ++i) {
    auto u = servable->model->EmbedUsers(servable->model->encoder().EncodeUsers({&up, 1}));
    if (!u.ok()) return absl::DataLossError(absl::StrCat(dir, ": warm-up: ", u.status().message()));
    auto v = servable->model->EmbedItems(servable->model->encoder().EncodeItems({&ip, 1}));
    if (!v.ok()) return absl::DataLossError(absl::StrCat(dir, ": warm-up: ", v.status().message()));
    auto hits = servable->index->Search(u->data_ptr<float>(), 1, 10);
    if (!hits.ok()) return hits.status();
  }
  return servable;
}

std::shared_ptr<Servable> VersionManager::Current() const {
  absl::MutexLock lock(&mu_);
  return current_;
}

int64_t VersionManager::serving_version() const {
  absl::MutexLock lock(&mu_);
  return current_ ? current_->version() : 0;
}

int64_t VersionManager::pinned_version() const {
  absl::MutexLock lock(&mu_);
  return pinned_;
}

absl::Status VersionManager::LoadAndInstall(int64_t version) {
  {
    absl::MutexLock lock(&mu_);
    if (auto it = failed_.find(version); it != failed_.end()) {
      return absl::FailedPreconditionError(
          absl::StrCat("model version ", version, " is invalid: ", it->second));
    }
  }
  const auto start = std::chrono::steady_clock::now();
  auto seconds = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  if (!index_params_.ok()) return index_params_.status();  // not the version's fault
  const std::string dir = VersionPath(options_.model_base, version);
  auto servable = LoadServable(dir, *index_params_);
  absl::Status s = servable.status();
  if (s.ok()) {
    std::shared_ptr<Servable> candidate = *servable;
    auto swap = [&] {
      absl::MutexLock lock(&mu_);
      current_ = candidate;
    };
    s = installer_ ? installer_(*candidate, swap) : (swap(), absl::OkStatus());
  }
  if (on_load_) on_load_(s.ok(), seconds());
  if (!s.ok()) {
    LOG(ERROR) << "refusing model version " << version << ": " << s.message();
    absl::MutexLock lock(&mu_);
    failed_[version] = std::string(s.message());
    return s;
  }
  {
    IndexParams in_force;
    for (auto& p : (*servable)->index->SearchParameters()) in_force.push_back(std::move(p));
    LOG(INFO) << "serving model version " << version << " (" << (*servable)->index->size()
              << " items, index " << (*servable)->model->manifest().index_factory()
              << ", search parameters " << FormatIndexParams(in_force) << ", loaded in "
              << seconds() << " s)";
  }
  if (on_swap_) on_swap_(**servable);
  RemoveOldVersions();
  // The reader's temporary buffers and, after a swap, the whole old version (hundreds of MB at
  // 1M items) would stay in the allocator's page heap, counted in RSS: hand them back.
  ReleaseFreeMemory();
  return absl::OkStatus();
}

absl::Status VersionManager::ReconcileLocked() {
  int64_t pinned, serving;
  {
    absl::MutexLock lock(&mu_);
    pinned = pinned_;
    serving = current_ ? current_->version() : 0;
  }
  if (pinned > 0) return pinned == serving ? absl::OkStatus() : LoadAndInstall(pinned);
  std::vector<int64_t> versions = ListVersionNumbers(options_.model_base);
  absl::Status last = absl::NotFoundError(
      absl::StrCat("no valid model version under ", options_.model_base));
  for (auto it = versions.rbegin(); it != versions.rend(); ++it) {
    if (*it == serving) return absl::OkStatus();
    // Following the newest never goes back to an older version than the serving one (a
    // rollback is a pin); after an unpin it does, to the newest valid.
    {
      absl::MutexLock lock(&mu_);
      if (failed_.contains(*it)) continue;
    }
    absl::Status s = LoadAndInstall(*it);
    if (s.ok()) return s;
    last = s;
  }
  return serving > 0 ? absl::OkStatus() : last;
}

absl::Status VersionManager::Reconcile() {
  absl::MutexLock lock(&load_mu_);
  return ReconcileLocked();
}

absl::Status VersionManager::SetServingVersion(int64_t version) {
  if (version < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("version: must be >= 0 (0 = follow the newest), got ", version));
  }
  absl::MutexLock lock(&load_mu_);
  if (version > 0 && !fs::exists(VersionPath(options_.model_base, version))) {
    return absl::NotFoundError(absl::StrCat("version: ", version, " is not under ",
                                            options_.model_base, " (ListVersions shows them)"));
  }
  int64_t previous;
  {
    absl::MutexLock l(&mu_);
    previous = pinned_;
    pinned_ = version;
  }
  absl::Status s = ReconcileLocked();
  if (!s.ok()) {
    absl::MutexLock l(&mu_);
    pinned_ = previous;
  }
  return s;
}

std::vector<VersionStatus> VersionManager::List() const {
  std::vector<VersionStatus> out;
  const int64_t serving = serving_version();
  for (int64_t v : ListVersionNumbers(options_.model_base)) {
    VersionStatus st;
    st.version = v;
    auto m = ReadManifest(VersionPath(options_.model_base, v));
    if (m.ok()) st.manifest = *std::move(m);
    {
      absl::MutexLock lock(&mu_);
      if (auto it = failed_.find(v); it != failed_.end()) {
        st.state = absl::StrCat("invalid: ", it->second);
      }
    }
    if (st.state.empty()) {
      st.state = v == serving ? "serving"
                 : m.ok()     ? "available"
                              : absl::StrCat("invalid: ", m.status().message());
    }
    out.push_back(std::move(st));
  }
  return out;
}

void VersionManager::RemoveOldVersions() {
  if (options_.keep_versions <= 0) return;
  std::vector<int64_t> versions = ListVersionNumbers(options_.model_base);
  if (static_cast<int>(versions.size()) <= options_.keep_versions) return;
  int64_t serving, pinned;
  {
    absl::MutexLock lock(&mu_);
    serving = current_ ? current_->version() : 0;
    pinned = pinned_;
  }
  std::vector<int64_t> needed = {serving, pinned};
  if (prune_guard_) {
    auto others = prune_guard_();
    if (!others.ok()) {
      LOG(WARNING) << "not pruning old model versions: which ones the replica set still needs "
                      "is unknown ("
                   << others.status().message() << ")";
      return;
    }
    needed.insert(needed.end(), others->begin(), others->end());
  }
  const size_t drop = versions.size() - options_.keep_versions;
  for (size_t i = 0; i < drop; ++i) {
    if (std::find(needed.begin(), needed.end(), versions[i]) != needed.end()) continue;
    std::error_code ec;
    fs::remove_all(VersionPath(options_.model_base, versions[i]), ec);
    if (ec) {
      LOG(WARNING) << "cannot remove old model version " << versions[i] << ": " << ec.message();
    } else {
      LOG(INFO) << "removed old model version " << versions[i] << " (keeping the newest "
                << options_.keep_versions << ")";
      absl::MutexLock lock(&mu_);
      failed_.erase(versions[i]);
    }
  }
}

void VersionManager::StartPolling(absl::Duration interval) {
  poller_ = std::thread([this, interval] {
    absl::MutexLock lock(&poll_mu_);
    while (!poll_mu_.AwaitWithTimeout(absl::Condition(&stop_), interval)) {
      poll_mu_.Unlock();
      auto s = Reconcile();
      (void)s;  // failures are logged once per version; NotFound just means nothing yet
      poll_mu_.Lock();
    }
  });
}

void VersionManager::Stop() {
  {
    absl::MutexLock lock(&poll_mu_);
    stop_ = true;
  }
  if (poller_.joinable()) poller_.join();
}

}  // namespace recall::server
