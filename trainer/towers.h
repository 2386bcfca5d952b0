// The user and item towers, each defined once as a TorchScript module that is trained from C++
// and saved as is: the module the trainer optimizes is the module the server loads.
//
// user: [E_user[id] | pool_{mask} E_hist[history] | E_ucat[categorical] (flattened) | numeric]
//       -> MLP -> L2 normalize
// item: [E_item[id] | pool_{mask} E_aud[audience] | E_icat[categorical] (flattened) | numeric]
//       -> MLP -> L2 normalize; the audience part (the item's training users, over user id
//       rows) only when the spec has item_audience_length > 0
// The MLP is `hidden` Linear+ReLU layers followed by a Linear to `dim` (no hidden layer = one
// linear projection). Row 0 of every id table (OOV / padding) starts at zero.
// pool: the sum over the masked entries divided by their count n (mean) or by sqrt(n)
// (LightGCN's symmetric degree normalization on the user / item side: a longer history or
// larger audience keeps a longer pooled vector).
#ifndef RECALL_TRAINER_TOWERS_H_
#define RECALL_TRAINER_TOWERS_H_

#include <torch/script.h>
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "model/encoder.h"
#include "recall/v1/train_config.pb.h"

namespace recall::trainer {

// The towers' shape: recall.v1.TowerConfig (proto/recall/v1/train_config.proto), one
// definition with the rest of the training options.
using TowerConfig = recall::v1::TowerConfig;
// Output width: dim, plus the score-offset coordinate with item_bias.
inline int OutputDim(const TowerConfig& c) { return c.dim() + (c.item_bias() ? 1 : 0); }

struct Towers {
  torch::jit::Module user;
  torch::jit::Module item;
  // Every trainable tensor once (a shared table is listed once).
  std::vector<torch::Tensor> parameters() const;
};

// Builds fresh towers for the encoder's spec; initialization draws from torch's global RNG
// (seed it with torch::manual_seed for repeatable runs). With item_bias the item tower scales
// its offset coordinate by `bias_scale` (the temperature, so the offset is in logit units:
// <u, v> / tau = cos / tau + b_i).
Towers BuildTowers(const FeatureEncoder& encoder, const TowerConfig& config, float bias_scale);

// An ensemble of N member models (trainer/ensemble.h) as one model of dim N * dim: each tower
// runs the N members' towers on the same inputs and concatenates their outputs scaled by
// 1/sqrt(N). Inner products of ensemble outputs are the mean of the members' inner products,
// and unit-norm member outputs give unit-norm ensemble outputs. The members' modules are
// shared, not copied; all members must be built for the same encoder spec.
Towers EnsembleTowers(const FeatureEncoder& encoder, const std::vector<const Towers*>& members);

// The TorchScript source of a tower's forward, for documentation and tests.
std::string UserTowerSource(const FeatureEncoder& encoder, const TowerConfig& config);
std::string ItemTowerSource(const FeatureEncoder& encoder, const TowerConfig& config,
                            float bias_scale);

}  // namespace recall::trainer

#endif  // RECALL_TRAINER_TOWERS_H_
