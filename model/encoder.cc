#include "model/encoder.h"

#include <ATen/ops/zeros.h>

#include <algorithm>
#include <cmath>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "model/hashing.h"

namespace recall {

UserBatch UserBatch::Allocate(int64_t b, int64_t history_length, int64_t num_categorical,
                              int64_t num_numeric) {
  return {at::zeros({b}, at::kLong), at::zeros({b, history_length}, at::kLong),
          at::zeros({b, history_length}, at::kFloat), at::zeros({b, num_categorical}, at::kLong),
          at::zeros({b, num_numeric}, at::kFloat)};
}

ItemBatch ItemBatch::Allocate(int64_t b, int64_t num_categorical, int64_t num_numeric,
                              int64_t audience_length, int64_t neighbor_length) {
  ItemBatch out;
  out.item_id = at::zeros({b}, at::kLong);
  out.categorical = at::zeros({b, num_categorical}, at::kLong);
  out.numeric = at::zeros({b, num_numeric}, at::kFloat);
  if (audience_length > 0) {
    out.audience = at::zeros({b, audience_length}, at::kLong);
    out.audience_mask = at::zeros({b, audience_length}, at::kFloat);
  }
  if (neighbor_length > 0) {
    out.neighbors = at::zeros({b, neighbor_length}, at::kLong);
    out.neighbors_mask = at::zeros({b, neighbor_length}, at::kFloat);
  }
  return out;
}

namespace {

using recall::v1::CategoricalFeatureSpec;
using recall::v1::NumericFeatureSpec;

// Bound on the rows of one embedding table (ids) or of one side's shared categorical table,
// far beyond anything that fits in memory; it keeps the row arithmetic (num_buckets + 1, offsets
// summed over features) from overflowing on a corrupt or hostile feature spec.
constexpr int64_t kMaxRows = int64_t{1} << 40;

// Per-feature seed so that equal values of different features land in unrelated buckets.
uint64_t FeatureSeed(absl::string_view name) { return StableHash(name, 0x7265'6361'6c6cULL); }

absl::Status CheckNames(absl::flat_hash_set<std::string>& seen, const std::string& name,
                        absl::string_view where) {
  if (name.empty()) return absl::InvalidArgumentError(absl::StrCat(where, ": empty feature name"));
  if (!seen.insert(name).second) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": duplicate feature name \"", name, "\""));
  }
  return absl::OkStatus();
}

template <typename Cats, typename Nums>
absl::Status ValidateSide(const Cats& cats, const Nums& nums, absl::string_view side) {
  absl::flat_hash_set<std::string> seen;
  int64_t rows = 0;  // of the shared categorical table; <= kMaxRows before each addition
  for (const CategoricalFeatureSpec& c : cats) {
    if (auto s = CheckNames(seen, c.name(), side); !s.ok()) return s;
    if (c.num_buckets() < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(side, " categorical \"", c.name(), "\": num_buckets must be >= 1"));
    }
    if (c.num_buckets() > kMaxRows || (rows += c.num_buckets() + 1) > kMaxRows) {
      return absl::InvalidArgumentError(absl::StrCat(
          side, " categorical \"", c.name(), "\": num_buckets ", c.num_buckets(),
          " takes the ", side, " categorical rows past the limit of ", kMaxRows));
    }
  }
  for (const NumericFeatureSpec& n : nums) {
    if (auto s = CheckNames(seen, n.name(), side); !s.ok()) return s;
    if (!(n.std() > 0) || !std::isfinite(n.std()) || !std::isfinite(n.mean())) {
      return absl::InvalidArgumentError(
          absl::StrCat(side, " numeric \"", n.name(), "\": needs finite mean and std > 0"));
    }
  }
  return absl::OkStatus();
}

template <typename Cats>
void BuildOffsets(const Cats& cats, std::vector<int64_t>& offsets, int64_t& total,
                  absl::flat_hash_map<std::string, int>& index) {
  total = 0;
  for (int f = 0; f < cats.size(); ++f) {
    offsets.push_back(total);
    total += cats.Get(f).num_buckets() + 1;
    index[cats.Get(f).name()] = f;
  }
}

template <typename Nums>
void BuildIndex(const Nums& nums, absl::flat_hash_map<std::string, int>& index) {
  for (int f = 0; f < nums.size(); ++f) index[nums.Get(f).name()] = f;
}

int64_t CategoricalRow(const CategoricalFeatureSpec& spec, int64_t offset,
                       absl::string_view value) {
  if (value.empty()) return offset;
  return offset + HashBucket(StableHash(value, FeatureSeed(spec.name())), spec.num_buckets());
}

