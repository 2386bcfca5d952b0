#include "trainer/objective.h"

#include <algorithm>
#include <cmath>

namespace recall::trainer {

Objective::Objective(const recall::v1::TrainConfig& config, const ExampleBatches& batches,
                     Towers* towers, Collective* collective)
    : config_(config), batches_(batches), towers_(*towers), collective_(collective) {
  const Dataset& d = batches.dataset();
  const Dataset& fit = batches.fit();
  const std::vector<std::pair<int64_t, int64_t>> examples = batches.TrainExamples();
  {
    // log of each entity's share of the training examples (an entity never seen counts once).
    const double total = static_cast<double>(examples.size());
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
    log_q_ = log_share(popularity);
    if (config_.item_to_user_weight() > 0) {
      std::vector<int64_t> activity(d.num_users, 0);
      for (const auto& [u, i] : examples) ++activity[u];
      log_q_users_ = log_share(activity);
    }
    if (config_.item_neighbor_weight() > 0) {
      // From the fit split only: the validation items must not link anything.
      item_neighbors_ = ItemNeighbors::Build(fit.train, d.num_items, config_.item_neighbors());
      // DrawShare is linear: popularity counts in, expected neighbour-draw counts out. An
      // item never drawn is never a column; log_share's floor only keeps the table finite.
      log_q_neighbors_ = log_share(item_neighbors_.DrawShare(
          std::vector<double>(popularity.begin(), popularity.end())));
    }
  }
  if (config_.queue_size() > 0) {
    key_tower_ = towers_.item.deepcopy();
    queue_ = KeyQueue(config_.queue_size(), OutputDim(config_.tower()));
  }
}

const ItemBatch& Objective::AllItemsBatch() {
  if (!all_items_batch_) {
    std::vector<int64_t> all(batches_.dataset().num_items);
    for (int64_t i = 0; i < static_cast<int64_t>(all.size()); ++i) all[i] = i;
    all_items_batch_ = std::make_unique<ItemBatch>(batches_.KeyItemBatch(all));
  }
  return *all_items_batch_;
}

torch::Tensor Objective::Loss(const std::vector<int64_t>& users, const std::vector<int64_t>& items,
                              const DrawKeys& keys) {
  const std::vector<uint64_t>& row_keys = keys.rows;
  UserBatch ub = batches_.TrainUserBatch(users, items, row_keys);
  torch::Tensor ids = torch::from_blob(const_cast<int64_t*>(items.data()),
                                       {static_cast<int64_t>(items.size())}, torch::kInt64)
                          .clone();
  // One item-tower forward for positives, re-encoded queue ids, global negatives and
  // neighbours; each row draws its audience from its own key.
  std::vector<int64_t> all(items);
  std::vector<uint64_t> all_keys(row_keys);
  const bool reencode = config_.queue_size() > 0 && config_.queue_reencode() && queue_.size() > 0;
  std::vector<int64_t> queued_ids;
  if (reencode) {
    torch::Tensor qi = queue_.ids().contiguous();
    queued_ids.assign(qi.data_ptr<int64_t>(), qi.data_ptr<int64_t>() + qi.numel());
    all.insert(all.end(), queued_ids.begin(), queued_ids.end());
    const std::vector<uint64_t> k = keys.StepRows(DrawPurpose::kQueueAudience, qi.numel());
    all_keys.insert(all_keys.end(), k.begin(), k.end());
  }
  // Global negatives are drawn once per step, the same on every rank: each rank encodes them
  // and the averaged gradient is the one-process gradient.
  NegativeSet global;
  if (config_.global_negatives() > 0) {
    std::vector<int64_t> drawn(config_.global_negatives());
    RowRng rng(keys.step, DrawPurpose::kGlobalNegatives);
    for (auto& i : drawn) i = static_cast<int64_t>(UniformBelow(rng, batches_.dataset().num_items));
    all.insert(all.end(), drawn.begin(), drawn.end());
    const std::vector<uint64_t> k = keys.StepRows(DrawPurpose::kGlobalAudience, drawn.size());
    all_keys.insert(all_keys.end(), k.begin(), k.end());
    global.ids = torch::tensor(drawn, torch::kInt64);
  }
  // Item-item neighbours (UltraGCN): one per row, encoded in the same forward; the row's own
  // user is kept out of their audiences as out of the positives'.
  std::vector<int64_t> owners(users);
  std::vector<int64_t> neighbors;
  if (config_.item_neighbor_weight() > 0) {
    neighbors.resize(items.size());
    for (size_t r = 0; r < items.size(); ++r) {
      RowRng rng(row_keys[r], DrawPurpose::kNeighbor);
      neighbors[r] = item_neighbors_.Sample(items[r], rng());
      all_keys.push_back(MixKey(row_keys[r], static_cast<uint64_t>(DrawPurpose::kNeighbor)));
    }
    owners.resize(all.size(), -1);
    owners.insert(owners.end(), users.begin(), users.end());
    all.insert(all.end(), neighbors.begin(), neighbors.end());
  }
  ItemBatch ib = batches_.TrainItemBatch(all, owners, all_keys);
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

  // This batch's keys, MoCo's keys of the positives: every rank's in rank order for the queue,
  // and for the user side's columns when the in-batch columns are gathered.
  torch::Tensor every_rank_keys;
  if (config_.queue_size() > 0 && !config_.queue_reencode()) {
    torch::NoGradGuard no_grad;
    every_rank_keys = GatherNoGradient(
        collective_, key_tower_.forward(batches_.KeyItemBatch(items).Inputs()).toTensor());
  }

  // In-batch columns: this rank's, or every rank's in rank order (row r's target is then
  // column rank * b + r), which makes the loss the one-process loss of the global batch.
  Collective* const gather = config_.gather_negatives() ? collective_ : nullptr;
  const int64_t target = gather != nullptr ? collective_->rank() * b : 0;
  auto columns = [&](const torch::Tensor& local) { return GatherWithGradient(gather, local); };
  auto column_ids = [&](const torch::Tensor& local) { return GatherNoGradient(gather, local); };
  // The user side's key columns: every_rank_keys, or this rank's slice of it.
  const torch::Tensor key_columns =
      !every_rank_keys.defined() || gather != nullptr || collective_ == nullptr
          ? every_rank_keys
          : every_rank_keys.narrow(0, collective_->rank() * b, b);

  torch::Tensor loss;
  if (config_.loss() == recall::v1::TrainConfig::FULL_SOFTMAX) {
    loss = FullSoftmaxLoss(u, towers_.item.forward(AllItemsBatch().Inputs()).toTensor(), ids,
                           config_.temperature());
  } else if (config_.loss() == recall::v1::TrainConfig::CCL) {
    loss = CosineContrastiveLoss(u, v, ids, queued, global, config_.ccl_margin(),
                                 config_.ccl_negative_weight());
  } else {
    ContrastiveOptions opt;
    opt.temperature = config_.temperature();
    opt.target_offset = target;
    if (config_.logq_correction()) {
      opt.log_q = log_q_;
      opt.log_q_weight = config_.logq_weight();
    }
    if (config_.mask_user_positives()) {
      opt.row_positives.reserve(users.size());
      for (int64_t user : users) opt.row_positives.push_back(&batches_.fit().train[user]);
    }
    const torch::Tensor v_cols = columns(v), col_ids = column_ids(ids);
    if (queued.embeddings.defined() && !reencode) {
      // Momentum keys carry no gradient, so they can only teach the user tower. Were the item
      // tower's gradient taken from the same softmax, the keys' share of it (Q / (B + Q) of
      // the negatives' mass once the keys are fresh) would vanish from the item side: the
      // positives would keep their full pull while the in-batch repulsion shrank by that share,
      // and the item embeddings would contract (TRAINING.md "Why the key queue collapsed").
      // So each tower gets its own softmax. Users, as MoCo's queries, score this batch's keys
      // and the queue's, all from the key encoder: were the positive the online tower's output
      // among momentum keys, "online vs lagging encoder" would itself tell the positive apart.
      // Items score against the in-batch users alone, with the in-batch normalizer.
      NegativeSet global_fixed = global;
      if (global.embeddings.defined()) global_fixed.embeddings = global.embeddings.detach();
      const torch::Tensor user_side =
          InfoNceLoss(ContrastiveLogits(u, key_columns, col_ids, queued, global_fixed, opt), target);
      const torch::Tensor item_side =
          InfoNceLoss(ContrastiveLogits(u.detach(), v_cols, col_ids, {}, global, opt), target);
      // The value is the user side's (the softmax over every negative); the gradient both.
      loss = user_side + (item_side - item_side.detach());
    } else {
      loss = InfoNceLoss(ContrastiveLogits(u, v_cols, col_ids, queued, global, opt), target);
    }
    if (config_.item_to_user_weight() > 0) {
      ContrastiveOptions reverse;
      reverse.temperature = config_.temperature();
      reverse.target_offset = target;
      if (config_.logq_correction()) reverse.log_q = log_q_users_;
      torch::Tensor uids = torch::tensor(users, torch::kInt64);
      loss = loss + config_.item_to_user_weight() *
                        InfoNceLoss(ContrastiveLogits(v, columns(u), column_ids(uids), {}, {}, reverse),
                                    target);
    }
    if (!neighbors.empty()) {
      ContrastiveOptions nb = opt;
      if (config_.logq_correction()) nb.log_q = log_q_neighbors_;
      loss = loss + config_.item_neighbor_weight() *
                        InfoNceLoss(ContrastiveLogits(u, columns(v_neighbors),
                                                      column_ids(torch::tensor(neighbors, torch::kInt64)),
                                                      {}, {}, nb),
                                    target);
    }
  }
  ContrastiveOptions ssl;
  ssl.temperature = config_.temperature();
  ssl.target_offset = target;
  if (config_.item_ssl_weight() > 0) {
    std::vector<uint64_t> ssl_keys(row_keys.size());
    for (size_t r = 0; r < row_keys.size(); ++r) {
      ssl_keys[r] = MixKey(row_keys[r], static_cast<uint64_t>(DrawPurpose::kSslItems));
    }
    ItemBatch pos = batches_.TrainItemBatch(items, users, ssl_keys);
    // Views are compared by their unit vectors only: the bias coordinate would add
    // tau * b_i * b_j to each pair.
    auto view = [&](DrawPurpose which) {
      return towers_.item.forward(batches_.MaskedView(pos, row_keys, which).Inputs())
          .toTensor()
          .narrow(1, 0, config_.tower().dim());
    };
    torch::Tensor a = view(DrawPurpose::kSslViewA);
    torch::Tensor c = view(DrawPurpose::kSslViewB);
    loss = loss + config_.item_ssl_weight() *
                      InfoNceLoss(ContrastiveLogits(a, columns(c), column_ids(ids), {}, {}, ssl), target);
  }
  if (config_.user_ssl_weight() > 0) {
    torch::Tensor a = towers_.user.forward(
        batches_.MaskedView(ub, row_keys, DrawPurpose::kSslViewA).Inputs()).toTensor();
    torch::Tensor c = towers_.user.forward(
        batches_.MaskedView(ub, row_keys, DrawPurpose::kSslViewB).Inputs()).toTensor();
    torch::Tensor uids = torch::tensor(users, torch::kInt64);
    loss = loss + config_.user_ssl_weight() *
                      InfoNceLoss(ContrastiveLogits(a, columns(c), column_ids(uids), {}, {}, ssl), target);
  }
  if (config_.queue_size() > 0) {
    // Keys of this batch join the queue after it was used (MoCo): a row never meets its own
    // key, and the queue's contents lag the online tower by design. Every rank enqueues every
    // rank's keys in rank order, so the queues stay identical. The re-encoding variant only
    // needs the ids: it stores the online embeddings, which it never reads.
    torch::NoGradGuard no_grad;
    queue_.Enqueue(config_.queue_reencode() ? GatherNoGradient(collective_, v.detach()) : every_rank_keys,
                   GatherNoGradient(collective_, ids));
  }
  return loss;
}

void Objective::AfterStep() {
  if (config_.queue_size() > 0 && !config_.queue_reencode()) {
    MomentumUpdate(towers_.item, key_tower_, config_.momentum());
  }
}

}  // namespace recall::trainer
