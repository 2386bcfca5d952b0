#include "trainer/export.h"

#include <glog/logging.h>

#include <filesystem>
#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "index/embedding_index.h"
#include "index/index_tuner.h"
#include "index/vector_file.h"
#include "model/train_config.h"
#include "model/version_dir.h"
#include "model/vocabulary.h"
#include "trainer/index_tuning.h"
#include "trainer/quality.h"

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
  const int dim = static_cast<int>(items.size(1));
  const auto ids = ExternalItemIds(dataset_);
  std::unique_ptr<EmbeddingIndex> index;
  std::optional<recall::v1::IndexTuning> tuning;
  RankingMetrics ann;
  if (index_factory == kAutoIndexFactory) {
    // Tune on held-out users' tower outputs as the server will compute them; the queries
    // travel with the version so `recall-index tune` can re-tune it later.
    const std::vector<int64_t> users =
        TuningUsers(trainer.fit_split(), trainer.batches().has_validation(),
                    config_.index_tune_queries(), config_.seed());
    if (users.empty()) return absl::FailedPreconditionError("no user to tune the index with");
    torch::Tensor q = trainer.EmbedUsers(users).contiguous();
    const int nq = static_cast<int>(q.size(0));
    if (auto s = WriteFvecs((dir / kTuneQueriesFile).string(), q.data_ptr<float>(), nq, dim);
        !s.ok()) {
      return s;
    }
    const TuneOptions options = TuneOptionsFrom(config_);
    auto tuned = TuneIndex(ids, items.data_ptr<float>(), dim, q.data_ptr<float>(), nq, options);
    if (!tuned.ok()) return tuned.status();
    if (tuned->index == nullptr) return absl::InternalError("the index tuner chose nothing");
    tuning = TuningRecord(*tuned, options, static_cast<int64_t>(ids.size()), nq,
                          trainer.batches().has_validation() ? "validation users"
                                                             : "a sample of users");
    index = std::move(tuned->index);
    const TunePoint& c = tuned->points[tuned->chosen];
    LOG(INFO) << "index tuned in " << tuned->total_s << " s: " << c.factory << " recall@"
              << options.k << " " << c.recall << " (target " << options.recall_target << ")"
              << (tuned->target_met ? "" : " -- target not met");
    // What the test split sees through the published index, beside the exact figures.
    if (metrics.values.count("recall@20") > 0) {
      torch::Tensor u = trainer.EmbedAllUsers().contiguous();
      auto through = EvaluateThroughIndex(dataset_, u.data_ptr<float>(), dim, *index, ids, metrics);
      if (through.ok()) {
        ann = std::move(*through);
      } else {
        LOG(WARNING) << "evaluation through the tuned index: " << through.status();
      }
    }
  } else {
    auto created = EmbeddingIndex::Create(dim, index_factory);
    if (!created.ok()) return created.status();
    index = std::move(*created);
    if (auto s = index->Build(ids, items.data_ptr<float>()); !s.ok()) return s;
  }
  if (auto s = index->Save((dir / kIndexFile).string()); !s.ok()) return s;

  recall::v1::ModelManifest m;
  m.set_version(version);
  m.set_created_at(absl::FormatTime(absl::RFC3339_sec, absl::Now(), absl::UTCTimeZone()));
  m.set_embedding_dim(static_cast<int>(items.size(1)));
  if (config_.tower().item_bias()) m.set_score_offset_stride(OutputDim(config_.tower()));
  *m.mutable_feature_spec() = trainer.spec();
  m.set_index_factory(index->factory());
  for (const auto& [name, v] : index->SearchParameters()) {
    (*m.mutable_index_search_params())[name] = v;
  }
  if (tuning) *m.mutable_index_tuning() = std::move(*tuning);
  m.set_num_items(dataset_.num_items);
  // Exactly how the version was made: every option ("auto" stays: a retrain tunes again).
  *m.mutable_train_config() = ResolveTrainConfig(config_);
  m.mutable_train_config()->set_index_factory(index_factory);
  m.set_train_preset(preset);
  auto* eval = m.mutable_eval();
  eval->set_dataset(dataset_.name);
  eval->set_split("test");
  eval->set_num_users(metrics.num_users);
  for (const auto& [k, v] : metrics.values) (*eval->mutable_metrics())[k] = v;
  for (const auto& [k, v] : ann.values) (*eval->mutable_metrics())[k] = v;
  return PublishVersion(model_base, *staging, std::move(m));
}

}  // namespace recall::trainer
