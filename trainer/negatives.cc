#include "trainer/negatives.h"

#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace recall::trainer {

KeyQueue::KeyQueue(int64_t capacity, int64_t dim)
    : capacity_(capacity),
      keys_(torch::zeros({capacity, dim}, torch::kFloat32)),
      ids_(torch::full({capacity}, -1, torch::kInt64)) {}

void KeyQueue::Enqueue(const torch::Tensor& keys, const torch::Tensor& ids) {
  if (capacity_ == 0) return;
  torch::NoGradGuard no_grad;
  int64_t n = keys.size(0);
  torch::Tensor k = keys.detach(), i = ids;
  if (n > capacity_) {
    k = k.narrow(0, n - capacity_, capacity_);
    i = i.narrow(0, n - capacity_, capacity_);
    n = capacity_;
  }
  // At most two contiguous copies: up to the end of the ring, then from its start.
  const int64_t first = std::min(n, capacity_ - head_);
  keys_.narrow(0, head_, first).copy_(k.narrow(0, 0, first));
  ids_.narrow(0, head_, first).copy_(i.narrow(0, 0, first));
  if (first < n) {
    keys_.narrow(0, 0, n - first).copy_(k.narrow(0, first, n - first));
    ids_.narrow(0, 0, n - first).copy_(i.narrow(0, first, n - first));
  }
  head_ = (head_ + n) % capacity_;
  size_ = std::min(capacity_, size_ + n);
}

torch::Tensor KeyQueue::IdsOldestFirst() const {
  if (size_ < capacity_ || capacity_ == 0) return ids_.narrow(0, 0, size_).clone();
  return torch::cat({ids_.narrow(0, head_, capacity_ - head_), ids_.narrow(0, 0, head_)});
}

torch::Tensor KeyQueue::state_cursor() const {
  return torch::tensor({head_, size_}, torch::kInt64);
}

void KeyQueue::Restore(const torch::Tensor& keys, const torch::Tensor& ids,
                       const torch::Tensor& cursor) {
  if (keys.dim() != 2 || ids.dim() != 1 || keys.size(0) != ids.size(0) || cursor.numel() != 2) {
    throw std::invalid_argument("KeyQueue::Restore: inconsistent queue state");
  }
  keys_ = keys.to(torch::kFloat32).contiguous().clone();
  ids_ = ids.to(torch::kInt64).contiguous().clone();
  capacity_ = keys_.size(0);
  head_ = cursor[0].item<int64_t>();
  size_ = cursor[1].item<int64_t>();
  if (head_ < 0 || size_ < 0 || size_ > capacity_ || (capacity_ > 0 && head_ >= capacity_)) {
    throw std::invalid_argument("KeyQueue::Restore: cursor out of range");
  }
}

void MomentumUpdate(const torch::jit::Module& online, torch::jit::Module& key_encoder, double m) {
  torch::NoGradGuard no_grad;
  std::unordered_map<std::string, torch::Tensor> source;
  for (const auto& p : online.named_parameters()) source.emplace(p.name, p.value);
  for (const auto& p : key_encoder.named_parameters()) {
    auto it = source.find(p.name);
    if (it == source.end()) throw std::invalid_argument("MomentumUpdate: no parameter " + p.name);
    p.value.mul_(m).add_(it->second, 1.0 - m);
  }
}

