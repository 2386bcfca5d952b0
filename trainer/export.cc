#include "trainer/export.h"

#include <glog/logging.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "index/embedding_index.h"
#include "model/train_config.h"
#include "model/version_dir.h"
#include "model/vocabulary.h"

namespace recall::trainer {
namespace fs = std::filesystem;

absl::StatusOr<std::string> ExportVersion(Trainer& trainer, const std::string& model_base,
                                          const std::string& index_factory,
                                          const RankingMetrics& metrics, const std::string& preset,
                                          int64_t version) {
  Towers& towers_ = trainer.towers();
  const Dataset& dataset_ = trainer.dataset();
  const TrainConfig& config_ = trainer.config();
  if (version <= 0) version = NextVersionNumber(model_base);
  // Staging dirs of publishers that died (recall-train killed mid-publish) are never read by
  // anyone; the next publisher clears them so they do not pile up.
  if (const int stale = RemoveStaleStagingDirs(model_base); stale > 0) {
    LOG(INFO) << "removed " << stale << " staging dir(s) left by dead publishers in " << model_base;
  }
  auto staging = CreateStagingDir(model_base, version);
  if (!staging.ok()) return staging.status();
  const fs::path dir(*staging);
  try {
    towers_.user.eval();
    towers_.item.eval();
    towers_.user.save((dir / kUserTowerFile).string());
    towers_.item.save((dir / kItemTowerFile).string());
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("saving towers: ", e.what()));
  }
  // What the server sees are external ids: the vocabularies and the index hold those.
  if (!trainer.spec().user_id().vocab_file().empty()) {
    auto s = Vocabulary(ExternalUserIds(dataset_)).Save((dir / kUserVocabFile).string());
    if (!s.ok()) return s;
  }
  if (!trainer.spec().item_id().vocab_file().empty()) {
    auto s = Vocabulary(ExternalItemIds(dataset_)).Save((dir / kItemVocabFile).string());
    if (!s.ok()) return s;
  }
  torch::Tensor items = trainer.EmbedAllItems();
  auto index = EmbeddingIndex::Create(static_cast<int>(items.size(1)), index_factory);
  if (!index.ok()) return index.status();
  const auto ids = ExternalItemIds(dataset_);
  if (auto s = (*index)->Build(ids, items.data_ptr<float>()); !s.ok()) return s;
  if (auto s = (*index)->Save((dir / kIndexFile).string()); !s.ok()) return s;

  recall::v1::ModelManifest m;
  m.set_version(version);
  m.set_created_at(absl::FormatTime(absl::RFC3339_sec, absl::Now(), absl::UTCTimeZone()));
  m.set_embedding_dim(static_cast<int>(items.size(1)));
  if (config_.tower().item_bias()) m.set_score_offset_stride(OutputDim(config_.tower()));
  *m.mutable_feature_spec() = trainer.spec();
  m.set_index_factory(index_factory);
  m.set_num_items(dataset_.num_items);
  // Exactly how the version was made: every option, with the index it really built.
  *m.mutable_train_config() = ResolveTrainConfig(config_);
  m.mutable_train_config()->set_index_factory(index_factory);
  m.set_train_preset(preset);
  auto* eval = m.mutable_eval();
  eval->set_dataset(dataset_.name);
  eval->set_split("test");
  eval->set_num_users(metrics.num_users);
  for (const auto& [k, v] : metrics.values) (*eval->mutable_metrics())[k] = v;
  return PublishVersion(model_base, *staging, std::move(m));
}

}  // namespace recall::trainer
