#include "trainer/trainer.h"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <cmath>
#include <numeric>
#include <sstream>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include <glog/logging.h>
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "index/embedding_index.h"
#include <torch/csrc/jit/runtime/graph_executor.h>
#include "model/version_dir.h"
#include "model/vocabulary.h"
#include "trainer/quality.h"

namespace recall::trainer {
namespace fs = std::filesystem;
namespace {

int64_t Buckets(const std::vector<std::string>& values) {
  absl::flat_hash_set<std::string> distinct(values.begin(), values.end());
  // Twice the distinct values keeps collisions rare for the known values; new values still hash.
  return std::max<int64_t>(16, 2 * static_cast<int64_t>(distinct.size()));
}

// Uniform integer in [0, n) from a 64-bit engine, identical on every platform.
inline uint64_t UniformBelow(std::mt19937_64& rng, uint64_t n) { return rng() % n; }

// Bernoulli(p) from a 64-bit engine: platform-independent, and part of the checkpointed state.
inline bool Draw(std::mt19937_64& rng, double p) {
  return static_cast<double>(rng() >> 11) * 0x1.0p-53 < p;
}

std::vector<int64_t> Range(int64_t n) {
  std::vector<int64_t> v(n);
  std::iota(v.begin(), v.end(), 0);
  return v;
}

}  // namespace

Dataset HoldOutValidation(const Dataset& d, int64_t num_users, uint64_t seed,
                          double item_fraction) {
  Dataset fit = d;
  fit.name = d.name + "-validation";
  for (auto& t : fit.test) t.clear();
  std::vector<int64_t> eligible;
  for (int64_t u = 0; u < d.num_users; ++u) {
    if (d.train[u].size() >= 3) eligible.push_back(u);
  }
  // Own engine, salted: the choice must not shift the training RNG stream.
  std::mt19937_64 rng(seed ^ 0x76616c6964617465ULL);
  std::mt19937_64 more(seed ^ 0x6d6f72656974656dULL);
  const int64_t take = std::min<int64_t>(num_users, eligible.size());
  for (int64_t j = 0; j < take; ++j) {
    std::swap(eligible[j], eligible[j + UniformBelow(rng, eligible.size() - j)]);
    const int64_t u = eligible[j];
    auto& items = fit.train[u];
    const int64_t n = static_cast<int64_t>(items.size());
    const int64_t held =
        item_fraction > 0
            ? std::clamp<int64_t>(std::llround(item_fraction * static_cast<double>(n)), 1, n - 2)
            : 1;
    for (int64_t k = 0; k < held; ++k) {
      // Draws past the first come from their own engine: the users and first items chosen
      // stay those of the one-item split.
      const size_t pick = UniformBelow(k == 0 ? rng : more, items.size());
      fit.test[u].push_back(items[pick]);
      items.erase(items.begin() + pick);
    }
    std::sort(fit.test[u].begin(), fit.test[u].end());
  }
  return fit;
}

// Standardization of a numeric column: mean and (population) std over the entities that have a
// value; a constant or empty column gets std 1 so that the encoder never divides by zero.
void SetNumericStats(const std::vector<float>& col, recall::v1::NumericFeatureSpec* n) {
  double sum = 0, sq = 0;
  int64_t count = 0;
  for (float x : col) {
    if (std::isnan(x)) continue;
    sum += x;
    sq += static_cast<double>(x) * x;
    ++count;
  }
  const double mean = count > 0 ? sum / count : 0;
  const double var = count > 0 ? std::max(0.0, sq / count - mean * mean) : 0;
  const double std = std::sqrt(var);
  n->set_mean(static_cast<float>(mean));
  n->set_std(std > 1e-6 * std::max(1.0, std::abs(mean)) ? static_cast<float>(std) : 1.0f);
}

// Ids go through a vocabulary of the dataset's external ids (collision-free) unless a bucket
// count is given: then they are hashed into that many rows (the hashing trick: a table far
// smaller than the id space, e.g. for a 1M-item catalog served from a small process).
std::vector<int64_t> ExternalUserIds(const Dataset& d) {
  return d.user_ids.empty() ? Range(d.num_users) : d.user_ids;
}
std::vector<int64_t> ExternalItemIds(const Dataset& d) {
  return d.item_ids.empty() ? Range(d.num_items) : d.item_ids;
}

recall::v1::FeatureSpec SpecForDataset(const Dataset& d, int history_length,
                                       int64_t user_buckets, int64_t item_buckets) {
  recall::v1::FeatureSpec spec;
  spec.mutable_user_id()->set_name("user_id");
  spec.mutable_user_id()->set_num_buckets(
      user_buckets > 0 ? user_buckets : std::max<int64_t>(1, d.num_users));
  if (user_buckets <= 0) spec.mutable_user_id()->set_vocab_file(kUserVocabFile);
  spec.mutable_item_id()->set_name("item_id");
  spec.mutable_item_id()->set_num_buckets(
      item_buckets > 0 ? item_buckets : std::max<int64_t>(1, d.num_items));
  if (item_buckets <= 0) spec.mutable_item_id()->set_vocab_file(kItemVocabFile);
  spec.set_history_length(history_length);
  for (size_t f = 0; f < d.user_cat_names.size(); ++f) {
    auto* c = spec.add_user_categorical();
    c->set_name(d.user_cat_names[f]);
    c->set_num_buckets(Buckets(d.user_cat_values[f]));
  }
  for (size_t f = 0; f < d.item_cat_names.size(); ++f) {
    auto* c = spec.add_item_categorical();
    c->set_name(d.item_cat_names[f]);
    c->set_num_buckets(Buckets(d.item_cat_values[f]));
  }
  for (size_t f = 0; f < d.user_num_names.size(); ++f) {
    auto* n = spec.add_user_numeric();
    n->set_name(d.user_num_names[f]);
    SetNumericStats(d.user_num_values[f], n);
  }
  for (size_t f = 0; f < d.item_num_names.size(); ++f) {
    auto* n = spec.add_item_numeric();
    n->set_name(d.item_num_names[f]);
    SetNumericStats(d.item_num_values[f], n);
  }
  return spec;
}

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const Dataset& d, const TrainConfig& c,
                                                         int ensemble_member) {
  if (d.num_users <= 0 || d.num_items <= 0) {
    return absl::InvalidArgumentError("dataset has no users or no items");
  }
  if (absl::Status st = CheckTrainConfig(c); !st.ok()) return st;
  // The JIT's profiling executor re-specializes the tower graphs after their first runs, with
  // different float rounding: a resumed run would then drift from an uninterrupted one in the
  // last bits. The towers are a few ops each, so the plain interpreter costs nothing measurable.
  torch::jit::setGraphExecutorOptimize(false);
  std::unique_ptr<Trainer> t(new Trainer(d, c, ensemble_member));
  t->fit_ = &d;
  if (c.validation_users() > 0) {
    t->fit_split_ = std::make_unique<Dataset>(
        HoldOutValidation(d, c.validation_users(), c.seed(), c.validation_item_fraction()));
    t->fit_ = t->fit_split_.get();
  }
  const Dataset& fit = *t->fit_;
  recall::v1::FeatureSpec spec =
      SpecForDataset(d, c.history_length(), c.user_id_buckets(), c.item_id_buckets());
  spec.set_item_audience_length(c.eval_audience_length() > 0 ? c.eval_audience_length()
                                                           : c.item_audience_length());
  spec.set_item_neighbor_length(c.item_neighbor_length());
  auto enc = FeatureEncoder::Create(
      spec,
      c.user_id_buckets() > 0 ? Vocabulary() : Vocabulary(ExternalUserIds(d)),
      c.item_id_buckets() > 0 ? Vocabulary() : Vocabulary(ExternalItemIds(d)));
  if (!enc.ok()) return enc.status();
  t->encoder_ = *enc;
  const FeatureEncoder& e = *t->encoder_;

  t->user_row_.resize(d.num_users);
  t->user_cat_rows_.assign(d.num_users, std::vector<int64_t>(d.user_cat_names.size()));
  for (int64_t u = 0; u < d.num_users; ++u) {
    t->user_row_[u] = e.UserRow(d.ExternalUserId(u));
    for (size_t f = 0; f < d.user_cat_names.size(); ++f) {
      t->user_cat_rows_[u][f] = e.UserCategoricalRow(static_cast<int>(f), d.user_cat_values[f][u]);
    }
  }
  t->item_row_.resize(d.num_items);
  t->item_cat_rows_.assign(d.num_items, std::vector<int64_t>(d.item_cat_names.size()));
  for (int64_t i = 0; i < d.num_items; ++i) {
    t->item_row_[i] = e.ItemRow(d.ExternalItemId(i));
    for (size_t f = 0; f < d.item_cat_names.size(); ++f) {
      t->item_cat_rows_[i][f] = e.ItemCategoricalRow(static_cast<int>(f), d.item_cat_values[f][i]);
    }
  }
  // Numeric features standardized by the encoder's own function (what the server applies to a
  // request); a missing value is the mean, i.e. 0.
  t->user_num_rows_.assign(d.num_users, std::vector<float>(d.user_num_names.size(), 0.0f));
  for (size_t f = 0; f < d.user_num_names.size(); ++f) {
    for (int64_t u = 0; u < d.num_users; ++u) {
      const float x = d.user_num_values[f][u];
      if (!std::isnan(x)) t->user_num_rows_[u][f] = e.NormalizeUserNumeric(static_cast<int>(f), x);
    }
  }
  t->item_num_rows_.assign(d.num_items, std::vector<float>(d.item_num_names.size(), 0.0f));
  for (size_t f = 0; f < d.item_num_names.size(); ++f) {
    for (int64_t i = 0; i < d.num_items; ++i) {
      const float x = d.item_num_values[f][i];
      if (!std::isnan(x)) t->item_num_rows_[i][f] = e.NormalizeItemNumeric(static_cast<int>(f), x);
    }
  }
  for (int64_t u = 0; u < d.num_users; ++u) {
    for (int64_t i : fit.train[u]) t->examples_.emplace_back(u, i);
  }
  if (c.item_audience_length() > 0) {
    // Own engine: the training stream stays that of the same config without audiences.
    std::mt19937_64 order(c.seed() ^ 0x61756469656e6365ULL);
    auto audiences = [&](const Dataset& source) {
      std::vector<std::vector<int64_t>> out(d.num_items);
      for (int64_t u = 0; u < d.num_users; ++u) {
        for (int64_t i : source.train[u]) out[i].push_back(u);
      }
      for (auto& users : out) {
        for (int64_t j = static_cast<int64_t>(users.size()) - 1; j > 0; --j) {
          std::swap(users[j], users[UniformBelow(order, j + 1)]);
        }
      }
      return out;
    };
    t->full_graph_.audience = audiences(d);
    t->fit_graph_.audience = t->fit_ == &d ? t->full_graph_.audience : audiences(fit);
  }
  if (c.item_neighbor_length() > 0) {
    auto neighbors = [&](const Dataset& source) {
      const ItemNeighbors graph =
          ItemNeighbors::Build(source.train, d.num_items, c.item_neighbor_length());
      std::vector<std::vector<int64_t>> out(d.num_items);
      for (int64_t i = 0; i < d.num_items; ++i) {
        for (const auto& n : graph.of(i)) out[i].push_back(n.item);
      }
      return out;
    };
    t->full_graph_.neighbors = neighbors(d);
    t->fit_graph_.neighbors = t->fit_ == &d ? t->full_graph_.neighbors : neighbors(fit);
  }
  if (t->examples_.size() < 2) return absl::InvalidArgumentError("dataset has < 2 interactions");

  {
    // log of each entity's share of the training examples (an entity never seen counts once).
    const double total = static_cast<double>(t->examples_.size());
    // (Counts may be expected counts, as the neighbour draws'.)
    auto log_share = [total](const auto& counts) {
      torch::Tensor out = torch::empty({static_cast<int64_t>(counts.size())}, torch::kFloat32);
      auto a = out.accessor<float, 1>();
      for (size_t k = 0; k < counts.size(); ++k) {
        a[k] = static_cast<float>(std::log(std::max<double>(counts[k], 1) / total));
      }
      return out;
    };
    const std::vector<int64_t> popularity = fit.ItemPopularity();
    t->log_q_ = log_share(popularity);
    if (c.item_to_user_weight() > 0) {
      std::vector<int64_t> activity(d.num_users, 0);
      for (const auto& [u, i] : t->examples_) ++activity[u];
      t->log_q_users_ = log_share(activity);
    }
    if (c.item_neighbor_weight() > 0) {
      // From the fit split only: the validation items must not link anything.
      t->item_neighbors_ = ItemNeighbors::Build(fit.train, d.num_items, c.item_neighbors());
      // DrawShare is linear: popularity counts in, expected neighbour-draw counts out. An
      // item never drawn is never a column; log_share's floor only keeps the table finite.
      t->log_q_neighbors_ = log_share(t->item_neighbors_.DrawShare(
          std::vector<double>(popularity.begin(), popularity.end())));
    }
  }
  // Member 0 draws exactly what a single model with this seed draws.
  const uint64_t draw_seed = c.seed() + 0x9e3779b97f4a7c15ULL * static_cast<uint64_t>(ensemble_member);
  torch::manual_seed(draw_seed);
  t->rng_.seed(draw_seed);
  t->towers_ = BuildTowers(e, c.tower(), static_cast<float>(c.temperature()));
  if (c.queue_size() > 0) {
    t->key_tower_ = t->towers_.item.deepcopy();
    t->queue_ = KeyQueue(c.queue_size(), OutputDim(c.tower()));
  }
  t->optimizer_ = std::make_unique<torch::optim::Adam>(
      t->towers_.parameters(),
      torch::optim::AdamOptions(c.learning_rate()).weight_decay(c.weight_decay()));
  t->learning_rate_ = c.learning_rate();
  if (c.weight_average_decay() > 0) t->average_params_ = t->SnapshotParameters();
  return t;
}

