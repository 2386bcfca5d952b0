#include "trainer/example_batches.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/container/flat_hash_set.h"
#include "model/version_dir.h"
#include "model/vocabulary.h"
#include "trainer/item_graph.h"

namespace recall::trainer {
namespace {

int64_t Buckets(const std::vector<std::string>& values) {
  absl::flat_hash_set<std::string> distinct(values.begin(), values.end());
  // Twice the distinct values keeps collisions rare for the known values; new values still hash.
  return std::max<int64_t>(16, 2 * static_cast<int64_t>(distinct.size()));
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

absl::StatusOr<std::unique_ptr<ExampleBatches>> ExampleBatches::Create(
    const Dataset& d, const recall::v1::TrainConfig& c) {
  if (d.num_users <= 0 || d.num_items <= 0) {
    return absl::InvalidArgumentError("dataset has no users or no items");
  }
  std::unique_ptr<ExampleBatches> t(new ExampleBatches(d, c));
  t->fit_ = &d;
  if (c.validation_users() > 0) {
    t->fit_split_ = std::make_unique<Dataset>(
        HoldOutValidation(d, c.validation_users(), c.seed(), c.validation_item_fraction()));
    t->fit_ = t->fit_split_.get();
  }
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
  t->PrecomputeRows();
  t->BuildGraphs();
  if (t->TrainExamples().size() < 2) {
    return absl::InvalidArgumentError("dataset has < 2 interactions");
  }
  return t;
}

namespace {

// One side's encoder rows (users or items): id rows, categorical rows, and numeric values
// standardized by the encoder's own function (what the server applies to a request; a
// missing value is the mean, i.e. 0).
template <typename IdRow, typename CatRow, typename Normalize>
void SideRows(int64_t n, const std::vector<std::vector<std::string>>& cat_values,
              const std::vector<std::vector<float>>& num_values, IdRow id_row, CatRow cat_row,
              Normalize normalize, std::vector<int64_t>* rows,
              std::vector<std::vector<int64_t>>* cat_rows,
              std::vector<std::vector<float>>* num_rows) {
  rows->resize(n);
  cat_rows->assign(n, std::vector<int64_t>(cat_values.size()));
  num_rows->assign(n, std::vector<float>(num_values.size(), 0.0f));
  for (int64_t e = 0; e < n; ++e) {
    (*rows)[e] = id_row(e);
    for (size_t f = 0; f < cat_values.size(); ++f) {
      (*cat_rows)[e][f] = cat_row(static_cast<int>(f), cat_values[f][e]);
    }
    for (size_t f = 0; f < num_values.size(); ++f) {
      const float x = num_values[f][e];
      if (!std::isnan(x)) (*num_rows)[e][f] = normalize(static_cast<int>(f), x);
    }
  }
}

}  // namespace

void ExampleBatches::PrecomputeRows() {
  const Dataset& d = dataset_;
  const FeatureEncoder& e = *encoder_;
  SideRows(
      d.num_users, d.user_cat_values, d.user_num_values,
      [&](int64_t u) { return e.UserRow(d.ExternalUserId(u)); },
      [&](int f, const std::string& v) { return e.UserCategoricalRow(f, v); },
      [&](int f, float x) { return e.NormalizeUserNumeric(f, x); }, &user_row_, &user_cat_rows_,
      &user_num_rows_);
  SideRows(
      d.num_items, d.item_cat_values, d.item_num_values,
      [&](int64_t i) { return e.ItemRow(d.ExternalItemId(i)); },
      [&](int f, const std::string& v) { return e.ItemCategoricalRow(f, v); },
      [&](int f, float x) { return e.NormalizeItemNumeric(f, x); }, &item_row_, &item_cat_rows_,
      &item_num_rows_);
}

std::vector<std::pair<int64_t, int64_t>> ExampleBatches::TrainExamples() const {
  std::vector<std::pair<int64_t, int64_t>> out;
  for (int64_t u = 0; u < fit_->num_users; ++u) {
    for (int64_t i : fit_->train[u]) out.emplace_back(u, i);
  }
  return out;
}

void ExampleBatches::BuildGraphs() {
  const Dataset& d = dataset_;
  const Dataset& fit = *fit_;
  if (config_.item_audience_length() > 0) {
    // Own engine: the training stream stays that of the same config without audiences.
    std::mt19937_64 order(config_.seed() ^ 0x61756469656e6365ULL);
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
    full_graph_.audience = audiences(d);
    fit_graph_.audience = fit_ == &dataset_ ? full_graph_.audience : audiences(fit);
  }
  if (config_.item_neighbor_length() > 0) {
    auto neighbors = [&](const Dataset& source) {
      const ItemNeighbors graph =
          ItemNeighbors::Build(source.train, d.num_items, config_.item_neighbor_length());
      std::vector<std::vector<int64_t>> out(d.num_items);
      for (int64_t i = 0; i < d.num_items; ++i) {
        for (const auto& n : graph.of(i)) out[i].push_back(n.item);
      }
      return out;
    };
    full_graph_.neighbors = neighbors(d);
    fit_graph_.neighbors = fit_ == &dataset_ ? full_graph_.neighbors : neighbors(fit);
  }
}

UserBatch ExampleBatches::UserBatchWith(
    const std::vector<int64_t>& users,
    const std::function<void(int64_t, int64_t, std::vector<int64_t>*)>& pick_history) const {
  const int64_t b = static_cast<int64_t>(users.size()), len = config_.history_length();
  std::vector<std::vector<int64_t>> history(b);
  std::vector<UserRows> rows(b);
  std::vector<int64_t> picked;
  for (int64_t r = 0; r < b; ++r) {
    const int64_t u = users[r];
    picked.clear();
    pick_history(r, u, &picked);
    const int64_t take = std::min<int64_t>(len, static_cast<int64_t>(picked.size()));
    history[r].reserve(take);
    for (int64_t j = 0; j < take; ++j) history[r].push_back(item_row_[picked[j]]);
    rows[r] = {user_row_[u], history[r], user_cat_rows_[u], user_num_rows_[u]};
  }
  return encoder_->EncodeUserRows(rows);
}

UserBatch ExampleBatches::TrainUserBatch(const std::vector<int64_t>& users,
                                  const std::vector<int64_t>& items,
                                  const std::vector<uint64_t>& row_keys) const {
  const int64_t len = config_.history_length();
  UserBatch batch = UserBatchWith(users, [&](int64_t r, int64_t u, std::vector<int64_t>* out) {
    RowRng rng(row_keys[r], DrawPurpose::kHistory);
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
      // The history's stream again, from its start (a later draw than the history's own
      // would depend on the history's length).
      RowRng rng(MixKey(row_keys[r], 1), DrawPurpose::kHistory);
      if (Draw(rng, config_.user_id_dropout())) uid[r] = 0;
    }
  }
  return batch;
}

UserBatch ExampleBatches::EvalUserBatch(const std::vector<int64_t>& users) const {
  return HistoryUserBatch(dataset_, users);
}

UserBatch ExampleBatches::HistoryUserBatch(const Dataset& source,
                                    const std::vector<int64_t>& users) const {
  const int64_t len = config_.history_length();
  return UserBatchWith(users, [&](int64_t, int64_t u, std::vector<int64_t>* out) {
    const auto& tr = source.train[u];  // the last L, in order (what a server request sends)
    const int64_t start = std::max<int64_t>(0, static_cast<int64_t>(tr.size()) - len);
    out->assign(tr.begin() + start, tr.end());
  });
}

ItemBatch ExampleBatches::ItemBatchFor(const std::vector<int64_t>& items) const {
  return ItemBatchWith(items, full_graph_.audience, full_graph_.neighbors, eval_audience_length());
}

ItemBatch ExampleBatches::FitItemBatch(const std::vector<int64_t>& items) const {
  return ItemBatchWith(items, fit_graph_.audience, fit_graph_.neighbors, eval_audience_length());
}

ItemBatch ExampleBatches::KeyItemBatch(const std::vector<int64_t>& items) const {
  return ItemBatchWith(items, fit_graph_.audience, fit_graph_.neighbors,
                       config_.item_audience_length());
}

ItemBatch ExampleBatches::ItemBatchWith(const std::vector<int64_t>& items,
                                        const std::vector<std::vector<int64_t>>& audience,
                                        const std::vector<std::vector<int64_t>>& neighbors,
                                        int64_t len) const {
  std::vector<std::vector<int64_t>> audience_rows;
  if (len > 0 && !audience.empty()) {
    audience_rows.resize(items.size());
    for (size_t r = 0; r < items.size(); ++r) {
      const auto& users = audience[items[r]];
      const int64_t take = std::min<int64_t>(len, static_cast<int64_t>(users.size()));
      for (int64_t j = 0; j < take; ++j) audience_rows[r].push_back(user_row_[users[j]]);
    }
  }
  return EncodeItems(items, audience_rows, neighbors, len);
}

ItemBatch ExampleBatches::EncodeItems(const std::vector<int64_t>& items,
                                      const std::vector<std::vector<int64_t>>& audience_rows,
                                      const std::vector<std::vector<int64_t>>& neighbors,
                                      int64_t audience_length) const {
  const int64_t nb = config_.item_neighbor_length();
  std::vector<std::vector<int64_t>> neighbor_rows(nb > 0 && !neighbors.empty() ? items.size() : 0);
  std::vector<ItemRows> rows(items.size());
  for (size_t r = 0; r < items.size(); ++r) {
    const int64_t i = items[r];
    if (!neighbor_rows.empty()) {
      const int64_t take = std::min<int64_t>(nb, static_cast<int64_t>(neighbors[i].size()));
      for (int64_t j = 0; j < take; ++j) neighbor_rows[r].push_back(item_row_[neighbors[i][j]]);
      rows[r].neighbors = neighbor_rows[r];
    }
    if (!audience_rows.empty()) rows[r].audience = audience_rows[r];
    rows[r].id = item_row_[i];
    rows[r].categorical = item_cat_rows_[i];
    rows[r].numeric = item_num_rows_[i];
  }
  return encoder_->EncodeItemRows(rows, audience_length, nb);
}

ItemBatch ExampleBatches::TrainItemBatch(const std::vector<int64_t>& items,
                                         const std::vector<int64_t>& users,
                                         const std::vector<uint64_t>& row_keys) const {
  const int64_t len = config_.item_audience_length();
  // Neighbours are fixed (fit split); the audience is drawn afresh.
  if (len <= 0) return EncodeItems(items, {}, fit_graph_.neighbors, len);
  std::vector<std::vector<int64_t>> audience_rows(items.size());
  std::vector<int64_t> picked;
  for (size_t r = 0; r < items.size(); ++r) {
    picked.clear();
    RowRng rng(row_keys[r], DrawPurpose::kAudience);
    const int64_t own = r < users.size() ? users[r] : -1;
    for (int64_t u : fit_graph_.audience[items[r]]) {
      if (u != own) picked.push_back(u);
    }
    const int64_t take = std::min<int64_t>(len, static_cast<int64_t>(picked.size()));
    for (int64_t j = 0; j < take; ++j) {  // partial Fisher-Yates: a uniform subset
      std::swap(picked[j], picked[j + UniformBelow(rng, picked.size() - j)]);
      if (config_.audience_dropout() > 0 && Draw(rng, config_.audience_dropout())) continue;
      audience_rows[r].push_back(user_row_[picked[j]]);
    }
  }
  return EncodeItems(items, audience_rows, fit_graph_.neighbors, len);
}

UserBatch ExampleBatches::MaskedView(const UserBatch& b, const std::vector<uint64_t>& row_keys,
                                     DrawPurpose view) const {
  UserBatch v{b.user_id.clone(), b.history.clone(), b.history_mask.clone(), b.categorical.clone(),
              b.numeric.clone()};
  const double p = config_.ssl_mask_prob();
  auto uid = v.user_id.accessor<int64_t, 1>();
  auto mask = v.history_mask.accessor<float, 2>();
  auto hist = v.history.accessor<int64_t, 2>();
  auto cat = v.categorical.accessor<int64_t, 2>();
  auto num = v.numeric.accessor<float, 2>();
  for (int64_t r = 0; r < v.size(); ++r) {
    RowRng rng(row_keys[r], view);
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

ItemBatch ExampleBatches::MaskedView(const ItemBatch& b, const std::vector<uint64_t>& row_keys,
                                     DrawPurpose view) const {
  ItemBatch v;
  v.item_id = b.item_id.clone();
  v.categorical = b.categorical.clone();
  v.numeric = b.numeric.clone();
  // The audience and the neighbours are masked like a user's history.
  auto mask_list = [&](const at::Tensor& ids, const at::Tensor& mask, at::Tensor* v_ids,
                       at::Tensor* v_mask, uint64_t salt) {
    if (!ids.defined()) return;
    *v_ids = ids.clone();
    *v_mask = mask.clone();
    auto id = v_ids->accessor<int64_t, 2>();
    auto m = v_mask->accessor<float, 2>();
    for (int64_t r = 0; r < v.size(); ++r) {
      RowRng rng(MixKey(row_keys[r], salt), view);
      for (int64_t j = 0; j < m.size(1); ++j) {
        if (m[r][j] > 0 && Draw(rng, config_.ssl_mask_prob())) {
          m[r][j] = 0;
          id[r][j] = 0;
        }
      }
    }
  };
  mask_list(b.audience, b.audience_mask, &v.audience, &v.audience_mask, 1);
  mask_list(b.neighbors, b.neighbors_mask, &v.neighbors, &v.neighbors_mask, 2);
  const double p = config_.ssl_mask_prob();
  auto iid = v.item_id.accessor<int64_t, 1>();
  auto cat = v.categorical.accessor<int64_t, 2>();
  auto num = v.numeric.accessor<float, 2>();
  for (int64_t r = 0; r < v.size(); ++r) {
    RowRng rng(row_keys[r], view);
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

}  // namespace recall::trainer