// A feature name as it appears in a message: quoted, cut to a readable length (the name comes
// from the caller and may be anything).
std::string QuoteName(absl::string_view name) {
  constexpr size_t kMax = 64;
  return name.size() <= kMax ? std::string(name)
                             : absl::StrCat(name.substr(0, kMax), "...(", name.size(), " bytes)");
}

// "a, b, c" (sorted) or "none": the names a caller may use instead of an unknown one.
std::string NameList(const absl::flat_hash_map<std::string, int>& index) {
  std::vector<absl::string_view> names;
  for (const auto& [name, f] : index) names.push_back(name);
  std::sort(names.begin(), names.end());
  return names.empty() ? "none" : absl::StrJoin(names, ", ");
}

// Why `name` is not a feature of the kind `kind` ("categorical" / "numeric"): a feature of the
// other kind sent in the wrong map gets told where it belongs, an unknown one the known names.
absl::Status UnknownFeature(absl::string_view prefix, absl::string_view kind,
                            const std::string& name,
                            const absl::flat_hash_map<std::string, int>& same_kind,
                            const absl::flat_hash_map<std::string, int>& other_kind,
                            absl::string_view other) {
  const std::string field = absl::StrCat(prefix, ".", kind, "[\"", QuoteName(name), "\"]");
  if (other_kind.contains(name)) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": \"", name, "\" is a ", other,
                                                   " feature of the model; send it in ", prefix,
                                                   ".", other));
  }
  return absl::InvalidArgumentError(absl::StrCat(field, ": not a ", kind,
                                                 " feature of the model (its ", kind,
                                                 " features: ", NameList(same_kind), ")"));
}