UserBatch Trainer::UserBatchWith(
    const std::vector<int64_t>& users,
    const std::function<void(int64_t, int64_t, std::vector<int64_t>*)>& pick_history) const {
  const int64_t b = static_cast<int64_t>(users.size()), len = config_.history_length();
  const int64_t nc = dataset_.user_cat_names.size(), nn = dataset_.user_num_names.size();
  UserBatch out = UserBatch::Allocate(b, len, nc, nn);
  auto uid = out.user_id.accessor<int64_t, 1>();
  auto hist = out.history.accessor<int64_t, 2>();
  auto mask = out.history_mask.accessor<float, 2>();
  auto cat = out.categorical.accessor<int64_t, 2>();
  auto num = out.numeric.accessor<float, 2>();
  std::vector<int64_t> picked;
  for (int64_t r = 0; r < b; ++r) {
    const int64_t u = users[r];
    uid[r] = user_row_[u];
    for (int64_t f = 0; f < nc; ++f) cat[r][f] = user_cat_rows_[u][f];
    for (int64_t f = 0; f < nn; ++f) num[r][f] = user_num_rows_[u][f];
    picked.clear();
    pick_history(r, u, &picked);
    for (int64_t j = 0; j < static_cast<int64_t>(picked.size()) && j < len; ++j) {
      hist[r][j] = item_row_[picked[j]];
      mask[r][j] = 1.0f;
    }
  }
  return out;
}

