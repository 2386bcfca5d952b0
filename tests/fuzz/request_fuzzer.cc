// Fuzz target: request validation and feature encoding (the server's Recall / UpsertItems /
// DeleteItems path up to the tower forward).
//
// Input: byte 0 selects what the rest is parsed as (binary protobuf):
//   bit 2: 1 = recall.v1.DeleteItemsRequest (bits 0 and 1 are then ignored)
//   bit 0: 0 = recall.v1.RecallRequest, 1 = recall.v1.UpsertItemsRequest
//   bit 1: which fixed encoder: 0 = user ids through a vocabulary, item ids hashed;
//          1 = user ids hashed, item ids through a vocabulary (unknown history items dropped)
// The request then goes through the server's own checks, the functions RecallEngine calls before
// it touches the index or the towers (server/request_checks.h: ValidateRecallRequest +
// ValidateRecallUser, ValidateUpsertRequest, ValidateDeleteRequest), with EngineLimits' defaults
// and a serving model of dim 8, version 3. A refusal must be InvalidArgument with a message that
// starts with the request's field path; an accepted request must satisfy the documented
// contract (ids never -1 and unique where required, raw vectors finite and normalized, the
// features list in request order). Whatever is accepted is encoded with EncodeUsers /
// EncodeItems and the tensors are checked against the encoder's contract (model/encoder.h):
// shapes and dtypes, every row inside its embedding table, the history the last known items in
// order with a mask that is a prefix of ones, categorical rows equal to the row primitives, and
// numeric values finite and equal to the standardized inputs. A violation aborts (a finding).
//
// RECALL_FUZZ_WRITE_SEEDS=<dir> ./request_fuzzer writes the seed corpus to <dir> and exits.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "model/encoder.h"
#include "model/vocabulary.h"
#include "recall/v1/model.pb.h"
#include "recall/v1/recall.pb.h"
#include "server/request_checks.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using recall::FeatureEncoder;
using recall::server::EngineLimits;

// The server's default limits and a serving model's properties.
const EngineLimits kLimits;
constexpr int kDim = 8;
constexpr int64_t kServingVersion = 3;


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

bool SameShape(const at::Tensor& t, std::vector<int64_t> shape, at::ScalarType type) {
  return t.sizes().vec() == shape && t.scalar_type() == type && t.is_contiguous();
}