torch::Tensor ContrastiveLogits(const torch::Tensor& user, const torch::Tensor& pos,
                                const torch::Tensor& pos_ids, const NegativeSet& queue,
                                const NegativeSet& global, const ContrastiveOptions& options) {
  const int64_t b = user.size(0);
  const auto present = [](const NegativeSet& s) {
    return s.embeddings.defined() && s.embeddings.size(0) > 0;
  };
  std::vector<torch::Tensor> columns = {pos};
  std::vector<torch::Tensor> column_ids = {pos_ids};
  if (present(queue)) {
    columns.push_back(queue.embeddings);
    column_ids.push_back(queue.ids);
  }
  if (present(global)) {
    columns.push_back(global.embeddings);
    column_ids.push_back(global.ids);
  }
  const torch::Tensor cand = columns.size() == 1 ? pos : torch::cat(columns, 0);
  const torch::Tensor ids = column_ids.size() == 1 ? pos_ids : torch::cat(column_ids, 0);
  // Everything per column rides in the one GEMM: 1/tau scales the user side ([B, d], not
  // [B, C]), and the logQ correction is one more coordinate (user 1, column -log q). On a
  // [2048, 10k] batch each full-size pass costs several percent of the step.
  torch::Tensor user_side = user / options.temperature;
  torch::Tensor column_side = cand;
  if (options.log_q.defined()) {
    const int64_t q_cols = present(queue) ? queue.embeddings.size(0) : 0;
    const int64_t m_cols = present(global) ? global.embeddings.size(0) : 0;
    // Empty queue slots carry id -1: clamp for the lookup, they are masked below anyway.
    torch::Tensor lq = options.log_q.index_select(0, ids.clamp_min(0));
    if (m_cols > 0) {
      // In-batch columns: pos's rows (every rank's when they are gathered), not the rows'.
      const double uniform_share =
          static_cast<double>(m_cols) /
          (static_cast<double>(options.log_q.size(0)) * (pos.size(0) + q_cols));
      lq = torch::log(torch::exp(lq) + uniform_share);
    }
    user_side = torch::cat({user_side, torch::ones({b, 1}, user.options())}, 1);
    if (options.log_q_weight != 1.0) lq = lq * options.log_q_weight;
    column_side = torch::cat({column_side, -lq.unsqueeze(1).to(cand.dtype())}, 1);
  }
  torch::Tensor logits = torch::matmul(user_side, column_side.t());

  // Accidental hits: any column holding the row's positive item except the row's own target.
  // Found through a hash of column ids (O(B + C) plus the hits) instead of a [B, C] comparison
  // and a masked fill: two full passes over the logits saved, ~16% of a step at C = 10k
  // (bench/train_throughput.sh: 1.22x -> 1.45x the PyTorch peer).
  const torch::Tensor col_ids = ids.contiguous();
  const torch::Tensor row_ids = pos_ids.contiguous();
  const int64_t* cid = col_ids.data_ptr<int64_t>();
  // Row r's own positive is column target_offset + r.
  const int64_t* rid = row_ids.data_ptr<int64_t>() + options.target_offset;
  const int64_t c = col_ids.numel();
  // With row_positives every column id is indexed (a user's positives can be any column);
  // otherwise only the rows' own positives can be hits.
  const bool known = !options.row_positives.empty();
  if (known && static_cast<int64_t>(options.row_positives.size()) != b) {
    throw std::invalid_argument("ContrastiveLogits: row_positives needs one entry per row");
  }
  absl::flat_hash_map<int64_t, std::vector<int64_t>> columns_of;
  columns_of.reserve(static_cast<size_t>(known ? c : b));
  if (!known) {
    for (int64_t r = 0; r < b; ++r) columns_of.try_emplace(rid[r]);
  }
  std::vector<int64_t> empty_cols, hit_rows, hit_cols;
  for (int64_t j = 0; j < c; ++j) {
    if (cid[j] < 0) {
      empty_cols.push_back(j);  // empty queue slots: only while the queue fills
    } else if (known) {
      columns_of[cid[j]].push_back(j);
    } else if (auto it = columns_of.find(cid[j]); it != columns_of.end()) {
      it->second.push_back(j);
    }
  }
  const auto mask_item = [&](int64_t r, int64_t item) {
    auto it = columns_of.find(item);
    if (it == columns_of.end()) return;
    for (int64_t j : it->second) {
      if (j == r + options.target_offset) continue;
      hit_rows.push_back(r);
      hit_cols.push_back(j);
    }
  };
  for (int64_t r = 0; r < b; ++r) {
    mask_item(r, rid[r]);
    if (!known || options.row_positives[r] == nullptr) continue;
    for (int64_t item : *options.row_positives[r]) {
      if (item != rid[r]) mask_item(r, item);
    }
  }
  // In place: the GEMM's backward does not need its output.
  if (!hit_rows.empty()) {
    logits.index_put_({torch::tensor(hit_rows, torch::kInt64), torch::tensor(hit_cols, torch::kInt64)},
                      torch::scalar_tensor(kMaskedLogit, logits.options()));
  }
  if (!empty_cols.empty()) {
    logits.index_fill_(1, torch::tensor(empty_cols, torch::kInt64), kMaskedLogit);
  }
  return logits;
}

torch::Tensor CosineContrastiveLoss(const torch::Tensor& user, const torch::Tensor& pos,
                                    const torch::Tensor& pos_ids, const NegativeSet& queue,
                                    const NegativeSet& global, double margin, double weight) {
  std::vector<torch::Tensor> columns, column_ids;
  for (const NegativeSet* s : {&queue, &global}) {
    if (s->embeddings.defined() && s->embeddings.size(0) > 0) {
      columns.push_back(s->embeddings);
      column_ids.push_back(s->ids);
    }
  }
  const torch::Tensor positive_term = 1 - (user * pos).sum(1);
  if (columns.empty()) return positive_term.mean();
  const torch::Tensor cand = columns.size() == 1 ? columns[0] : torch::cat(columns, 0);
  const torch::Tensor ids = column_ids.size() == 1 ? column_ids[0] : torch::cat(column_ids, 0);
  // valid[r, j]: column j is a real negative of row r (not its positive, not an empty slot).
  const torch::Tensor valid =
      (ids.unsqueeze(0) != pos_ids.unsqueeze(1)).logical_and(ids.unsqueeze(0) >= 0).to(torch::kFloat32);
  const torch::Tensor hinge = torch::relu(torch::mm(user, cand.t()) - margin) * valid;
  const torch::Tensor negative_term = hinge.sum(1) / valid.sum(1).clamp_min(1.0);
  return (positive_term + weight * negative_term).mean();
}

torch::Tensor FullSoftmaxLoss(const torch::Tensor& user, const torch::Tensor& all_items,
                              const torch::Tensor& pos_ids, double temperature) {
  // 1/tau on the [B, d] side, not on the [B, N] logits: one full-size pass fewer.
  const torch::Tensor logits = torch::matmul(user / temperature, all_items.t());
  return torch::nn::functional::cross_entropy(logits, pos_ids);
}

torch::Tensor InfoNceLoss(const torch::Tensor& logits, int64_t target_offset) {
  torch::Tensor target = torch::arange(target_offset, target_offset + logits.size(0), torch::kInt64);
  return torch::nn::functional::cross_entropy(logits, target);
}

}  // namespace recall::trainer