UserBatch Trainer::TrainUserBatch(const std::vector<int64_t>& users,
                                  const std::vector<int64_t>& items,
                                  std::mt19937_64& rng) const {
  const int64_t len = config_.history_length();
  UserBatch batch = UserBatchWith(users, [&](int64_t r, int64_t u, std::vector<int64_t>* out) {
    // History = the user's other train items: the target is never in its own history.
    for (int64_t i : fit_->train[u]) {
      if (i != items[r]) out->push_back(i);
    }
    const int64_t take = std::min<int64_t>(len, out->size());
    for (int64_t j = 0; j < take; ++j) {  // partial Fisher-Yates: a uniform subset
      std::swap((*out)[j], (*out)[j + UniformBelow(rng, out->size() - j)]);
    }
    out->resize(take);
    if (config_.history_dropout() > 0 && take > 1) {
      // Keep each item with probability 1 - p, at least one: a different random part of the
      // history predicts the target each time the example is seen.
      int64_t kept = 0;
      for (int64_t j = 0; j < take; ++j) {
        if (!Draw(rng, config_.history_dropout())) (*out)[kept++] = (*out)[j];
      }
      out->resize(std::max<int64_t>(kept, 1));
    }
  });
  if (config_.user_id_dropout() > 0) {
    // The OOV row stands in for the id: the tower learns to serve from history alone, and the
    // id table cannot memorize every user.
    auto uid = batch.user_id.accessor<int64_t, 1>();
    for (int64_t r = 0; r < batch.size(); ++r) {
      if (Draw(rng, config_.user_id_dropout())) uid[r] = 0;
    }
  }
  return batch;
}

UserBatch Trainer::EvalUserBatch(const std::vector<int64_t>& users) const {
  return HistoryUserBatch(dataset_, users);
}

UserBatch Trainer::HistoryUserBatch(const Dataset& source,
                                    const std::vector<int64_t>& users) const {
  const int64_t len = config_.history_length();
  return UserBatchWith(users, [&](int64_t, int64_t u, std::vector<int64_t>* out) {
    const auto& tr = source.train[u];  // the last L, in order (what a server request sends)
    const int64_t start = std::max<int64_t>(0, static_cast<int64_t>(tr.size()) - len);
    out->assign(tr.begin() + start, tr.end());
  });
}

const ItemBatch& Trainer::AllItemsBatch() {
  if (!all_items_batch_) {
    std::vector<int64_t> all(dataset_.num_items);
    for (int64_t i = 0; i < dataset_.num_items; ++i) all[i] = i;
    all_items_batch_ = std::make_unique<ItemBatch>(
        ItemBatchWith(all, fit_graph_.audience, fit_graph_.neighbors,
                      config_.item_audience_length()));
  }
  return *all_items_batch_;
}

int64_t Trainer::eval_audience_length() const { return spec().item_audience_length(); }

ItemBatch Trainer::ItemBatchFor(const std::vector<int64_t>& items) const {
  return ItemBatchWith(items, full_graph_.audience, full_graph_.neighbors, eval_audience_length());
}

ItemBatch Trainer::ItemBatchWith(const std::vector<int64_t>& items,
                                 const std::vector<std::vector<int64_t>>& audience,
                                 const std::vector<std::vector<int64_t>>& neighbors,
                                 int64_t len) const {
  const int64_t b = static_cast<int64_t>(items.size());
  const int64_t nc = dataset_.item_cat_names.size(), nn = dataset_.item_num_names.size();
  const int64_t nb = config_.item_neighbor_length();
  ItemBatch out = ItemBatch::Allocate(b, nc, nn, len, nb);
  if (len > 0 && !audience.empty()) {
    auto aud = out.audience.accessor<int64_t, 2>();
    auto mask = out.audience_mask.accessor<float, 2>();
    for (int64_t r = 0; r < b; ++r) {
      const auto& users = audience[items[r]];
      const int64_t take = std::min<int64_t>(len, users.size());
      for (int64_t j = 0; j < take; ++j) {
        aud[r][j] = user_row_[users[j]];
        mask[r][j] = 1.0f;
      }
    }
  }
  if (nb > 0 && !neighbors.empty()) {
    auto nbr = out.neighbors.accessor<int64_t, 2>();
    auto mask = out.neighbors_mask.accessor<float, 2>();
    for (int64_t r = 0; r < b; ++r) {
      const auto& near = neighbors[items[r]];
      const int64_t take = std::min<int64_t>(nb, near.size());
      for (int64_t j = 0; j < take; ++j) {
        nbr[r][j] = item_row_[near[j]];
        mask[r][j] = 1.0f;
      }
    }
  }
  auto iid = out.item_id.accessor<int64_t, 1>();
  auto cat = out.categorical.accessor<int64_t, 2>();
  auto num = out.numeric.accessor<float, 2>();
  for (int64_t r = 0; r < b; ++r) {
    iid[r] = item_row_[items[r]];
    for (int64_t f = 0; f < nc; ++f) cat[r][f] = item_cat_rows_[items[r]][f];
    for (int64_t f = 0; f < nn; ++f) num[r][f] = item_num_rows_[items[r]][f];
  }
  return out;
}