void CheckUser(const FeatureEncoder& enc, const recall::v1::UserFeatures& u) {
  const recall::v1::UserFeatures* users[] = {&u};
  recall::UserBatch b = enc.EncodeUsers(users);
  const auto& spec = enc.spec();
  const int64_t len = spec.history_length();
  const int64_t nc = spec.user_categorical_size(), nn = spec.user_numeric_size();
  FUZZ_CHECK(b.size() == 1);
  FUZZ_CHECK(SameShape(b.user_id, {1}, at::kLong));
  FUZZ_CHECK(SameShape(b.history, {1, len}, at::kLong));
  FUZZ_CHECK(SameShape(b.history_mask, {1, len}, at::kFloat));
  FUZZ_CHECK(SameShape(b.categorical, {1, nc}, at::kLong));
  FUZZ_CHECK(SameShape(b.numeric, {1, nn}, at::kFloat));

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
  FUZZ_CHECK(SameShape(b.item_id, {n}, at::kLong));
  FUZZ_CHECK(SameShape(b.categorical, {n, nc}, at::kLong));
  FUZZ_CHECK(SameShape(b.numeric, {n, nn}, at::kFloat));
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

// A refusal: InvalidArgument, with a message that starts with one of the request's fields.
void CheckRefusal(const absl::Status& st, std::initializer_list<const char*> fields) {
  FUZZ_CHECK(absl::IsInvalidArgument(st));
  bool named = false;
  for (const char* f : fields) named |= absl::StartsWith(st.message(), f);
  FUZZ_CHECK(named);
}

void FuzzRecall(const FeatureEncoder& enc, const recall::v1::RecallRequest& req) {
  // RecallEngine::RecallBatch: the version-independent checks, then the user features.
  absl::Status st = recall::server::ValidateRecallRequest(req, kLimits);
  if (st.ok()) st = recall::server::ValidateRecallUser(req, kLimits, enc);
  if (!st.ok()) {
    CheckRefusal(st, {"k:", "exclude_item_ids", "user", "request_id:"});
    return;
  }
  FUZZ_CHECK(req.k() >= 1 && req.k() <= kLimits.max_k);
  FUZZ_CHECK(req.exclude_item_ids_size() <= kLimits.max_excludes);
  FUZZ_CHECK(req.user().history_item_ids_size() <= kLimits.max_history);
  FUZZ_CHECK(req.request_id().size() <= recall::server::kMaxRequestIdBytes);
  for (int64_t id : req.exclude_item_ids()) FUZZ_CHECK(id != recall::server::kReservedItemId);
  for (int64_t id : req.user().history_item_ids()) {
    FUZZ_CHECK(id != recall::server::kReservedItemId);
  }
  CheckUser(enc, req.user());
}

void FuzzUpsert(const FeatureEncoder& enc, const recall::v1::UpsertItemsRequest& req) {
  // RecallEngine::UpsertItems (the batch before pinning a version) / UpsertInto (everything).
  absl::Status st = recall::server::ValidateUpsertBatch(req, kLimits);
  std::vector<const recall::v1::ItemFeatures*> feature_items;
  const absl::Status all = recall::server::ValidateUpsertRequest(req, kLimits, enc, kDim, 0,
                                                                 kServingVersion, &feature_items);
  FUZZ_CHECK(st.ok() || all == st);  // the batch check comes first
  if (!all.ok()) {
    CheckRefusal(all, {"items"});
    return;
  }
  FUZZ_CHECK(req.items_size() >= 1 && req.items_size() <= kLimits.max_upsert_batch);
  absl::flat_hash_set<int64_t> seen;
  size_t f = 0;
  for (const auto& u : req.items()) {
    FUZZ_CHECK(u.has_features() || u.has_vector());
    const int64_t id = u.has_features() ? u.features().item_id() : u.vector().item_id();
    FUZZ_CHECK(id != recall::server::kReservedItemId);
    FUZZ_CHECK(seen.insert(id).second);
    if (u.has_features()) {
      FUZZ_CHECK(f < feature_items.size() && feature_items[f++] == &u.features());
      continue;
    }
    const auto& v = u.vector();
    FUZZ_CHECK(v.model_version() == kServingVersion && v.values_size() == kDim);
    double norm2 = 0;
    for (float x : v.values()) {
      FUZZ_CHECK(std::isfinite(x));
      norm2 += static_cast<double>(x) * x;
    }
    FUZZ_CHECK(std::abs(std::sqrt(norm2) - 1.0) <= recall::server::kRawVectorNormTolerance);
  }
  FUZZ_CHECK(f == feature_items.size());
  if (!feature_items.empty()) CheckItems(enc, feature_items);
}

void FuzzDelete(const recall::v1::DeleteItemsRequest& req) {
  // RecallEngine::DeleteItems.
  absl::Status st = recall::server::ValidateDeleteRequest(req, kLimits);
  if (!st.ok()) {
    CheckRefusal(st, {"item_ids"});
    return;
  }
  FUZZ_CHECK(req.item_ids_size() >= 1 && req.item_ids_size() <= kLimits.max_upsert_batch);
  absl::flat_hash_set<int64_t> seen;
  for (int64_t id : req.item_ids()) {
    FUZZ_CHECK(id != recall::server::kReservedItemId);
    FUZZ_CHECK(seen.insert(id).second);
  }
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
  edge.set_k(kLimits.max_k);
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
  recall::v1::UpsertItemsRequest unnormalized = up;
  unnormalized.mutable_items(2)->mutable_vector()->set_values(0, 0.5f);
  WriteSeed(dir, "upsert_vector_not_normalized", 1, unnormalized);

  recall::v1::DeleteItemsRequest del;
  for (int64_t id : {42, 7, 43, 999999}) del.add_item_ids(id);
  WriteSeed(dir, "delete_ids", 4, del);
  recall::v1::DeleteItemsRequest del_dup = del;
  del_dup.add_item_ids(7);
  WriteSeed(dir, "delete_duplicate_id", 4, del_dup);
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
  if (data[0] & 4) {
    recall::v1::DeleteItemsRequest req;
    if (req.ParseFromArray(bytes, n)) FuzzDelete(req);
  } else if (data[0] & 1) {
    recall::v1::UpsertItemsRequest req;
    if (req.ParseFromArray(bytes, n)) FuzzUpsert(enc, req);
  } else {
    recall::v1::RecallRequest req;
    if (req.ParseFromArray(bytes, n)) FuzzRecall(enc, req);
  }
  return 0;
}
