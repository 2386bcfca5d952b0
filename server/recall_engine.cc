#include "server/recall_engine.h"

#include <algorithm>
#include <chrono>
#include <vector>

namespace recall::server {
namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

static_assert(kReservedItemId == EmbeddingIndex::kReservedId,
              "request_checks.h's reserved item id must be the index's");

}  // namespace

absl::StatusOr<std::shared_ptr<Servable>> RecallEngine::Pin() const {
  std::shared_ptr<Servable> s = versions_->Current();
  if (!s) return absl::UnavailableError("no model version is loaded yet");
  return s;
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
  for (size_t i = 0; i < n; ++i) statuses[i] = ValidateRecallRequest(*reqs[i], limits_);
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
    if (statuses[i].ok()) statuses[i] = ValidateRecallUser(*reqs[i], limits_, enc);
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
  // Read before the search: every write up to it is in the index the search reads.
  const uint64_t applied = writes_ != nullptr ? writes_->applied_sequence() : 0;
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
    resp->set_applied_write_sequence(applied);
    resp->set_request_id(req.request_id());
    if (req.return_user_embedding()) {
      resp->mutable_user_embedding()->Add(e + r * dim, e + (r + 1) * dim);
    }
    if (probe_ != nullptr) {
      probe_->Offer(s.version(), absl::MakeConstSpan(e + r * dim, dim), req.k(),
                    any_excludes ? absl::MakeConstSpan(excludes[r]) : absl::Span<const int64_t>());
    }
  }
}

absl::Status RecallEngine::UpsertItems(const recall::v1::UpsertItemsRequest& req,
                                       recall::v1::UpsertItemsResponse* resp,
                                       absl::Time deadline) const {
  // The checks that need no model first, so a malformed batch is refused even before the
  // first version is loaded.
  if (auto st = ValidateUpsertBatch(req, limits_); !st.ok()) return st;
  auto pinned = Pin();
  if (!pinned.ok()) return pinned.status();
  const Servable& s = **pinned;
  const FeatureEncoder& enc = s.model->encoder();
  const int dim = s.model->dim();
  // Validate everything before changing anything: a request is applied whole or not at all.
  // The log carries the request itself, so every replica (and every later version) embeds the
  // feature items with its own item tower.
  std::vector<const recall::v1::ItemFeatures*> feature_items;
  if (auto st = ValidateUpsertRequest(req, limits_, enc, dim,
                                       s.model->manifest().score_offset_stride(), s.version(),
                                       &feature_items);
      !st.ok()) {
    return st;
  }
  if (writes_ != nullptr) {
    recall::v1::WriteAheadRecord rec;
    *rec.mutable_upsert() = req;
    auto w = writes_->Write(rec, deadline);
    if (!w.ok()) return w.status();
    resp->set_write_sequence(w->seq);
    resp->set_duplicate(w->duplicate);
  } else {
    // No write store (in-process use): applied to the live index only.
    std::vector<float> feature_vectors;
    if (!feature_items.empty()) {
      auto emb = s.model->EmbedItems(enc.EncodeItems(feature_items));
      if (!emb.ok()) return emb.status();
      const float* p = emb->data_ptr<float>();
      feature_vectors.assign(p, p + emb->numel());
    }
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
  std::shared_ptr<Servable> now = versions_->Current();
  resp->set_index_generation(now ? now->index->generation() : 0);
  resp->set_model_version(now ? now->version() : s.version());
  return absl::OkStatus();
}

absl::Status RecallEngine::DeleteItems(const recall::v1::DeleteItemsRequest& req,
                                       recall::v1::DeleteItemsResponse* resp,
                                       absl::Time deadline) const {
  if (auto s = ValidateDeleteRequest(req, limits_); !s.ok()) return s;
  auto pinned = Pin();
  if (!pinned.ok()) return pinned.status();
  if (writes_ != nullptr) {
    recall::v1::WriteAheadRecord rec;
    *rec.mutable_delete_() = req;
    auto w = writes_->Write(rec, deadline);
    if (!w.ok()) return w.status();
    resp->set_deleted(static_cast<int32_t>(w->deleted));
    resp->set_write_sequence(w->seq);
    resp->set_duplicate(w->duplicate);
  } else {
    auto removed = (*pinned)->index->Remove(
        absl::MakeConstSpan(req.item_ids().data(), req.item_ids_size()));
    if (!removed.ok()) return removed.status();
    resp->set_deleted(static_cast<int32_t>(*removed));
  }
  std::shared_ptr<Servable> now = versions_->Current();
  resp->set_index_generation(now ? now->index->generation() : 0);
  return absl::OkStatus();
}

void RecallEngine::WhenApplied(uint64_t min_write_sequence, absl::Time deadline,
                               std::function<void(absl::Status)> done) const {
  if (writes_ == nullptr || min_write_sequence == 0) return done(absl::OkStatus());
  writes_->WhenApplied(min_write_sequence, deadline, std::move(done));
}

int64_t RecallEngine::LiveItems() const {
  std::shared_ptr<Servable> s = versions_->Current();
  return s ? s->index->size() : 0;
}

void RecallEngine::ReportIndexSize(Metrics* metrics) const {
  std::shared_ptr<Servable> s = versions_->Current();
  if (s) metrics->SetIndexItems(s->index->size(), s->index->num_hidden());
}

absl::Status RecallEngine::GetIndexInfo(const recall::v1::GetIndexInfoRequest& req,
                                        recall::v1::GetIndexInfoResponse* resp) const {
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
  for (const auto& [name, value] : s.index->SearchParameters()) {
    (*resp->mutable_search_params())[name] = value;
  }
  if (s.model->manifest().has_index_tuning()) {
    *resp->mutable_index_tuning() = s.model->manifest().index_tuning();
  }
  resp->set_probe_recall(-1);
  if (probe_ != nullptr) {
    const RecallProbe::Result p = probe_->last();
    if (p.version == s.version() && p.recall >= 0) {
      resp->set_probe_recall(p.recall);
      resp->set_probe_queries(p.queries);
    }
  }
  if (writes_ != nullptr) {
    resp->set_write_log(writes_->log().Describe());
    resp->set_online_items(writes_->tracked_items());
    if (auto last = writes_->log().LastSequence(); last.ok()) {
      resp->set_write_log_last_sequence(*last);
    }
    uint64_t applied = writes_->applied_sequence();
    if (req.online_state_digest()) {
      resp->set_online_state_digest(writes_->OnlineStateDigest(s, &applied));
    }
    resp->set_applied_write_sequence(applied);
  }
  return absl::OkStatus();
}

}  // namespace recall::server