torch::Tensor Trainer::BatchLoss(const std::vector<int64_t>& users,
                                 const std::vector<int64_t>& items, std::mt19937_64& rng) {
  UserBatch ub = TrainUserBatch(users, items, rng);
  torch::Tensor ids = torch::from_blob(const_cast<int64_t*>(items.data()),
                                       {static_cast<int64_t>(items.size())}, torch::kInt64)
                          .clone();
  // One item-tower forward for positives, re-encoded queue ids and global negatives.
  std::vector<int64_t> all(items);
  const bool reencode = config_.queue_size() > 0 && config_.queue_reencode() && queue_.size() > 0;
  std::vector<int64_t> queued_ids;
  if (reencode) {
    torch::Tensor qi = queue_.ids().contiguous();
    queued_ids.assign(qi.data_ptr<int64_t>(), qi.data_ptr<int64_t>() + qi.numel());
    all.insert(all.end(), queued_ids.begin(), queued_ids.end());
  }
  NegativeSet global;
  if (config_.global_negatives() > 0) {
    std::vector<int64_t> drawn(config_.global_negatives());
    for (auto& i : drawn) i = static_cast<int64_t>(UniformBelow(rng, dataset_.num_items));
    all.insert(all.end(), drawn.begin(), drawn.end());
    global.ids = torch::tensor(drawn, torch::kInt64);
  }
  // Item-item neighbours (UltraGCN): one per row, encoded in the same forward; the row's own
  // user is kept out of their audiences as out of the positives'.
  std::vector<int64_t> owners(users);
  std::vector<int64_t> neighbors;
  if (config_.item_neighbor_weight() > 0) {
    neighbors.resize(items.size());
    for (size_t r = 0; r < items.size(); ++r) neighbors[r] = item_neighbors_.Sample(items[r], rng);
    owners.resize(all.size(), -1);
    owners.insert(owners.end(), users.begin(), users.end());
    all.insert(all.end(), neighbors.begin(), neighbors.end());
  }
  ItemBatch ib = TrainItemBatch(all, owners, rng);
  torch::Tensor u = towers_.user.forward(ub.Inputs()).toTensor();
  torch::Tensor v = towers_.item.forward(ib.Inputs()).toTensor();
  const int64_t b = static_cast<int64_t>(items.size());
  const int64_t nq = static_cast<int64_t>(queued_ids.size());
  NegativeSet queued;
  if (reencode) {
    queued.embeddings = v.narrow(0, b, nq);
    queued.ids = queue_.ids();
  } else if (config_.queue_size() > 0 && queue_.size() > 0) {
    queued.embeddings = queue_.keys();
    queued.ids = queue_.ids();
  }
  const int64_t ng = config_.global_negatives();
  if (global.ids.defined()) global.embeddings = v.narrow(0, b + nq, ng);
  torch::Tensor v_neighbors;
  if (!neighbors.empty()) v_neighbors = v.narrow(0, b + nq + ng, b);
  v = v.narrow(0, 0, b);

  torch::Tensor loss;
  if (config_.loss() == TrainConfig::FULL_SOFTMAX) {
    loss = FullSoftmaxLoss(u, towers_.item.forward(AllItemsBatch().Inputs()).toTensor(), ids,
                           config_.temperature());
  } else if (config_.loss() == TrainConfig::CCL) {
    loss = CosineContrastiveLoss(u, v, ids, queued, global, config_.ccl_margin(),
                                 config_.ccl_negative_weight());
  } else {
    ContrastiveOptions opt;
    opt.temperature = config_.temperature();
    if (config_.logq_correction()) {
      opt.log_q = log_q_;
      opt.log_q_weight = config_.logq_weight();
    }
    if (config_.mask_user_positives()) {
      opt.row_positives.reserve(users.size());
      for (int64_t user : users) opt.row_positives.push_back(&fit_->train[user]);
    }
    loss = InfoNceLoss(ContrastiveLogits(u, v, ids, queued, global, opt));
    if (config_.item_to_user_weight() > 0) {
      ContrastiveOptions reverse;
      reverse.temperature = config_.temperature();
      if (config_.logq_correction()) reverse.log_q = log_q_users_;
      torch::Tensor uids = torch::tensor(users, torch::kInt64);
      loss = loss + config_.item_to_user_weight() *
                        InfoNceLoss(ContrastiveLogits(v, u, uids, {}, {}, reverse));
    }
    if (!neighbors.empty()) {
      ContrastiveOptions nb = opt;
      if (config_.logq_correction()) nb.log_q = log_q_neighbors_;
      loss = loss + config_.item_neighbor_weight() *
                        InfoNceLoss(ContrastiveLogits(u, v_neighbors,
                                                      torch::tensor(neighbors, torch::kInt64), {},
                                                      {}, nb));
    }
  }
  ContrastiveOptions ssl;
  ssl.temperature = config_.temperature();
  if (config_.item_ssl_weight() > 0) {
    ItemBatch pos = TrainItemBatch(items, users, rng);
    // Views are compared by their unit vectors only: the bias coordinate would add
    // tau * b_i * b_j to each pair.
    auto view = [&] {
      return towers_.item.forward(MaskedView(pos, rng).Inputs())
          .toTensor()
          .narrow(1, 0, config_.tower().dim());
    };
    torch::Tensor a = view();
    torch::Tensor c = view();
    loss = loss + config_.item_ssl_weight() * InfoNceLoss(ContrastiveLogits(a, c, ids, {}, {}, ssl));
  }
  if (config_.user_ssl_weight() > 0) {
    torch::Tensor a = towers_.user.forward(MaskedView(ub, rng).Inputs()).toTensor();
    torch::Tensor c = towers_.user.forward(MaskedView(ub, rng).Inputs()).toTensor();
    torch::Tensor uids = torch::tensor(users, torch::kInt64);
    loss = loss + config_.user_ssl_weight() * InfoNceLoss(ContrastiveLogits(a, c, uids, {}, {}, ssl));
  }
  if (config_.queue_size() > 0) {
    // Keys of this batch join the queue after it was used (MoCo): a row never meets its own
    // key, and the queue's contents lag the online tower by design. The re-encoding variant
    // only needs the ids: it stores the online embeddings, which it never reads.
    torch::NoGradGuard no_grad;
    torch::Tensor keys = config_.queue_reencode()
                             ? v.detach()
                             : key_tower_.forward(
                                   ItemBatchWith(items, fit_graph_.audience, fit_graph_.neighbors,
                                                 config_.item_audience_length())
                                       .Inputs())
                                   .toTensor();
    queue_.Enqueue(keys, ids);
  }
  return loss;
}

