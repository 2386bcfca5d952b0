// ModelVersion: the towers, vocabularies and feature encoder of one published version.
// (The item index lives in index/; the server composes the two.)
//
// Thread-safety: after Load, EmbedUsers/EmbedItems may be called from many threads at once.
// TorchScript inference on a module that holds no mutable state is re-entrant.
#ifndef RECALL_MODEL_MODEL_VERSION_H_
#define RECALL_MODEL_MODEL_VERSION_H_

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "model/encoder.h"
#include "recall/v1/model.pb.h"

// Kept out of this header: torch/script.h takes 10 s to parse in every server file.
namespace torch::jit {
struct Module;
}  // namespace torch::jit

namespace recall {

class ModelVersion {
 public:
  // Verifies `dir` (VerifyVersionDir: manifest + sha256 of every file), then loads the
  // vocabularies and both TorchScript towers. Any failure names the file.
  static absl::StatusOr<std::unique_ptr<ModelVersion>> Load(const std::string& dir);

  ~ModelVersion();

  // [B, dim] float32, contiguous. LibTorch exceptions become statuses.
  absl::StatusOr<at::Tensor> EmbedUsers(const UserBatch& batch) const;
  absl::StatusOr<at::Tensor> EmbedItems(const ItemBatch& batch) const;

  const FeatureEncoder& encoder() const { return *encoder_; }
  std::shared_ptr<const FeatureEncoder> shared_encoder() const { return encoder_; }
  const recall::v1::ModelManifest& manifest() const { return manifest_; }
  int64_t version() const { return manifest_.version(); }
  int dim() const { return manifest_.embedding_dim(); }
  const std::string& dir() const { return dir_; }

 private:
  ModelVersion();
  absl::StatusOr<at::Tensor> Run(torch::jit::Module& m, std::vector<c10::IValue> in,
                                 int64_t batch, const char* which) const;

  std::string dir_;
  recall::v1::ModelManifest manifest_;
  std::shared_ptr<const FeatureEncoder> encoder_;
  std::unique_ptr<torch::jit::Module> user_tower_, item_tower_;
};

// Loads one TorchScript file (in eval mode, parameters without grad), turning exceptions into
// a status that names the file.
absl::StatusOr<std::unique_ptr<torch::jit::Module>> LoadTorchScript(const std::string& path);

}  // namespace recall

#endif  // RECALL_MODEL_MODEL_VERSION_H_
