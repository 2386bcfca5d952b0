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

namespace recall::trainer {

struct TowerConfig {
  int dim = 64;                 // output embedding dim
  int id_dim = 64;              // id embedding dim (user, item, history)
  int cat_dim = 16;             // per categorical feature
  std::vector<int> user_hidden; // hidden layer widths of the user MLP
  std::vector<int> item_hidden;
  bool l2_normalize = true;     // off only for ablations: the serving contract wants it on
  // The user tower pools history items from the item tower's own id table (one tensor in both
  // modules while training; each saved file carries its copy), as in SimpleX, instead of a
  // separate history table.
  bool share_item_embeddings = false;
  bool sqrt_pooling = false;    // pool by sum / sqrt(n) instead of the mean (see above)
  float init_std = 0.1f;
  // A learned per-item score offset b (logit units) carried as one more output coordinate:
  // the user tower appends 1, the item tower appends bias_scale * b[item row], so every inner
  // product is cos(u, i) + bias_scale * b_i, and with bias_scale = the temperature a training
  // logit <u, v> / tau is cos / tau + b_i. The first `dim` coordinates stay L2-normalized; the
  // output is dim + 1 wide. b starts at 0 (the OOV row stays 0: an unknown item gets no offset).
  bool item_bias = false;
  float bias_scale = 0.1f;
  int output_dim() const { return dim + (item_bias ? 1 : 0); }
};

struct Towers {
  torch::jit::Module user;
  torch::jit::Module item;
  // Every trainable tensor once (a shared table is listed once).
  std::vector<torch::Tensor> parameters() const;
};

// Builds fresh towers for the encoder's spec; initialization draws from torch's global RNG
// (seed it with torch::manual_seed for repeatable runs).
Towers BuildTowers(const FeatureEncoder& encoder, const TowerConfig& config);

// An ensemble of N member models (trainer/ensemble.h) as one model of dim N * dim: each tower
// runs the N members' towers on the same inputs and concatenates their outputs scaled by
// 1/sqrt(N). Inner products of ensemble outputs are the mean of the members' inner products,
// and unit-norm member outputs give unit-norm ensemble outputs. The members' modules are
// shared, not copied; all members must be built for the same encoder spec.
Towers EnsembleTowers(const FeatureEncoder& encoder, const std::vector<const Towers*>& members);

// The TorchScript source of a tower's forward, for documentation and tests.
std::string UserTowerSource(const FeatureEncoder& encoder, const TowerConfig& config);
std::string ItemTowerSource(const FeatureEncoder& encoder, const TowerConfig& config);

}  // namespace recall::trainer

#endif  // RECALL_TRAINER_TOWERS_H_