ItemBatch Trainer::TrainItemBatch(const std::vector<int64_t>& items,
                                  const std::vector<int64_t>& users,
                                  std::mt19937_64& rng) const {
  const int64_t len = config_.item_audience_length();
  // Neighbours are fixed (fit split); the audience is drawn afresh below.
  ItemBatch out = ItemBatchWith(items, {}, fit_graph_.neighbors, len);
  if (len <= 0) return out;
  auto aud = out.audience.accessor<int64_t, 2>();
  auto mask = out.audience_mask.accessor<float, 2>();
  std::vector<int64_t> picked;
  for (int64_t r = 0; r < out.size(); ++r) {
    picked.clear();
    const int64_t own = r < static_cast<int64_t>(users.size()) ? users[r] : -1;
    for (int64_t u : fit_graph_.audience[items[r]]) {
      if (u != own) picked.push_back(u);
    }
    const int64_t take = std::min<int64_t>(len, picked.size());
    int64_t kept = 0;
    for (int64_t j = 0; j < take; ++j) {  // partial Fisher-Yates: a uniform subset
      std::swap(picked[j], picked[j + UniformBelow(rng, picked.size() - j)]);
      if (config_.audience_dropout() > 0 && Draw(rng, config_.audience_dropout())) continue;
      aud[r][kept] = user_row_[picked[j]];
      mask[r][kept] = 1.0f;
      ++kept;
    }
  }
  return out;
}

UserBatch Trainer::MaskedView(const UserBatch& b, std::mt19937_64& rng) const {
  UserBatch v{b.user_id.clone(), b.history.clone(), b.history_mask.clone(), b.categorical.clone(),
              b.numeric.clone()};
  const double p = config_.ssl_mask_prob();
  auto uid = v.user_id.accessor<int64_t, 1>();
  auto mask = v.history_mask.accessor<float, 2>();
  auto hist = v.history.accessor<int64_t, 2>();
  auto cat = v.categorical.accessor<int64_t, 2>();
  auto num = v.numeric.accessor<float, 2>();
  for (int64_t r = 0; r < v.size(); ++r) {
    if (Draw(rng, p)) uid[r] = 0;
    for (int64_t j = 0; j < mask.size(1); ++j) {
      if (mask[r][j] > 0 && Draw(rng, p)) {
        mask[r][j] = 0;
        hist[r][j] = 0;
      }
    }
    for (int64_t f = 0; f < cat.size(1); ++f) {
      if (Draw(rng, p)) cat[r][f] = encoder_->UserCategoricalRow(static_cast<int>(f), "");
    }
    for (int64_t f = 0; f < num.size(1); ++f) {
      if (Draw(rng, p)) num[r][f] = 0.0f;  // missing = the mean
    }
  }
  return v;
}

ItemBatch Trainer::MaskedView(const ItemBatch& b, std::mt19937_64& rng) const {
  ItemBatch v;
  v.item_id = b.item_id.clone();
  v.categorical = b.categorical.clone();
  v.numeric = b.numeric.clone();
  // The audience and the neighbours are masked like a user's history.
  auto mask_list = [&](const torch::Tensor& ids, const torch::Tensor& mask, torch::Tensor* v_ids,
                       torch::Tensor* v_mask) {
    if (!ids.defined()) return;
    *v_ids = ids.clone();
    *v_mask = mask.clone();
    auto id = v_ids->accessor<int64_t, 2>();
    auto m = v_mask->accessor<float, 2>();
    for (int64_t r = 0; r < v.size(); ++r) {
      for (int64_t j = 0; j < m.size(1); ++j) {
        if (m[r][j] > 0 && Draw(rng, config_.ssl_mask_prob())) {
          m[r][j] = 0;
          id[r][j] = 0;
        }
      }
    }
  };
  mask_list(b.audience, b.audience_mask, &v.audience, &v.audience_mask);
  mask_list(b.neighbors, b.neighbors_mask, &v.neighbors, &v.neighbors_mask);
  const double p = config_.ssl_mask_prob();
  auto iid = v.item_id.accessor<int64_t, 1>();
  auto cat = v.categorical.accessor<int64_t, 2>();
  auto num = v.numeric.accessor<float, 2>();
  for (int64_t r = 0; r < v.size(); ++r) {
    if (Draw(rng, p)) iid[r] = 0;
    for (int64_t f = 0; f < cat.size(1); ++f) {
      if (Draw(rng, p)) cat[r][f] = encoder_->ItemCategoricalRow(static_cast<int>(f), "");
    }
    for (int64_t f = 0; f < num.size(1); ++f) {
      if (Draw(rng, p)) num[r][f] = 0.0f;
    }
  }
  return v;
}

void Trainer::AfterStep() {
  if (config_.queue_size() > 0 && !config_.queue_reencode()) {
    MomentumUpdate(towers_.item, key_tower_, config_.momentum());
  }
  if (!average_params_.empty()) {
    torch::NoGradGuard no_grad;
    ++average_updates_;
    const double t = static_cast<double>(average_updates_);
    const double d = std::min(config_.weight_average_decay(), (1 + t) / (10 + t));
    const std::vector<torch::Tensor> params = towers_.parameters();
    for (size_t i = 0; i < params.size(); ++i) average_params_[i].lerp_(params[i], 1.0 - d);
  }
}

