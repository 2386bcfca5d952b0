#include "server/recall_engine.h"

#include <chrono>
#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"

namespace recall::server {
namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// request_id is only echoed back; the bound keeps a caller from doubling a reply's size with it.
constexpr size_t kMaxRequestIdBytes = 1024;

// A raw vector's L2 norm may differ from 1 by this much. Float32 rounding of a normalized
// 64..1024-dim vector stays below 1e-5; 1e-3 accepts any honest normalization (also one done
// in half precision) while refusing a vector that was never normalized, whose inner products
// would not be comparable with the other items' scores.
constexpr double kNormTolerance = 1e-3;

// The index's reserved id (FAISS's "no result" label) can never name an item.
absl::Status ReservedId(absl::string_view field) {
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": -1 is reserved (FAISS's \"no result\" id) and never an item id"));
}

// Checks a list of item ids: none is the reserved id, and (when `unique`) none repeats.
absl::Status CheckItemIds(const google::protobuf::RepeatedField<int64_t>& ids,
                          absl::string_view field, bool unique) {
  absl::flat_hash_map<int64_t, int> first;  // id -> first position
  for (int i = 0; i < ids.size(); ++i) {
    if (ids[i] == EmbeddingIndex::kReservedId) return ReservedId(absl::StrCat(field, "[", i, "]"));
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

absl::StatusOr<std::shared_ptr<Servable>> RecallEngine::Pin() const {
  std::shared_ptr<Servable> s = versions_->Current();
  if (!s) return absl::UnavailableError("no model version is loaded yet");
  return s;
}

absl::Status RecallEngine::ValidateRecall(const recall::v1::RecallRequest& req) const {
  if (req.k() < 1 || req.k() > limits_.max_k) {
    return absl::InvalidArgumentError(
        absl::StrCat("k: must be in [1, ", limits_.max_k, "], got ", req.k()));
  }
  if (req.exclude_item_ids_size() > limits_.max_excludes) {
    return absl::InvalidArgumentError(absl::StrCat("exclude_item_ids: ",
                                                   req.exclude_item_ids_size(),
                                                   " entries exceed the maximum of ",
                                                   limits_.max_excludes));
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

absl::Status RecallEngine::Recall(const recall::v1::RecallRequest& req,
                                  recall::v1::RecallResponse* resp,
                                  RecallTimings* timings) const {
  const recall::v1::RecallRequest* r = &req;
  absl::Status status;
  RecallBatch({&r, 1}, {&resp, 1}, {&status, 1}, timings);
  return status;
}

void RecallEngine::RecallBatch(absl::Span<const recall::v1::RecallRequest* const> reqs,
                               absl::Span<recall::v1::RecallResponse* const> resps,
                               absl::Span<absl::Status> statuses, RecallTimings* timings) const {
  const size_t n = reqs.size();
  for (size_t i = 0; i < n; ++i) statuses[i] = ValidateRecall(*reqs[i]);
  auto fail_all = [&](const absl::Status& st) {
    for (size_t i = 0; i < n; ++i) {
      if (statuses[i].ok()) statuses[i] = st;
    }
  };
  auto pinned = Pin();
  if (!pinned.ok()) return fail_all(pinned.status());
  const Servable& s = **pinned;
  const FeatureEncoder& enc = s.model->encoder();

  auto t = Clock::now();
  std::vector<size_t> rows;  // request index of each batch row
  std::vector<const recall::v1::UserFeatures*> users;
  rows.reserve(n);
  users.reserve(n);
  int k_max = 0;
  bool any_excludes = false;
  for (size_t i = 0; i < n; ++i) {
    if (statuses[i].ok()) statuses[i] = enc.ValidateUser(reqs[i]->user(), limits_.max_history);
    if (!statuses[i].ok()) continue;
    rows.push_back(i);
    users.push_back(&reqs[i]->user());
    k_max = std::max(k_max, reqs[i]->k());
    any_excludes |= reqs[i]->exclude_item_ids_size() > 0 || reqs[i]->exclude_history();
  }
  if (rows.empty()) return;
  UserBatch batch = enc.EncodeUsers(users);
  std::vector<std::vector<int64_t>> excludes(any_excludes ? rows.size() : 0);
  for (size_t r = 0; any_excludes && r < rows.size(); ++r) {
    const auto& req = *reqs[rows[r]];
    excludes[r].assign(req.exclude_item_ids().begin(), req.exclude_item_ids().end());
    if (req.exclude_history()) {
      excludes[r].insert(excludes[r].end(), req.user().history_item_ids().begin(),
                         req.user().history_item_ids().end());
    }
  }
  if (timings) timings->encode_sec = Since(t);

  t = Clock::now();
  auto emb = s.model->EmbedUsers(batch);
  if (!emb.ok()) return fail_all(emb.status());
  if (timings) timings->tower_sec = Since(t);

  t = Clock::now();
  uint64_t generation = 0;
  auto hits = s.index->Search(emb->data_ptr<float>(), static_cast<int>(rows.size()), k_max,
                              absl::MakeConstSpan(excludes), &generation);
  if (!hits.ok()) return fail_all(hits.status());
  if (timings) timings->search_sec = Since(t);

  const int64_t dim = emb->size(1);
  const float* e = emb->data_ptr<float>();
  for (size_t r = 0; r < rows.size(); ++r) {
    const auto& req = *reqs[rows[r]];
    recall::v1::RecallResponse* resp = resps[rows[r]];
    const SearchHits& h = (*hits)[r];
    const size_t take = std::min(h.ids.size(), static_cast<size_t>(req.k()));
    resp->mutable_items()->Reserve(static_cast<int>(take));
    for (size_t j = 0; j < take; ++j) {
      auto* item = resp->add_items();
      item->set_item_id(h.ids[j]);
      item->set_score(h.scores[j]);
    }
    resp->set_model_version(s.version());
    resp->set_index_generation(generation);
    resp->set_request_id(req.request_id());
    if (req.return_user_embedding()) {
      resp->mutable_user_embedding()->Add(e + r * dim, e + (r + 1) * dim);
    }
  }
}

absl::Status RecallEngine::UpsertItems(const recall::v1::UpsertItemsRequest& req,
                                       recall::v1::UpsertItemsResponse* resp) const {
  if (req.items_size() == 0) return absl::InvalidArgumentError("items: empty");
  if (req.items_size() > limits_.max_upsert_batch) {
    return absl::InvalidArgumentError(absl::StrCat("items: ", req.items_size(),
                                                   " entries exceed the maximum of ",
                                                   limits_.max_upsert_batch));
  }
  // A swap between validation and logging makes the write store answer Aborted; the request
  // is then validated and embedded again against the new version.
  for (int attempt = 0;; ++attempt) {
    auto pinned = Pin();
    if (!pinned.ok()) return pinned.status();
    absl::Status s = UpsertInto(*pinned, req, resp);
    if (!absl::IsAborted(s) || attempt == 3) return s;
  }
}

absl::Status RecallEngine::UpsertInto(const std::shared_ptr<Servable>& pinned,
                                      const recall::v1::UpsertItemsRequest& req,
                                      recall::v1::UpsertItemsResponse* resp) const {
  const Servable& s = *pinned;
  const FeatureEncoder& enc = s.model->encoder();
  const int dim = s.model->dim();

  // Validate everything before changing anything: a request is applied whole or not at all.
  absl::flat_hash_map<int64_t, int> seen;  // item id -> first position in the request
  std::vector<const recall::v1::ItemFeatures*> feature_items;
  for (int i = 0; i < req.items_size(); ++i) {
    const auto& u = req.items(i);
    std::string field = absl::StrCat("items[", i, "]");
    int64_t id;
    if (u.has_features()) {
      id = u.features().item_id();
      field += ".features";
      if (auto st = enc.ValidateItem(u.features(), field); !st.ok()) return st;
      feature_items.push_back(&u.features());
    } else if (u.has_vector()) {
      const auto& v = u.vector();
      id = v.item_id();
      field += ".vector";
      // The version first: a vector of another model usually has another dim too, and the
      // version is the real reason.
      if (v.model_version() != s.version()) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ".model_version: ", v.model_version(),
                         " is not the serving version ", s.version()));
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
        norm2 += static_cast<double>(v.values(j)) * v.values(j);
      }
      if (const double norm = std::sqrt(norm2); std::abs(norm - 1.0) > kNormTolerance) {
        return absl::InvalidArgumentError(absl::StrCat(
            field, ".values: L2 norm is ", norm, ", must be 1 within ", kNormTolerance,
            " (the index scores by inner product; normalize the vector)"));
      }
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": needs a payload, features or vector"));
    }
    if (id == EmbeddingIndex::kReservedId) return ReservedId(field + ".item_id");
    if (auto [it, inserted] = seen.emplace(id, i); !inserted) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".item_id: ", id, " appears twice in one request (also items[",
                       it->second, "])"));
    }
  }
  std::vector<float> feature_vectors;
  if (!feature_items.empty()) {
    auto emb = s.model->EmbedItems(enc.EncodeItems(feature_items));
    if (!emb.ok()) return emb.status();
    const float* p = emb->data_ptr<float>();
    feature_vectors.assign(p, p + emb->numel());
  }
  if (writes_ != nullptr) {
    if (auto st = writes_->Upsert(pinned, req, feature_vectors, *versions_); !st.ok()) return st;
  } else {
    // No write-ahead log (in-process use): applied to the live index only.
    std::vector<int64_t> ids;
    std::vector<float> vectors;
    size_t row = 0;
    for (const auto& u : req.items()) {
      const float* v = u.has_features() ? &feature_vectors[dim * row++] : u.vector().values().data();
      ids.push_back(u.has_features() ? u.features().item_id() : u.vector().item_id());
      vectors.insert(vectors.end(), v, v + dim);
    }
    if (auto st = s.index->Upsert(ids, vectors.data()); !st.ok()) return st;
  }
  resp->set_upserted(req.items_size());
  resp->set_index_generation(s.index->generation());
  resp->set_model_version(s.version());
  return absl::OkStatus();
}

