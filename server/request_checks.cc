#include "server/request_checks.h"

#include <cmath>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace recall::server {
namespace {

// The index's reserved id (FAISS's "no result" label) can never name an item.
absl::Status ReservedId(absl::string_view field) {
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": -1 is reserved (FAISS's \"no result\" id) and never an item id"));
}

// `n` entries of list `field`: at most `max`, and at least one unless `may_be_empty`.
absl::Status CheckCount(absl::string_view field, int n, int max, bool may_be_empty) {
  if (n == 0 && !may_be_empty) return absl::InvalidArgumentError(absl::StrCat(field, ": empty"));
  if (n > max) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": ", n, " entries exceed the maximum of ", max));
  }
  return absl::OkStatus();
}

// Checks a list of item ids: none is the reserved id, and (when `unique`) none repeats.
absl::Status CheckItemIds(const google::protobuf::RepeatedField<int64_t>& ids,
                          absl::string_view field, bool unique) {
  absl::flat_hash_map<int64_t, int> first;  // id -> first position
  for (int i = 0; i < ids.size(); ++i) {
    if (ids[i] == kReservedItemId) return ReservedId(absl::StrCat(field, "[", i, "]"));
    if (!unique) continue;
    auto [it, inserted] = first.emplace(ids[i], i);
    if (!inserted) {
      return absl::InvalidArgumentError(absl::StrCat(field, "[", i, "]: ", ids[i],
                                                     " appears twice in one request (also ",
                                                     field, "[", it->second, "])"));
    }
  }
  return absl::OkStatus();
}


}  // namespace

absl::Status ValidateRecallRequest(const recall::v1::RecallRequest& req,
                                   const EngineLimits& limits) {
  if (req.k() < 1 || req.k() > limits.max_k) {
    return absl::InvalidArgumentError(
        absl::StrCat("k: must be in [1, ", limits.max_k, "], got ", req.k()));
  }
  if (auto s = CheckCount("exclude_item_ids", req.exclude_item_ids_size(), limits.max_excludes,
                          true);
      !s.ok()) {
    return s;
  }
  // Unknown ids are fine (an item not in the index is never returned anyway, and an unknown
  // history item falls back to the OOV row); -1 is not, since no item can carry it: it is a
  // caller bug such as forwarding FAISS's padding. Repeats are harmless here.
  if (auto s = CheckItemIds(req.exclude_item_ids(), "exclude_item_ids", false); !s.ok()) return s;
  if (auto s = CheckItemIds(req.user().history_item_ids(), "user.history_item_ids", false);
      !s.ok()) {
    return s;
  }
  if (req.request_id().size() > kMaxRequestIdBytes) {
    return absl::InvalidArgumentError(absl::StrCat("request_id: ", req.request_id().size(),
                                                   " bytes exceed the maximum of ",
                                                   kMaxRequestIdBytes));
  }
  return absl::OkStatus();
}

absl::Status ValidateRecallUser(const recall::v1::RecallRequest& req, const EngineLimits& limits,
                                const FeatureEncoder& enc) {
  return enc.ValidateUser(req.user(), limits.max_history);
}

static absl::Status CheckWriteRequestId(const std::string& request_id) {
  if (request_id.size() > kMaxWriteRequestIdBytes) {
    return absl::InvalidArgumentError(absl::StrCat("request_id: at most ",
                                                   kMaxWriteRequestIdBytes, " bytes, got ",
                                                   request_id.size()));
  }
  return absl::OkStatus();
}

absl::Status ValidateUpsertBatch(const recall::v1::UpsertItemsRequest& req,
                                 const EngineLimits& limits) {
  if (auto st = CheckCount("items", req.items_size(), limits.max_upsert_batch, false); !st.ok()) {
    return st;
  }
  return CheckWriteRequestId(req.request_id());
}