double Trainer::TrainEpoch(int epoch, const ProgressFn& progress) {
  const int64_t n = static_cast<int64_t>(examples_.size());
  const int64_t bs = config_.batch_size();
  const int64_t steps = n / bs;  // drop the ragged last batch: it would be a weaker softmax
  const int64_t first_step = std::exchange(resume_step_, 0);
  if (first_step == 0) {
    // Shuffle with the trainer's own engine: identical order for a seed on every platform.
    // (A resumed epoch keeps the order its checkpoint saved.)
    for (int64_t i = n - 1; i > 0; --i) std::swap(examples_[i], examples_[UniformBelow(rng_, i + 1)]);
  }
  towers_.user.train();
  towers_.item.train();
  const auto start = std::chrono::steady_clock::now();
  double sum = 0, window = 0;
  int64_t window_steps = 0, done = 0;
  std::vector<int64_t> users(bs), items(bs);
  for (int64_t s = first_step; s < steps; ++s) {
    if (config_.max_steps() > 0 && steps_done_ >= config_.max_steps()) break;
    ++steps_done_;
    ++done;
    for (int64_t j = 0; j < bs; ++j) {
      users[j] = examples_[s * bs + j].first;
      items[j] = examples_[s * bs + j].second;
    }
    optimizer_->zero_grad();
    torch::Tensor loss = BatchLoss(users, items, rng_);
    loss.backward();
    optimizer_->step();
    AfterStep();
    const double l = loss.item<double>();
    sum += l;
    window += l;
    ++window_steps;
    if (progress && (window_steps == run_options_.log_every_steps || s + 1 == steps)) {
      const double el =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      TrainingEvent ev;
      ev.set_event(TrainingEvent::STEP);
      ev.set_epoch(epoch);
      ev.set_epochs(config_.epochs());
      ev.set_step(static_cast<int32_t>(s + 1));
      ev.set_steps(static_cast<int32_t>(steps));
      ev.set_loss(window / window_steps);
      ev.set_elapsed_sec(el);
      ev.set_examples_per_sec((s + 1 - first_step) * bs / std::max(el, 1e-9));
      const double remaining_steps =
          static_cast<double>(steps - s - 1) + static_cast<double>(config_.epochs() - epoch) * steps;
      ev.set_eta_sec(remaining_steps * bs / std::max(ev.examples_per_sec(), 1e-9));
      progress(ev);
      window = 0;
      window_steps = 0;
    }
    if (!checkpoint_path_.empty() && checkpoint_every_steps_ > 0 &&
        (s + 1) % checkpoint_every_steps_ == 0 && s + 1 < steps) {
      next_epoch_ = epoch;
      resume_step_ = s + 1;
      absl::Status st = SaveCheckpoint(checkpoint_path_);
      resume_step_ = 0;
      if (!st.ok()) LOG(WARNING) << "checkpoint: " << st;
    }
  }
  return done > 0 ? sum / done : 0.0;
}

void Trainer::SetLearningRate(double lr) {
  learning_rate_ = lr;
  for (auto& group : optimizer_->param_groups()) {
    static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr);
  }
}

absl::Status Trainer::Train(const ProgressFn& progress) {
  for (int epoch = next_epoch_; epoch <= config_.epochs(); ++epoch) {
    if (config_.max_steps() > 0 && steps_done_ >= config_.max_steps()) break;
    const auto start = std::chrono::steady_clock::now();
    const double loss = TrainEpoch(epoch, progress);
    if (!std::isfinite(loss)) {
      return absl::InternalError(absl::StrCat("loss diverged at epoch ", epoch));
    }
    TrainingEvent ev;
    ev.set_event(TrainingEvent::EPOCH);
    ev.set_epoch(epoch);
    ev.set_epochs(config_.epochs());
    ev.set_loss(loss);
    ev.set_elapsed_sec(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    ev.set_examples_per_sec((examples_.size() / config_.batch_size()) * config_.batch_size() /
                            std::max(ev.elapsed_sec(), 1e-9));
    bool stop = false, restart_from_best = false;
    // Validation and evaluation see the averaged weights; training resumes from the live ones.
    std::vector<torch::Tensor> live;
    if (!average_params_.empty()) {
      live = SnapshotParameters();
      RestoreParameters(average_params_);
    }
    if (fit_split_) {
      const RankingMetrics val = EvaluateValidation();
      for (const auto& [k, v] : val.values) (*ev.mutable_metrics())["val_" + k] = v;
      const double r = val.Get("recall@20");
      if (r > best_val_recall_) {
        best_val_recall_ = r;
        best_epoch_ = epoch;
        best_params_ = SnapshotParameters();
        stale_epochs_ = 0;
      } else if (config_.patience() > 0 && ++stale_epochs_ >= config_.patience()) {
        if (config_.lr_decay() > 0 && lr_decays_done_ < config_.max_lr_decays()) {
          // Anneal from the best point rather than from where the plateau drifted to.
          if (average_params_.empty()) {
            RestoreParameters(best_params_);
          } else {
            restart_from_best = true;  // after the live weights are back (below)
          }
          SetLearningRate(learning_rate_ * config_.lr_decay());
          ++lr_decays_done_;
          stale_epochs_ = 0;
        } else {
          stop = true;
        }
      }
      (*ev.mutable_metrics())["best_epoch"] = best_epoch_;
      (*ev.mutable_metrics())["lr"] = learning_rate_;
    }
    if (run_options_.eval_every_epochs > 0 && epoch % run_options_.eval_every_epochs == 0 &&
        epoch != config_.epochs()) {
      for (const auto& [k, v] : Evaluate().values) (*ev.mutable_metrics())[k] = v;
    }
    if (!live.empty()) RestoreParameters(live);
    if (restart_from_best) {
      // The best weights are averaged ones: training and the average restart there.
      RestoreParameters(best_params_);
      average_params_ = SnapshotParameters();
    }
    next_epoch_ = epoch + 1;
    if (!checkpoint_path_.empty()) {
      if (absl::Status st = SaveCheckpoint(checkpoint_path_); !st.ok()) {
        LOG(WARNING) << "checkpoint: " << st;
      }
    }
    if (progress) progress(ev);
    if (stop) break;
  }
  if (!best_params_.empty()) {
    RestoreParameters(best_params_);
  } else if (!average_params_.empty()) {
    RestoreParameters(average_params_);
  }
  return absl::OkStatus();
}

RankingMetrics Trainer::EvaluateValidation() {
  if (!fit_split_) return {};
  torch::Tensor u = EmbedAllUsersFrom(*fit_), v = EmbedAllItemsWith(fit_graph_);
  return EvaluateEmbeddings(*fit_, u.data_ptr<float>(), v.data_ptr<float>(),
                            static_cast<int>(u.size(1)));
}

std::vector<torch::Tensor> Trainer::SnapshotParameters() const {
  std::vector<torch::Tensor> out;
  torch::NoGradGuard no_grad;
  for (const auto& p : towers_.parameters()) out.push_back(p.detach().clone());
  return out;
}

void Trainer::RestoreParameters(const std::vector<torch::Tensor>& snapshot) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> params = towers_.parameters();
  for (size_t i = 0; i < params.size() && i < snapshot.size(); ++i) params[i].copy_(snapshot[i]);
}

torch::Tensor Trainer::EmbedUsers(const std::vector<int64_t>& users) {
  return EmbedUsersFrom(dataset_, users);
}