absl::Status RecallEngine::DeleteItems(const recall::v1::DeleteItemsRequest& req,
                                       recall::v1::DeleteItemsResponse* resp) const {
  if (req.item_ids_size() == 0) return absl::InvalidArgumentError("item_ids: empty");
  if (req.item_ids_size() > limits_.max_upsert_batch) {
    return absl::InvalidArgumentError(absl::StrCat("item_ids: ", req.item_ids_size(),
                                                   " entries exceed the maximum of ",
                                                   limits_.max_upsert_batch));
  }
  // A repeated id is refused like in UpsertItems: it is a caller bug, and it would make
  // `deleted` ("ids that were present") ambiguous.
  if (auto s = CheckItemIds(req.item_ids(), "item_ids", true); !s.ok()) return s;
  for (int attempt = 0;; ++attempt) {
    auto pinned = Pin();
    if (!pinned.ok()) return pinned.status();
    absl::StatusOr<int64_t> removed;
    if (writes_ != nullptr) {
      removed = writes_->Delete(*pinned, req, *versions_);
      if (absl::IsAborted(removed.status()) && attempt < 3) continue;
    } else {
      removed = (*pinned)->index->Remove(
          absl::MakeConstSpan(req.item_ids().data(), req.item_ids_size()));
    }
    if (!removed.ok()) return removed.status();
    resp->set_deleted(static_cast<int32_t>(*removed));
    resp->set_index_generation((*pinned)->index->generation());
    return absl::OkStatus();
  }
}

int64_t RecallEngine::LiveItems() const {
  std::shared_ptr<Servable> s = versions_->Current();
  return s ? s->index->size() : 0;
}

void RecallEngine::ReportIndexSize(Metrics* metrics) const {
  std::shared_ptr<Servable> s = versions_->Current();
  if (s) metrics->SetIndexItems(s->index->size(), s->index->num_hidden());
  if (writes_) metrics->SetWalSize(writes_->wal_stats().file_bytes);
}

absl::Status RecallEngine::GetIndexInfo(recall::v1::GetIndexInfoResponse* resp) const {
  auto pinned = Pin();
  if (!pinned.ok()) return pinned.status();
  const Servable& s = **pinned;
  resp->set_model_version(s.version());
  resp->set_num_items(s.index->size());
  resp->set_num_hidden(s.index->num_hidden());
  resp->set_dim(s.index->dim());
  resp->set_index_factory(s.model->manifest().index_factory());
  resp->set_index_generation(s.index->generation());
  *resp->mutable_feature_spec() = s.model->manifest().feature_spec();
  *resp->mutable_eval() = s.model->manifest().eval();
  return absl::OkStatus();
}

}  // namespace recall::server
