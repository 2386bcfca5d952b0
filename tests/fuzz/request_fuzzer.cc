// Fuzz target: request validation and feature encoding (the server's Recall / UpsertItems path
// up to the tower forward).
//
// Input: byte 0 selects what the rest is parsed as (binary protobuf):
//   bit 0: 0 = recall.v1.RecallRequest, 1 = recall.v1.UpsertItemsRequest
//   bit 1: which fixed encoder: 0 = user ids through a vocabulary, item ids hashed;
//          1 = user ids hashed, item ids through a vocabulary (unknown history items dropped)
// The request then goes through the checks RecallEngine makes before it touches the model
// (k and exclude count, upsert batch size, raw vector dim/version/finiteness, reserved and
// duplicate ids: mirrored here with EngineLimits' defaults, because RecallEngine itself needs a
// serving FAISS index and tower) and through FeatureEncoder::ValidateUser / ValidateItem, the
// validation the server uses. Whatever they accept is encoded with EncodeUsers / EncodeItems and
// the tensors are checked against the encoder's contract (model/encoder.h): shapes and dtypes,
// every row inside its embedding table, the history the last known items in order with a mask
// that is a prefix of ones, categorical rows equal to the row primitives, and numeric values
// finite and equal to the standardized inputs. A violation aborts (a finding).
//
// RECALL_FUZZ_WRITE_SEEDS=<dir> ./request_fuzzer writes the seed corpus to <dir> and exits.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "model/encoder.h"
#include "model/vocabulary.h"
#include "recall/v1/model.pb.h"
#include "recall/v1/recall.pb.h"