torch::Tensor Trainer::EmbedUsersFrom(const Dataset& source, const std::vector<int64_t>& users) {
  // NoGradGuard, not InferenceMode: the parameters require grad, and TorchScript's executor
  // would try to save inference tensors for a backward pass.
  torch::NoGradGuard guard;
  towers_.user.eval();
  return towers_.user.forward(HistoryUserBatch(source, users).Inputs()).toTensor().contiguous();
}

torch::Tensor Trainer::EmbedItems(const std::vector<int64_t>& items) {
  torch::NoGradGuard guard;
  towers_.item.eval();
  return towers_.item.forward(ItemBatchFor(items).Inputs()).toTensor().contiguous();
}

namespace {
// Rows of f per call: 4,096 while each holds up to 100 pooled entries; fewer for wider ones,
// so the gathered [chunk, width, id_dim] block stays ~100 MB at id_dim 64.
int64_t ChunkRows(int64_t width) { return std::max<int64_t>(64, 4096 * 100 / std::max<int64_t>(width, 100)); }

torch::Tensor EmbedAll(int64_t n, int64_t chunk,
                       const std::function<torch::Tensor(const std::vector<int64_t>&)>& f) {
  std::vector<torch::Tensor> parts;
  for (int64_t begin = 0; begin < n; begin += chunk) {
    std::vector<int64_t> ids(std::min(chunk, n - begin));
    std::iota(ids.begin(), ids.end(), begin);
    parts.push_back(f(ids));
  }
  return torch::cat(parts, 0).contiguous();
}
}  // namespace

torch::Tensor Trainer::EmbedAllUsers() { return EmbedAllUsersFrom(dataset_); }

torch::Tensor Trainer::EmbedAllUsersFrom(const Dataset& source) {
  return EmbedAll(dataset_.num_users, ChunkRows(config_.history_length()),
                  [&](const std::vector<int64_t>& ids) { return EmbedUsersFrom(source, ids); });
}
torch::Tensor Trainer::EmbedAllItems() { return EmbedAllItemsWith(full_graph_); }

torch::Tensor Trainer::EmbedAllItemsWith(const ItemGraph& graph) {
  torch::NoGradGuard guard;
  towers_.item.eval();
  const int64_t width = eval_audience_length();
  return EmbedAll(dataset_.num_items, ChunkRows(width), [&](const std::vector<int64_t>& ids) {
    return towers_.item.forward(ItemBatchWith(ids, graph.audience, graph.neighbors, width).Inputs())
        .toTensor()
        .contiguous();
  });
}

RankingMetrics Trainer::Evaluate(const EvalOptions& options) {
  torch::Tensor u = EmbedAllUsers(), v = EmbedAllItems();
  return EvaluateEmbeddings(dataset_, u.data_ptr<float>(), v.data_ptr<float>(),
                            static_cast<int>(u.size(1)), options);
}

namespace {
torch::Tensor StringTensor(const std::string& s) {
  return torch::from_blob(const_cast<char*>(s.data()), {static_cast<int64_t>(s.size())},
                          torch::kUInt8)
      .clone();
}
std::string TensorString(const torch::Tensor& t) {
  torch::Tensor c = t.contiguous();
  return std::string(reinterpret_cast<const char*>(c.data_ptr<uint8_t>()), c.numel());
}
void WriteModule(torch::serialize::OutputArchive& ar, const std::string& prefix,
                 const torch::jit::Module& m) {
  for (const auto& p : m.named_parameters()) ar.write(prefix + p.name, p.value.detach());
}
void ReadModule(torch::serialize::InputArchive& ar, const std::string& prefix,
                torch::jit::Module& m) {
  torch::NoGradGuard no_grad;
  for (const auto& p : m.named_parameters()) {
    torch::Tensor t;
    ar.read(prefix + p.name, t);
    p.value.copy_(t);
  }
}
}  // namespace

absl::Status Trainer::SaveCheckpoint(const std::string& path) const {
  try {
    torch::serialize::OutputArchive ar;
    WriteModule(ar, "user.", towers_.user);
    WriteModule(ar, "item.", towers_.item);
    if (config_.queue_size() > 0) {
      WriteModule(ar, "key.", key_tower_);
      ar.write("queue.keys", queue_.state_keys());
      ar.write("queue.ids", queue_.state_ids());
      ar.write("queue.cursor", queue_.state_cursor());
    }
    // Adam's moments per parameter, in parameter order. (Optimizer::save/load did not give a
    // bit-identical continuation here; the explicit form is also independent of pointer keys.)
    const auto params = towers_.parameters();
    for (size_t j = 0; j < params.size(); ++j) {
      auto it = optimizer_->state().find(c10::guts::to_string(params[j].unsafeGetTensorImpl()));
      if (it == optimizer_->state().end()) continue;
      const auto& st = static_cast<const torch::optim::AdamParamState&>(*it->second);
      ar.write(absl::StrCat("adam.", j, ".step"), torch::tensor({st.step()}, torch::kInt64));
      ar.write(absl::StrCat("adam.", j, ".exp_avg"), st.exp_avg());
      ar.write(absl::StrCat("adam.", j, ".exp_avg_sq"), st.exp_avg_sq());
    }
    torch::Tensor ex = torch::empty({static_cast<int64_t>(examples_.size()), 2}, torch::kInt64);
    auto e = ex.accessor<int64_t, 2>();
    for (size_t i = 0; i < examples_.size(); ++i) {
      e[i][0] = examples_[i].first;
      e[i][1] = examples_[i].second;
    }
    ar.write("examples", ex);
    std::ostringstream rng;
    rng << rng_;
    ar.write("rng", StringTensor(rng.str()));
    ar.write("cursor", torch::tensor({static_cast<int64_t>(next_epoch_), resume_step_,
                                      static_cast<int64_t>(best_epoch_)}, torch::kInt64));
    ar.write("best_val_recall", torch::tensor({best_val_recall_}, torch::kFloat64));
    ar.write("plateau", torch::tensor({static_cast<int64_t>(stale_epochs_),
                                       static_cast<int64_t>(lr_decays_done_)}, torch::kInt64));
    ar.write("learning_rate", torch::tensor({learning_rate_}, torch::kFloat64));
    for (size_t i = 0; i < best_params_.size(); ++i) {
      ar.write(absl::StrCat("best.", i), best_params_[i]);
    }
    for (size_t i = 0; i < average_params_.size(); ++i) {
      ar.write(absl::StrCat("average.", i), average_params_[i]);
    }
    if (!average_params_.empty()) {
      ar.write("average_updates", torch::tensor({average_updates_}, torch::kInt64));
    }
    const std::string tmp = path + ".tmp";
    ar.save_to(tmp);
    fs::rename(tmp, path);
  } catch (const std::exception& ex) {
    return absl::InternalError(absl::StrCat("writing checkpoint ", path, ": ", ex.what()));
  }
  return absl::OkStatus();
}

