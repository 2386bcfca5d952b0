#include "trainer/objective.h"

#include <algorithm>
#include <cmath>

namespace recall::trainer {

Objective::Objective(const recall::v1::TrainConfig& config, const ExampleBatches& batches,
                     Towers* towers)
    : config_(config), batches_(batches), towers_(*towers) {
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
                              std::mt19937_64& rng) {
  UserBatch ub = batches_.TrainUserBatch(users, items, rng);
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
    for (auto& i : drawn) i = static_cast<int64_t>(UniformBelow(rng, batches_.dataset().num_items));
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
  ItemBatch ib = batches_.TrainItemBatch(all, owners, rng);
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
  if (config_.loss() == recall::v1::TrainConfig::FULL_SOFTMAX) {
    loss = FullSoftmaxLoss(u, towers_.item.forward(AllItemsBatch().Inputs()).toTensor(), ids,
                           config_.temperature());
  } else if (config_.loss() == recall::v1::TrainConfig::CCL) {
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
      for (int64_t user : users) opt.row_positives.push_back(&batches_.fit().train[user]);
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
    ItemBatch pos = batches_.TrainItemBatch(items, users, rng);
    // Views are compared by their unit vectors only: the bias coordinate would add
    // tau * b_i * b_j to each pair.
    auto view = [&] {
      return towers_.item.forward(batches_.MaskedView(pos, rng).Inputs())
          .toTensor()
          .narrow(1, 0, config_.tower().dim());
    };
    torch::Tensor a = view();
    torch::Tensor c = view();
    loss = loss + config_.item_ssl_weight() * InfoNceLoss(ContrastiveLogits(a, c, ids, {}, {}, ssl));
  }
  if (config_.user_ssl_weight() > 0) {
    torch::Tensor a = towers_.user.forward(batches_.MaskedView(ub, rng).Inputs()).toTensor();
    torch::Tensor c = towers_.user.forward(batches_.MaskedView(ub, rng).Inputs()).toTensor();
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
                                   batches_.KeyItemBatch(items).Inputs())
                                   .toTensor();
    queue_.Enqueue(keys, ids);
  }
  return loss;
}

void Objective::AfterStep() {
  if (config_.queue_size() > 0 && !config_.queue_reencode()) {
    MomentumUpdate(towers_.item, key_tower_, config_.momentum());
  }
}

}  // namespace recall::trainer