// `normalize(f, x)` is the standardization the encoder applies to numeric feature f.
template <typename Normalize>
absl::Status ValidateMaps(const google::protobuf::Map<std::string, std::string>& cat,
                          const google::protobuf::Map<std::string, float>& num,
                          const absl::flat_hash_map<std::string, int>& cat_index,
                          const absl::flat_hash_map<std::string, int>& num_index,
                          absl::string_view prefix, const Normalize& normalize) {
  for (const auto& [name, value] : cat) {
    if (!cat_index.contains(name)) {
      return UnknownFeature(prefix, "categorical", name, cat_index, num_index, "numeric");
    }
  }
  for (const auto& [name, value] : num) {
    auto f = num_index.find(name);
    if (f == num_index.end()) {
      return UnknownFeature(prefix, "numeric", name, num_index, cat_index, "categorical");
    }
    if (!std::isfinite(value)) {
      return absl::InvalidArgumentError(
          absl::StrCat(prefix, ".numeric[\"", name, "\"]: must be finite, got ", value));
    }
    // A finite value can still overflow float once standardized (|x - mean| / std with a small
    // std), which would hand the tower an infinity.
    if (!std::isfinite(normalize(f->second, value))) {
      return absl::InvalidArgumentError(absl::StrCat(
          prefix, ".numeric[\"", name, "\"]: ", value, " is out of range for this feature"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateFeatureSpec(const recall::v1::FeatureSpec& spec) {
  if (spec.user_id().num_buckets() < 1 || spec.item_id().num_buckets() < 1) {
    return absl::InvalidArgumentError("feature spec: user_id and item_id need num_buckets >= 1");
  }
  if (spec.user_id().num_buckets() > kMaxRows || spec.item_id().num_buckets() > kMaxRows) {
    return absl::InvalidArgumentError(
        absl::StrCat("feature spec: user_id and item_id need num_buckets <= ", kMaxRows));
  }
  if (spec.history_length() < 0 || spec.history_length() > 10000) {
    return absl::InvalidArgumentError("feature spec: history_length must be in [0, 10000]");
  }
  if (spec.item_audience_length() < 0 || spec.item_audience_length() > 10000) {
    return absl::InvalidArgumentError("feature spec: item_audience_length must be in [0, 10000]");
  }
  if (spec.item_neighbor_length() < 0 || spec.item_neighbor_length() > 10000) {
    return absl::InvalidArgumentError("feature spec: item_neighbor_length must be in [0, 10000]");
  }
  if (auto s = ValidateSide(spec.user_categorical(), spec.user_numeric(), "user"); !s.ok()) {
    return s;
  }
  return ValidateSide(spec.item_categorical(), spec.item_numeric(), "item");
}

absl::StatusOr<std::shared_ptr<const FeatureEncoder>> FeatureEncoder::Create(
    const recall::v1::FeatureSpec& spec, Vocabulary user_vocab, Vocabulary item_vocab) {
  if (auto s = ValidateFeatureSpec(spec); !s.ok()) return s;
  if (user_vocab.size() > spec.user_id().num_buckets() ||
      item_vocab.size() > spec.item_id().num_buckets()) {
    return absl::InvalidArgumentError("feature spec: a vocabulary is larger than its num_buckets");
  }
  std::shared_ptr<FeatureEncoder> e(new FeatureEncoder());
  e->spec_ = spec;
  e->user_vocab_ = std::move(user_vocab);
  e->item_vocab_ = std::move(item_vocab);
  BuildOffsets(spec.user_categorical(), e->user_cat_offset_, e->user_cat_total_,
               e->user_cat_index_);
  BuildOffsets(spec.item_categorical(), e->item_cat_offset_, e->item_cat_total_,
               e->item_cat_index_);
  BuildIndex(spec.user_numeric(), e->user_num_index_);
  BuildIndex(spec.item_numeric(), e->item_num_index_);
  return std::shared_ptr<const FeatureEncoder>(std::move(e));
}

int64_t FeatureEncoder::IdRow(const Vocabulary& vocab, const recall::v1::IdFeatureSpec& spec,
                              int64_t id) {
  if (vocab.size() > 0) return vocab.Row(id);
  return HashBucket(Mix64(static_cast<uint64_t>(id)), spec.num_buckets());
}

int64_t FeatureEncoder::UserRow(int64_t id) const { return IdRow(user_vocab_, spec_.user_id(), id); }
int64_t FeatureEncoder::ItemRow(int64_t id) const { return IdRow(item_vocab_, spec_.item_id(), id); }
int64_t FeatureEncoder::num_user_rows() const { return spec_.user_id().num_buckets() + 1; }
int64_t FeatureEncoder::num_item_rows() const { return spec_.item_id().num_buckets() + 1; }

int64_t FeatureEncoder::UserCategoricalRow(int f, absl::string_view value) const {
  return CategoricalRow(spec_.user_categorical(f), user_cat_offset_[f], value);
}
int64_t FeatureEncoder::ItemCategoricalRow(int f, absl::string_view value) const {
  return CategoricalRow(spec_.item_categorical(f), item_cat_offset_[f], value);
}
float FeatureEncoder::NormalizeUserNumeric(int f, float x) const {
  const auto& n = spec_.user_numeric(f);
  return (x - n.mean()) / n.std();
}
float FeatureEncoder::NormalizeItemNumeric(int f, float x) const {
  const auto& n = spec_.item_numeric(f);
  return (x - n.mean()) / n.std();
}

absl::Status FeatureEncoder::ValidateUser(const recall::v1::UserFeatures& user, int max_history,
                                          absl::string_view prefix) const {
  if (user.history_item_ids_size() > max_history) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, ".history_item_ids: ", user.history_item_ids_size(),
                     " entries exceed the maximum of ", max_history));
  }
  return ValidateMaps(user.categorical(), user.numeric(), user_cat_index_, user_num_index_,
                      prefix, [this](int f, float x) { return NormalizeUserNumeric(f, x); });
}

absl::Status FeatureEncoder::ValidateItem(const recall::v1::ItemFeatures& item,
                                          absl::string_view prefix) const {
  return ValidateMaps(item.categorical(), item.numeric(), item_cat_index_, item_num_index_,
                      prefix, [this](int f, float x) { return NormalizeItemNumeric(f, x); });
}

UserBatch FeatureEncoder::EncodeUserRows(absl::Span<const UserRows> users) const {
  const int64_t b = static_cast<int64_t>(users.size());
  const int64_t len = spec_.history_length();
  const int64_t nc = spec_.user_categorical_size(), nn = spec_.user_numeric_size();
  UserBatch out = UserBatch::Allocate(b, len, nc, nn);
  auto uid = out.user_id.accessor<int64_t, 1>();
  auto hist = out.history.accessor<int64_t, 2>();
  auto mask = out.history_mask.accessor<float, 2>();
  auto cat = out.categorical.accessor<int64_t, 2>();
  auto num = out.numeric.accessor<float, 2>();
  for (int64_t r = 0; r < b; ++r) {
    const UserRows& u = users[r];
    uid[r] = u.id;
    const int64_t take = std::min<int64_t>(len, static_cast<int64_t>(u.history.size()));
    for (int64_t j = 0; j < take; ++j) {
      hist[r][j] = u.history[j];
      mask[r][j] = 1.0f;
    }
    for (int64_t f = 0; f < nc && f < static_cast<int64_t>(u.categorical.size()); ++f) {
      cat[r][f] = u.categorical[f];
    }
    for (int64_t f = 0; f < nn && f < static_cast<int64_t>(u.numeric.size()); ++f) {
      num[r][f] = u.numeric[f];
    }
  }
  return out;
}

ItemBatch FeatureEncoder::EncodeItemRows(absl::Span<const ItemRows> items,
                                         int64_t audience_length, int64_t neighbor_length) const {
  const int64_t b = static_cast<int64_t>(items.size());
  const int64_t nc = spec_.item_categorical_size(), nn = spec_.item_numeric_size();
  ItemBatch out = ItemBatch::Allocate(b, nc, nn, audience_length, neighbor_length);
  auto iid = out.item_id.accessor<int64_t, 1>();
  auto cat = out.categorical.accessor<int64_t, 2>();
  auto num = out.numeric.accessor<float, 2>();
  // A list input: the first `width` rows, mask 1 (padding rows stay 0 with mask 0).
  auto put_list = [b](const at::Tensor& ids, const at::Tensor& mask, int64_t width,
                      auto list_of) {
    if (width <= 0) return;
    auto id = ids.accessor<int64_t, 2>();
    auto m = mask.accessor<float, 2>();
    for (int64_t r = 0; r < b; ++r) {
      const absl::Span<const int64_t> rows = list_of(r);
      const int64_t take = std::min<int64_t>(width, static_cast<int64_t>(rows.size()));
      for (int64_t j = 0; j < take; ++j) {
        id[r][j] = rows[j];
        m[r][j] = 1.0f;
      }
    }
  };
  put_list(out.audience, out.audience_mask, audience_length,
           [&](int64_t r) { return items[r].audience; });
  put_list(out.neighbors, out.neighbors_mask, neighbor_length,
           [&](int64_t r) { return items[r].neighbors; });
  for (int64_t r = 0; r < b; ++r) {
    const ItemRows& it = items[r];
    iid[r] = it.id;
    for (int64_t f = 0; f < nc && f < static_cast<int64_t>(it.categorical.size()); ++f) {
      cat[r][f] = it.categorical[f];
    }
    for (int64_t f = 0; f < nn && f < static_cast<int64_t>(it.numeric.size()); ++f) {
      num[r][f] = it.numeric[f];
    }
  }
  return out;
}

UserBatch FeatureEncoder::EncodeUsers(
    absl::Span<const recall::v1::UserFeatures* const> users) const {
  const int64_t len = spec_.history_length();
  const int64_t nc = spec_.user_categorical_size(), nn = spec_.user_numeric_size();
  std::vector<std::vector<int64_t>> history(users.size()), cats(users.size());
  std::vector<std::vector<float>> nums(users.size());
  std::vector<UserRows> rows(users.size());
  for (size_t i = 0; i < users.size(); ++i) {
    const auto& u = *users[i];
    // Most recent last: keep the last `len` known items, in order.
    const int n = u.history_item_ids_size();
    int start = n;
    int64_t known = 0;
    while (start > 0 && known < len) {
      --start;
      if (ItemRow(u.history_item_ids(start)) != 0) ++known;
    }
    for (int j = start; j < n; ++j) {
      const int64_t row = ItemRow(u.history_item_ids(j));
      if (row != 0) history[i].push_back(row);
    }
    for (int64_t f = 0; f < nc; ++f) {
      auto it = u.categorical().find(spec_.user_categorical(f).name());
      cats[i].push_back(UserCategoricalRow(f, it == u.categorical().end() ? "" : it->second));
    }
    nums[i].assign(nn, 0.0f);
    for (int64_t f = 0; f < nn; ++f) {
      auto it = u.numeric().find(spec_.user_numeric(f).name());
      if (it != u.numeric().end()) nums[i][f] = NormalizeUserNumeric(f, it->second);
    }
    rows[i] = {UserRow(u.user_id()), history[i], cats[i], nums[i]};
  }
  return EncodeUserRows(rows);
}

ItemBatch FeatureEncoder::EncodeItems(
    absl::Span<const recall::v1::ItemFeatures* const> items) const {
  const int64_t nc = spec_.item_categorical_size(), nn = spec_.item_numeric_size();
  std::vector<std::vector<int64_t>> cats(items.size());
  std::vector<std::vector<float>> nums(items.size());
  std::vector<ItemRows> rows(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    const auto& it = *items[i];
    for (int64_t f = 0; f < nc; ++f) {
      auto c = it.categorical().find(spec_.item_categorical(f).name());
      cats[i].push_back(ItemCategoricalRow(f, c == it.categorical().end() ? "" : c->second));
    }
    nums[i].assign(nn, 0.0f);
    for (int64_t f = 0; f < nn; ++f) {
      auto x = it.numeric().find(spec_.item_numeric(f).name());
      if (x != it.numeric().end()) nums[i][f] = NormalizeItemNumeric(f, x->second);
    }
    ItemRows& r = rows[i];
    r.id = ItemRow(it.item_id());
    r.categorical = cats[i];
    r.numeric = nums[i];
  }
  // An online item has no known audience or neighbours: the padding row with mask 0 (pooled to
  // zeros, as an item nobody has interacted with yet).
  return EncodeItemRows(rows, spec_.item_audience_length(), spec_.item_neighbor_length());
}

}  // namespace recall