// A raw vector of item `field`: the serving version, `dim` finite values, L2 norm ~1 over the
// coordinates that are not score offsets (every offset_stride-th, when > 0).
absl::Status ValidateRawVector(const recall::v1::RawVector& v, const std::string& field, int dim,
                            int offset_stride, int64_t serving_version) {
  // The version first: a vector of another model usually has another dim too, and the
  // version is the real reason.
  if (v.model_version() != serving_version) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ".model_version: ", v.model_version(),
                     " is not the serving version ", serving_version));
  }
  if (v.values_size() != dim) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".values: ", v.values_size(),
                                                   " values, the model's dim is ", dim));
  }
  double norm2 = 0;
  for (int j = 0; j < dim; ++j) {
    if (!std::isfinite(v.values(j))) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".values[", j, "]: must be finite, got ", v.values(j)));
    }
    if (offset_stride > 0 && j % offset_stride == offset_stride - 1) continue;
    norm2 += static_cast<double>(v.values(j)) * v.values(j);
  }
  if (const double norm = std::sqrt(norm2); std::abs(norm - 1.0) > kRawVectorNormTolerance) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ".values: L2 norm is ", norm, ", must be 1 within ", kRawVectorNormTolerance,
        " (the index scores by inner product; normalize the vector)"));
  }
  return absl::OkStatus();
}

absl::Status ValidateLoggedUpsert(const recall::v1::UpsertItemsRequest& req,
                                  const EngineLimits& limits) {
  if (auto st = ValidateUpsertBatch(req, limits); !st.ok()) return st;
  absl::flat_hash_set<int64_t> seen;
  for (int i = 0; i < req.items_size(); ++i) {
    const auto& u = req.items(i);
    const std::string field = absl::StrCat("items[", i, "]");
    if (!u.has_features() && !u.has_vector()) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": needs a payload, features or vector"));
    }
    const int64_t id = u.has_features() ? u.features().item_id() : u.vector().item_id();
    if (id == kReservedItemId) return ReservedId(field + ".item_id");
    if (!seen.insert(id).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".item_id: ", id, " appears more than once"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateUpsertRequest(const recall::v1::UpsertItemsRequest& req,
                                   const EngineLimits& limits, const FeatureEncoder& enc, int dim,
                                   int score_offset_stride, int64_t serving_version,
                                   std::vector<const recall::v1::ItemFeatures*>* feature_items) {
  if (auto st = ValidateUpsertBatch(req, limits); !st.ok()) return st;
  if (feature_items != nullptr) feature_items->clear();
  absl::flat_hash_map<int64_t, int> seen;  // item id -> first position in the request
  for (int i = 0; i < req.items_size(); ++i) {
    const auto& u = req.items(i);
    std::string field = absl::StrCat("items[", i, "]");
    int64_t id;
    if (u.has_features()) {
      id = u.features().item_id();
      field += ".features";
      if (auto st = enc.ValidateItem(u.features(), field); !st.ok()) return st;
      if (feature_items != nullptr) feature_items->push_back(&u.features());
    } else if (u.has_vector()) {
      id = u.vector().item_id();
      field += ".vector";
      if (auto st = ValidateRawVector(u.vector(), field, dim, score_offset_stride, serving_version);
          !st.ok()) {
        return st;
      }
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": needs a payload, features or vector"));
    }
    if (id == kReservedItemId) return ReservedId(field + ".item_id");
    if (auto [it, inserted] = seen.emplace(id, i); !inserted) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".item_id: ", id, " appears twice in one request (also items[",
                       it->second, "])"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateDeleteRequest(const recall::v1::DeleteItemsRequest& req,
                                   const EngineLimits& limits) {
  if (auto s = CheckCount("item_ids", req.item_ids_size(), limits.max_upsert_batch, false);
      !s.ok()) {
    return s;
  }
  // A repeated id is refused like in UpsertItems: it is a caller bug, and it would make
  // `deleted` ("ids that were present") ambiguous.
  if (auto s = CheckItemIds(req.item_ids(), "item_ids", true); !s.ok()) return s;
  return CheckWriteRequestId(req.request_id());
}

}  // namespace recall::server
