#include "tests/server/small_model.h"

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "model/version_dir.h"
#include "trainer/export.h"
#include "trainer/trainer.h"

namespace recall::testing {

trainer::SyntheticConfig SmallSyntheticConfig() {
  trainer::SyntheticConfig sc;
  sc.num_users = 400;
  sc.num_items = 300;
  sc.num_categories = 6;
  sc.seed = 7;
  return sc;
}

trainer::TrainConfig SmallTrainConfig() {
  trainer::TrainConfig tc = *LoadPreset("smoke");
  tc.set_epochs(3);
  tc.set_batch_size(128);
  tc.set_history_length(20);
  tc.set_seed(7);
  return tc;
}

std::string FreshTempDir(const std::string& name) {
  namespace fs = std::filesystem;
  const fs::path p = fs::temp_directory_path() / (name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

namespace {

trainer::Dataset SmallDataset(void (*edit_data)(trainer::Dataset&)) {
  trainer::Dataset d = trainer::GenerateSynthetic(SmallSyntheticConfig());
  if (edit_data != nullptr) edit_data(d);
  return d;
}

std::vector<float> Flatten(const torch::Tensor& t) {
  const torch::Tensor c = t.to(torch::kFloat32).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

}  // namespace

SmallTrainedModel::SmallTrainedModel(const std::string& name,
                                     void (*edit)(trainer::TrainConfig&),
                                     void (*edit_data)(trainer::Dataset&))
    : dir(FreshTempDir(name)), dataset(SmallDataset(edit_data)) {
  if (const absl::Status valid = dataset.Validate(); !valid.ok()) {
    ADD_FAILURE() << "the edited dataset is invalid: " << valid;
    return;
  }
  trainer::TrainConfig config = SmallTrainConfig();
  if (edit != nullptr) edit(config);
  auto t = trainer::Trainer::Create(dataset, config);
  if (!t.ok()) {
    ADD_FAILURE() << t.status();
    return;
  }
  if (!(*t)->Train().ok()) {
    ADD_FAILURE() << "training the small model failed";
    return;
  }
  metrics = (*t)->Evaluate();
  trainer_ = std::move(*t);
}

SmallTrainedModel::~SmallTrainedModel() {
  trainer_.reset();
  std::filesystem::remove_all(dir);
}

absl::StatusOr<std::string> SmallTrainedModel::Export(const std::string& model_base,
                                                      const std::string& index_factory,
                                                      int64_t version) const {
  return trainer::ExportVersion(*trainer_, model_base, index_factory, metrics, {}, version);
}

absl::StatusOr<std::string> SmallTrainedModel::ExportEdited(
    const std::string& model_base, const std::string& index_factory,
    const std::function<void(recall::v1::ModelManifest&)>& edit, int64_t version) const {
  namespace fs = std::filesystem;
  if (version == 0) version = NextVersionNumber(model_base);
  const std::string scratch = dir + "/export_scratch";
  fs::remove_all(scratch);
  auto exported = trainer::ExportVersion(*trainer_, scratch, index_factory, metrics, {}, version);
  if (!exported.ok()) return exported.status();
  auto manifest = ReadManifest(*exported);
  if (!manifest.ok()) return manifest.status();
  if (edit) edit(*manifest);
  manifest->set_version(version);
  auto staging = CreateStagingDir(model_base, version);
  if (!staging.ok()) return staging.status();
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(*exported, ec)) {
    if (entry.path().filename() == kManifestFile) continue;
    fs::copy(entry.path(), fs::path(*staging) / entry.path().filename(), ec);
    if (ec) break;
  }
  if (ec) return absl::InternalError(absl::StrCat("copying ", *exported, ": ", ec.message()));
  auto published = PublishVersion(model_base, *staging, *std::move(manifest));
  fs::remove_all(scratch);
  return published;
}

int SmallTrainedModel::dim() const { return trainer_->config().tower().dim(); }

int SmallTrainedModel::width() const {
  return static_cast<int>(trainer_->EmbedUsers({0}).size(1));
}

std::vector<float> SmallTrainedModel::ItemEmbeddings() const {
  return Flatten(trainer_->EmbedAllItems());
}

std::vector<float> SmallTrainedModel::UserEmbedding(int64_t user) const {
  return Flatten(trainer_->EmbedUsers({user}));
}

}  // namespace recall::testing