absl::Status Trainer::LoadCheckpoint(const std::string& path) {
  try {
    torch::serialize::InputArchive ar;
    ar.load_from(path);
    torch::Tensor ex;
    ar.read("examples", ex);
    if (ex.size(0) != static_cast<int64_t>(examples_.size())) {
      return absl::FailedPreconditionError(absl::StrCat(
          "checkpoint ", path, " has ", ex.size(0), " train examples, this dataset ",
          examples_.size(), ": it belongs to another dataset or validation split"));
    }
    ReadModule(ar, "user.", towers_.user);
    ReadModule(ar, "item.", towers_.item);
    if (config_.queue_size() > 0) {
      ReadModule(ar, "key.", key_tower_);
      torch::Tensor k, i, c;
      ar.read("queue.keys", k);
      ar.read("queue.ids", i);
      ar.read("queue.cursor", c);
      if (k.size(0) != config_.queue_size()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "checkpoint ", path, " has a queue of ", k.size(0), " keys, --queue_size is ",
            config_.queue_size()));
      }
      queue_.Restore(k, i, c);
    }
    const auto params = towers_.parameters();
    optimizer_->state().clear();
    for (size_t j = 0; j < params.size(); ++j) {
      torch::Tensor step, m, v;
      if (!ar.try_read(absl::StrCat("adam.", j, ".step"), step)) continue;  // never stepped
      ar.read(absl::StrCat("adam.", j, ".exp_avg"), m);
      ar.read(absl::StrCat("adam.", j, ".exp_avg_sq"), v);
      auto st = std::make_unique<torch::optim::AdamParamState>();
      st->step(step.item<int64_t>());
      st->exp_avg(m.clone());
      st->exp_avg_sq(v.clone());
      optimizer_->state()[c10::guts::to_string(params[j].unsafeGetTensorImpl())] = std::move(st);
    }
    auto e = ex.accessor<int64_t, 2>();
    for (size_t j = 0; j < examples_.size(); ++j) examples_[j] = {e[j][0], e[j][1]};
    torch::Tensor rng, cursor, best;
    ar.read("rng", rng);
    std::istringstream in(TensorString(rng));
    in >> rng_;
    ar.read("cursor", cursor);
    next_epoch_ = static_cast<int>(cursor[0].item<int64_t>());
    resume_step_ = cursor[1].item<int64_t>();
    best_epoch_ = static_cast<int>(cursor[2].item<int64_t>());
    ar.read("best_val_recall", best);
    best_val_recall_ = best.item<double>();
    torch::Tensor plateau, lr;
    if (ar.try_read("plateau", plateau) && ar.try_read("learning_rate", lr)) {
      stale_epochs_ = static_cast<int>(plateau[0].item<int64_t>());
      lr_decays_done_ = static_cast<int>(plateau[1].item<int64_t>());
      SetLearningRate(lr.item<double>());
    }
    best_params_.clear();
    if (best_epoch_ > 0) {
      for (size_t j = 0; j < towers_.parameters().size(); ++j) {
        torch::Tensor t;
        ar.read(absl::StrCat("best.", j), t);
        best_params_.push_back(t);
      }
    }
    if (!average_params_.empty()) {
      torch::Tensor updates;
      if (!ar.try_read("average_updates", updates)) {
        return absl::FailedPreconditionError(absl::StrCat(
            "checkpoint ", path, " has no weight average: it was written without "
            "--weight_average_decay"));
      }
      average_updates_ = updates.item<int64_t>();
      for (size_t j = 0; j < average_params_.size(); ++j) {
        torch::Tensor t;
        ar.read(absl::StrCat("average.", j), t);
        average_params_[j].copy_(t);
      }
    }
  } catch (const std::exception& ex) {
    return absl::DataLossError(absl::StrCat("reading checkpoint ", path, ": ", ex.what()));
  }
  return absl::OkStatus();
}

RankingMetrics Trainer::EvaluateReport(const std::string& index_factory) {
  torch::Tensor u = EmbedAllUsers(), v = EmbedAllItems();
  const int dim = static_cast<int>(u.size(1));
  std::vector<std::vector<int64_t>> top;
  EvalOptions o;
  o.top_lists = &top;
  RankingMetrics m = EvaluateEmbeddings(dataset_, u.data_ptr<float>(), v.data_ptr<float>(), dim, o);
  for (const auto& [k, x] : SliceMetrics(dataset_, top).values) m.values[k] = x;
  {
    // Alignment and uniformity are properties of the unit vectors: drop the bias coordinate
    // that ends each member's dim + 1 block (an ensemble's blocks are scaled by 1/sqrt(N), so
    // the rest keeps unit norm).
    torch::Tensor uu = u, vu = v;
    if (config_.tower().item_bias()) {
      const int64_t block = OutputDim(config_.tower());
      torch::Tensor keep = torch::arange(u.size(1), torch::kInt64);
      keep = keep.masked_select(keep.remainder(block) != block - 1);
      uu = u.index_select(1, keep).contiguous();
      vu = v.index_select(1, keep).contiguous();
    }
    for (const auto& [k, x] : AlignmentUniformity(dataset_, uu.data_ptr<float>(),
                                                  vu.data_ptr<float>(),
                                                  static_cast<int>(uu.size(1)))
                                  .values) {
      m.values[k] = x;
    }
  }
  if (!index_factory.empty()) {
    auto ann = EvaluateThroughIndex(dataset_, u.data_ptr<float>(), v.data_ptr<float>(), dim,
                                    index_factory, m);
    if (ann.ok()) {
      for (const auto& [k, x] : ann->values) m.values[k] = x;
    } else {
      LOG(WARNING) << "evaluation through " << index_factory << ": " << ann.status();
    }
  }
  return m;
}

absl::StatusOr<std::string> Trainer::Export(const std::string& model_base,
                                            const std::string& index_factory,
                                            const RankingMetrics& metrics,
                                            const std::string& preset, int64_t version) {
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
  if (!spec().user_id().vocab_file().empty()) {
    auto s = Vocabulary(ExternalUserIds(dataset_)).Save((dir / kUserVocabFile).string());
    if (!s.ok()) return s;
  }
  if (!spec().item_id().vocab_file().empty()) {
    auto s = Vocabulary(ExternalItemIds(dataset_)).Save((dir / kItemVocabFile).string());
    if (!s.ok()) return s;
  }
  torch::Tensor items = EmbedAllItems();
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
  *m.mutable_feature_spec() = spec();
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