namespace {

using recall::FeatureEncoder;

// EngineLimits defaults (server/recall_engine.h) and a serving model's properties.
constexpr int kMaxK = 1000;
constexpr int kMaxHistory = 1000;
constexpr int kMaxExcludes = 10000;
constexpr int kMaxUpsertBatch = 10000;
constexpr int kDim = 8;
constexpr int64_t kServingVersion = 3;
constexpr int64_t kReservedId = -1;  // EmbeddingIndex::kReservedId

#define FUZZ_CHECK(cond)                                                       \
  do {                                                                         \
    if (!(cond)) {                                                             \
      std::fprintf(stderr, "%s:%d: invariant violated: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                            \
    }                                                                          \
  } while (0)

recall::v1::FeatureSpec MakeSpec(bool item_vocab) {
  recall::v1::FeatureSpec spec;
  spec.mutable_user_id()->set_name("user_id");
  spec.mutable_user_id()->set_num_buckets(item_vocab ? 97 : 16);
  spec.mutable_item_id()->set_name("item_id");
  spec.mutable_item_id()->set_num_buckets(item_vocab ? 16 : 1009);
  spec.set_history_length(5);
  auto cat = [](auto* list, const char* name, int64_t buckets) {
    auto* c = list->Add();
    c->set_name(name);
    c->set_num_buckets(buckets);
  };
  auto num = [](auto* list, const char* name, float mean, float std) {
    auto* n = list->Add();
    n->set_name(name);
    n->set_mean(mean);
    n->set_std(std);
  };
  cat(spec.mutable_user_categorical(), "country", 50);
  cat(spec.mutable_user_categorical(), "device", 1);  // a single bucket
  num(spec.mutable_user_numeric(), "age", 35.0f, 12.0f);
  num(spec.mutable_user_numeric(), "activity", 0.5f, 0.01f);  // std < 1 scales values up
  cat(spec.mutable_item_categorical(), "category", 20);
  cat(spec.mutable_item_categorical(), "brand", 1000);
  num(spec.mutable_item_numeric(), "price", 20.0f, 0.25f);
  num(spec.mutable_item_numeric(), "popularity", 0.0f, 1.0f);
  return spec;
}

const FeatureEncoder& Encoder(int which) {
  static const std::shared_ptr<const FeatureEncoder>* encoders = [] {
    auto* e = new std::shared_ptr<const FeatureEncoder>[2];
    // Encoder 0: 10 known users (ids 100..109), item ids hashed.
    std::vector<int64_t> users;
    for (int64_t i = 0; i < 10; ++i) users.push_back(100 + i);
    auto e0 = FeatureEncoder::Create(MakeSpec(false), recall::Vocabulary(users),
                                     recall::Vocabulary());
    // Encoder 1: user ids hashed, 12 known items (ids 1..12, and two negative ones).
    std::vector<int64_t> items = {-7, -2};
    for (int64_t i = 1; i <= 12; ++i) items.push_back(i);
    auto e1 = FeatureEncoder::Create(MakeSpec(true), recall::Vocabulary(),
                                     recall::Vocabulary(items));
    if (!e0.ok() || !e1.ok()) std::abort();
    e[0] = *e0;
    e[1] = *e1;
    return e;
  }();
  return *encoders[which];
}

bool SameShape(const torch::Tensor& t, std::vector<int64_t> shape, torch::ScalarType type) {
  return t.sizes().vec() == shape && t.scalar_type() == type && t.is_contiguous();
}

void CheckUser(const FeatureEncoder& enc, const recall::v1::UserFeatures& u) {
  const recall::v1::UserFeatures* users[] = {&u};
  recall::UserBatch b = enc.EncodeUsers(users);
  const auto& spec = enc.spec();
  const int64_t len = spec.history_length();
  const int64_t nc = spec.user_categorical_size(), nn = spec.user_numeric_size();
  FUZZ_CHECK(b.size() == 1);
  FUZZ_CHECK(SameShape(b.user_id, {1}, torch::kInt64));
  FUZZ_CHECK(SameShape(b.history, {1, len}, torch::kInt64));
  FUZZ_CHECK(SameShape(b.history_mask, {1, len}, torch::kFloat32));
  FUZZ_CHECK(SameShape(b.categorical, {1, nc}, torch::kInt64));
  FUZZ_CHECK(SameShape(b.numeric, {1, nn}, torch::kFloat32));

  const int64_t uid = b.user_id.data_ptr<int64_t>()[0];
  FUZZ_CHECK(uid == enc.UserRow(u.user_id()));
  FUZZ_CHECK(uid >= 0 && uid < enc.num_user_rows());

  // History: the last `len` known items, oldest first, then padding (row 0, mask 0).
  std::vector<int64_t> known;
  for (int64_t id : u.history_item_ids()) {
    const int64_t row = enc.ItemRow(id);
    FUZZ_CHECK(row >= 0 && row < enc.num_item_rows());
    if (row != 0) known.push_back(row);
  }
  const size_t keep = std::min<size_t>(known.size(), static_cast<size_t>(len));
  const int64_t* hist = b.history.data_ptr<int64_t>();
  const float* mask = b.history_mask.data_ptr<float>();
  for (int64_t s = 0; s < len; ++s) {
    if (static_cast<size_t>(s) < keep) {
      FUZZ_CHECK(hist[s] == known[known.size() - keep + s]);
      FUZZ_CHECK(mask[s] == 1.0f);
    } else {
      FUZZ_CHECK(hist[s] == 0);
      FUZZ_CHECK(mask[s] == 0.0f);
    }
  }

  const int64_t* cat = b.categorical.data_ptr<int64_t>();
  for (int f = 0; f < nc; ++f) {
    const auto& fs = spec.user_categorical(f);
    auto it = u.categorical().find(fs.name());
    const std::string value = it == u.categorical().end() ? "" : it->second;
    const int64_t missing = enc.UserCategoricalRow(f, "");
    FUZZ_CHECK(cat[f] == enc.UserCategoricalRow(f, value));
    FUZZ_CHECK(cat[f] >= missing && cat[f] <= missing + fs.num_buckets());
    FUZZ_CHECK(cat[f] < enc.num_user_categorical_rows());
    FUZZ_CHECK(value.empty() == (cat[f] == missing));
  }
  const float* num = b.numeric.data_ptr<float>();
  for (int f = 0; f < nn; ++f) {
    auto it = u.numeric().find(spec.user_numeric(f).name());
    FUZZ_CHECK(std::isfinite(num[f]));
    if (it == u.numeric().end()) {
      FUZZ_CHECK(num[f] == 0.0f);
    } else {
      FUZZ_CHECK(num[f] == enc.NormalizeUserNumeric(f, it->second));
    }
  }
}

void CheckItems(const FeatureEncoder& enc,
                const std::vector<const recall::v1::ItemFeatures*>& items) {
  recall::ItemBatch b = enc.EncodeItems(items);
  const auto& spec = enc.spec();
  const int64_t n = static_cast<int64_t>(items.size());
  const int64_t nc = spec.item_categorical_size(), nn = spec.item_numeric_size();
  FUZZ_CHECK(b.size() == n);
  FUZZ_CHECK(SameShape(b.item_id, {n}, torch::kInt64));
  FUZZ_CHECK(SameShape(b.categorical, {n, nc}, torch::kInt64));
  FUZZ_CHECK(SameShape(b.numeric, {n, nn}, torch::kFloat32));
  const int64_t* iid = b.item_id.data_ptr<int64_t>();
  const int64_t* cat = b.categorical.data_ptr<int64_t>();
  const float* num = b.numeric.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) {
    const auto& it = *items[i];
    FUZZ_CHECK(iid[i] == enc.ItemRow(it.item_id()));
    FUZZ_CHECK(iid[i] >= 0 && iid[i] < enc.num_item_rows());
    for (int f = 0; f < nc; ++f) {
      const auto& fs = spec.item_categorical(f);
      auto c = it.categorical().find(fs.name());
      const std::string value = c == it.categorical().end() ? "" : c->second;
      const int64_t row = cat[i * nc + f];
      const int64_t missing = enc.ItemCategoricalRow(f, "");
      FUZZ_CHECK(row == enc.ItemCategoricalRow(f, value));
      FUZZ_CHECK(row >= missing && row <= missing + fs.num_buckets());
      FUZZ_CHECK(row < enc.num_item_categorical_rows());
    }
    for (int f = 0; f < nn; ++f) {
      const float x = num[i * nn + f];
      auto v = it.numeric().find(spec.item_numeric(f).name());
      FUZZ_CHECK(std::isfinite(x));
      FUZZ_CHECK(v == it.numeric().end() ? x == 0.0f
                                         : x == enc.NormalizeItemNumeric(f, v->second));
    }
  }
}

void FuzzRecall(const FeatureEncoder& enc, const recall::v1::RecallRequest& req) {
  // RecallEngine::ValidateRecall.
  if (req.k() < 1 || req.k() > kMaxK) return;
  if (req.exclude_item_ids_size() > kMaxExcludes) return;
  absl::Status st = enc.ValidateUser(req.user(), kMaxHistory);
  if (!st.ok()) {
    FUZZ_CHECK(absl::IsInvalidArgument(st));
    FUZZ_CHECK(!st.message().empty());
    return;
  }
  FUZZ_CHECK(req.user().history_item_ids_size() <= kMaxHistory);
  CheckUser(enc, req.user());
}

void FuzzUpsert(const FeatureEncoder& enc, const recall::v1::UpsertItemsRequest& req) {
  // RecallEngine::UpsertItems / UpsertInto, in their order.
  if (req.items_size() == 0 || req.items_size() > kMaxUpsertBatch) return;
  absl::flat_hash_set<int64_t> seen;
  std::vector<const recall::v1::ItemFeatures*> feature_items;
  for (int i = 0; i < req.items_size(); ++i) {
    const auto& u = req.items(i);
    int64_t id;
    if (u.has_features()) {
      id = u.features().item_id();
      absl::Status st = enc.ValidateItem(u.features(), "items[i].features");
      if (!st.ok()) {
        FUZZ_CHECK(absl::IsInvalidArgument(st));
        return;
      }
      feature_items.push_back(&u.features());
    } else if (u.has_vector()) {
      const auto& v = u.vector();
      id = v.item_id();
      if (v.values_size() != kDim || v.model_version() != kServingVersion) return;
      for (float x : v.values()) {
        if (!std::isfinite(x)) return;
      }
    } else {
      return;
    }
    if (id == kReservedId || !seen.insert(id).second) return;
  }
  if (!feature_items.empty()) CheckItems(enc, feature_items);
}

void WriteSeed(const std::string& dir, const std::string& name, uint8_t selector,
               const google::protobuf::Message& m) {
  std::string bytes(1, static_cast<char>(selector));
  bytes += m.SerializeAsString();
  std::ofstream(dir + "/" + name, std::ios::binary) << bytes;
}

void WriteSeeds(const std::string& dir) {
  recall::v1::RecallRequest r;
  r.set_k(10);
  auto* u = r.mutable_user();
  u->set_user_id(103);
  for (int64_t id : {1, 5, 999, 3, 12, -7, 4, 8}) u->add_history_item_ids(id);
  (*u->mutable_categorical())["country"] = "de";
  (*u->mutable_categorical())["device"] = "android";
  (*u->mutable_numeric())["age"] = 41.5f;
  (*u->mutable_numeric())["activity"] = 0.62f;
  r.add_exclude_item_ids(77);
  r.set_exclude_history(true);
  r.set_request_id("seed-1");
  WriteSeed(dir, "recall_full_vocab_users", 0, r);
  WriteSeed(dir, "recall_full_vocab_items", 2, r);
  recall::v1::RecallRequest minimal;
  minimal.set_k(1);
  WriteSeed(dir, "recall_minimal", 0, minimal);
  recall::v1::RecallRequest edge = r;
  edge.set_k(kMaxK);
  (*edge.mutable_user()->mutable_numeric())["activity"] = 1.0e6f;
  (*edge.mutable_user()->mutable_categorical())["country"] = "";
  edge.mutable_user()->set_user_id(std::numeric_limits<int64_t>::min());
  WriteSeed(dir, "recall_edge_values", 2, edge);
  recall::v1::RecallRequest bad = r;
  (*bad.mutable_user()->mutable_categorical())["not_a_feature"] = "x";
  WriteSeed(dir, "recall_unknown_feature", 0, bad);

  recall::v1::UpsertItemsRequest up;
  auto* f = up.add_items()->mutable_features();
  f->set_item_id(42);
  (*f->mutable_categorical())["category"] = "shoes";
  (*f->mutable_categorical())["brand"] = "acme";
  (*f->mutable_numeric())["price"] = 19.99f;
  (*f->mutable_numeric())["popularity"] = 0.3f;
  auto* f2 = up.add_items()->mutable_features();
  f2->set_item_id(7);
  auto* v = up.add_items()->mutable_vector();
  v->set_item_id(43);
  v->set_model_version(kServingVersion);
  for (int i = 0; i < kDim; ++i) v->add_values(i == 0 ? 1.0f : 0.0f);
  WriteSeed(dir, "upsert_features_and_vector", 1, up);
  WriteSeed(dir, "upsert_features_item_vocab", 3, up);
  recall::v1::UpsertItemsRequest dup = up;
  dup.mutable_items(2)->mutable_vector()->set_item_id(42);
  WriteSeed(dir, "upsert_duplicate_id", 1, dup);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  if (const char* dir = std::getenv("RECALL_FUZZ_WRITE_SEEDS")) {
    WriteSeeds(dir);
    std::exit(0);
  }
  Encoder(0);  // build both encoders before the first input
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const FeatureEncoder& enc = Encoder((data[0] >> 1) & 1);
  const char* bytes = reinterpret_cast<const char*>(data + 1);
  const int n = static_cast<int>(size - 1);
  if (data[0] & 1) {
    recall::v1::UpsertItemsRequest req;
    if (req.ParseFromArray(bytes, n)) FuzzUpsert(enc, req);
  } else {
    recall::v1::RecallRequest req;
    if (req.ParseFromArray(bytes, n)) FuzzRecall(enc, req);
  }
  return 0;
}
