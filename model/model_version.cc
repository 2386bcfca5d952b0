#include "model/model_version.h"

#include <torch/script.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "model/version_dir.h"

namespace recall {
namespace fs = std::filesystem;

absl::StatusOr<std::unique_ptr<torch::jit::Module>> LoadTorchScript(const std::string& path) {
  try {
    auto m = std::make_unique<torch::jit::Module>(torch::jit::load(path, torch::kCPU));
    m->eval();
    // Serving never trains: without requires_grad the executor builds no autograd graphs,
    // which also keeps InferenceMode legal for modules exported mid-training.
    for (torch::Tensor p : m->parameters()) p.requires_grad_(false);
    return m;
  } catch (const std::exception& e) {
    return absl::DataLossError(absl::StrCat(path, ": not a loadable TorchScript module: ",
                                            std::string(e.what()).substr(0, 300)));
  }
}

ModelVersion::ModelVersion() = default;
ModelVersion::~ModelVersion() = default;

absl::StatusOr<std::unique_ptr<ModelVersion>> ModelVersion::Load(const std::string& dir) {
  auto manifest = VerifyVersionDir(dir);
  if (!manifest.ok()) return manifest.status();
  std::unique_ptr<ModelVersion> mv(new ModelVersion());
  mv->dir_ = dir;
  mv->manifest_ = *manifest;
  const auto& spec = manifest->feature_spec();
  Vocabulary vocabs[2];
  const std::string* files[2] = {&spec.user_id().vocab_file(), &spec.item_id().vocab_file()};
  for (int i = 0; i < 2; ++i) {
    if (files[i]->empty()) continue;
    auto v = Vocabulary::Load((fs::path(dir) / *files[i]).string());
    if (!v.ok()) return v.status();
    vocabs[i] = *std::move(v);
  }
  auto enc = FeatureEncoder::Create(spec, std::move(vocabs[0]), std::move(vocabs[1]));
  if (!enc.ok()) {
    return absl::DataLossError(absl::StrCat(dir, "/", kManifestFile, ": ", enc.status().message()));
  }
  mv->encoder_ = *enc;
  auto user = LoadTorchScript((fs::path(dir) / manifest->user_tower_file()).string());
  if (!user.ok()) return user.status();
  auto item = LoadTorchScript((fs::path(dir) / manifest->item_tower_file()).string());
  if (!item.ok()) return item.status();
  mv->user_tower_ = *std::move(user);
  mv->item_tower_ = *std::move(item);
  return mv;
}

absl::StatusOr<torch::Tensor> ModelVersion::Run(torch::jit::Module& m,
                                                std::vector<torch::jit::IValue> in,
                                                int64_t batch, const char* which) const {
  try {
    c10::InferenceMode guard;
    torch::Tensor out = m.forward(std::move(in)).toTensor();
    if (out.dim() != 2 || out.size(0) != batch || out.size(1) != dim() ||
        out.scalar_type() != torch::kFloat32) {
      return absl::InternalError(absl::StrCat(which, " tower returned shape ",
                                              c10::str(out.sizes()), ", expected [", batch,
                                              ", ", dim(), "] float32"));
    }
    return out.contiguous();
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat(which, " tower failed: ", std::string(e.what()).substr(0, 300)));
  }
}

absl::StatusOr<torch::Tensor> ModelVersion::EmbedUsers(const UserBatch& batch) const {
  return Run(*user_tower_, batch.Inputs(), batch.size(), "user");
}

absl::StatusOr<torch::Tensor> ModelVersion::EmbedItems(const ItemBatch& batch) const {
  return Run(*item_tower_, batch.Inputs(), batch.size(), "item");
}

}  // namespace recall
