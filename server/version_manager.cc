#include "server/version_manager.h"

#include <glog/logging.h>

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "model/version_dir.h"

namespace recall::server {
namespace fs = std::filesystem;

VersionManager::VersionManager(Options options) : options_(std::move(options)) {}

VersionManager::~VersionManager() { Stop(); }

std::shared_ptr<Servable> VersionManager::Current() const {
  absl::MutexLock lock(&mu_);
  return current_;
}

absl::StatusOr<std::shared_ptr<Servable>> VersionManager::LoadServable(const std::string& dir,
                                                                       int ef_search) {
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
  if (ef_search > 0 && absl::StrContains(m.index_factory(), "HNSW")) {
    if (auto s = (*index)->SetSearchParameter("efSearch", ef_search); !s.ok()) return s;
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

absl::Status VersionManager::LoadNewerThan(int64_t current) {
  std::vector<int64_t> versions = ListVersionNumbers(options_.model_base);
  absl::Status last = absl::NotFoundError(
      absl::StrCat("no valid model version under ", options_.model_base));
  for (auto it = versions.rbegin(); it != versions.rend() && *it > current; ++it) {
    {
      absl::MutexLock lock(&mu_);
      if (failed_.contains(*it)) continue;
    }
    const std::string dir = VersionPath(options_.model_base, *it);
    auto servable = LoadServable(dir, options_.ef_search);
    if (!servable.ok()) {
      LOG(ERROR) << "refusing model version " << *it << ": " << servable.status().message();
      absl::MutexLock lock(&mu_);
      failed_[*it] = std::string(servable.status().message());
      last = servable.status();
      continue;
    }
    {
      absl::MutexLock lock(&mu_);
      current_ = *servable;
    }
    LOG(INFO) << "serving model version " << *it << " (" << (*servable)->index->size()
              << " items, index " << (*servable)->model->manifest().index_factory() << ")";
    if (on_swap_) on_swap_(**servable);
    return absl::OkStatus();
  }
  return last;
}

absl::Status VersionManager::LoadNewest() {
  auto cur = Current();
  return LoadNewerThan(cur ? cur->version() : 0);
}

void VersionManager::StartPolling(absl::Duration interval) {
  poller_ = std::thread([this, interval] {
    absl::MutexLock lock(&poll_mu_);
    while (!poll_mu_.AwaitWithTimeout(absl::Condition(&stop_), interval)) {
      poll_mu_.Unlock();
      auto s = LoadNewest();
      (void)s;  // NotFound just means nothing newer
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
