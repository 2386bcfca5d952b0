// Negatives for the contrastive loss: the MoCo key queue, the momentum update of the key
// encoder, and the logits of one batch against every negative source with logQ correction and
// accidental-hit masking.
//
// The loss of a batch of B (user, positive item) pairs is softmax cross-entropy over
//   [ B in-batch positives | Q queue keys | M uniform global negatives ]
// with the row's own positive (column r of the in-batch block) as the target. Every column j
// holding item i gets, when logQ is on, the correction  - log(q(i) + M / (N * (B + Q)))
// where q(i) is item i's share of train interactions: in-batch and queue columns are drawn in
// proportion to q, uniform ones with probability 1/N, so this is minus the log of each item's
// expected count among the negatives up to a constant (which softmax ignores). Without
// queue and global negatives it is exactly -log q(i), the correction of Yi et al. (2019).
// Columns holding the row's own positive item (the same item twice in a batch, a queue key of
// it, a global draw of it) are accidental hits and masked out; so is an empty queue slot.
// Optionally (ContrastiveOptions::row_positives) so is any column holding another known
// positive of the row's user: a false negative, which would push the user away from an item
// it interacted with.
#ifndef RECALL_TRAINER_NEGATIVES_H_
#define RECALL_TRAINER_NEGATIVES_H_

#include <torch/script.h>
#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace recall::trainer {

// FIFO ring of the last `capacity` keys (L2-normalized item embeddings from the momentum
// encoder) with the item id each key encodes. Not thread-safe.
class KeyQueue {
 public:
  KeyQueue() : KeyQueue(0, 0) {}  // capacity 0: Enqueue is a no-op, size() stays 0
  KeyQueue(int64_t capacity, int64_t dim);

  // Appends keys [n, dim] (detached, copied) with ids [n]; the oldest entries are overwritten
  // once the queue is full. n > capacity keeps the last `capacity` rows.
  void Enqueue(const torch::Tensor& keys, const torch::Tensor& ids);

  int64_t capacity() const { return capacity_; }
  int64_t size() const { return size_; }
  // The filled slots in storage order ([size, dim] and [size]); views, valid until the next
  // Enqueue. Slot order does not matter to the loss.
  torch::Tensor keys() const { return keys_.narrow(0, 0, size_); }
  torch::Tensor ids() const { return ids_.narrow(0, 0, size_); }
  // Ids oldest first (for tests and inspection).
  torch::Tensor IdsOldestFirst() const;

  // Checkpointing: the whole state as tensors, and back.
  torch::Tensor state_keys() const { return keys_; }
  torch::Tensor state_ids() const { return ids_; }
  torch::Tensor state_cursor() const;  // int64 [2] = {head, size}
  void Restore(const torch::Tensor& keys, const torch::Tensor& ids, const torch::Tensor& cursor);

 private:
  int64_t capacity_ = 0;
  int64_t head_ = 0;  // next slot to write
  int64_t size_ = 0;
  torch::Tensor keys_;  // [capacity, dim] float32
  torch::Tensor ids_;   // [capacity] int64, -1 = empty
};

// key_param = m * key_param + (1 - m) * online_param for every parameter, matched by name.
// Both modules must have the same parameters (the key encoder is a deep copy of the online one).
void MomentumUpdate(const torch::jit::Module& online, torch::jit::Module& key_encoder, double m);

struct NegativeSet {
  torch::Tensor embeddings;  // [n, dim]; undefined or n = 0 means none
  torch::Tensor ids;         // [n] int64 item ids (dense dataset ids)
};

struct ContrastiveOptions {
  double temperature = 0.1;
  // log q(i) for every dense item id ([num_items]); undefined = no logQ correction.
  torch::Tensor log_q;
  // alpha: the correction subtracted is alpha * log q(i). 1 = the full correction (Yi et al.
  // 2019, an estimate of the unbiased softmax); below 1 keeps part of the popularity prior in
  // the learned scores, which full-ranking metrics on popularity-skewed test sets can reward.
  double log_q_weight = 1.0;
  // Empty, or one entry per row: the row's other known positives (sorted or not; may include
  // the row's own target, which stays unmasked in its own column; nullptr = none), masked
  // wherever they appear as a column. Pointers must outlive the call.
  std::vector<const std::vector<int64_t>*> row_positives;
  // The column of row 0's target (row r's is target_offset + r): 0, or rank * B when the
  // in-batch columns are gathered from every rank.
  int64_t target_offset = 0;
};

// The [B, B + Q + M] logits described above. user, pos: [B, dim]; pos_ids: [B] int64.
torch::Tensor ContrastiveLogits(const torch::Tensor& user, const torch::Tensor& pos,
                                const torch::Tensor& pos_ids, const NegativeSet& queue,
                                const NegativeSet& global, const ContrastiveOptions& options);

// Mean InfoNCE over rows whose target is column target_offset + r (the in-batch diagonal).
torch::Tensor InfoNceLoss(const torch::Tensor& logits, int64_t target_offset = 0);

// Mean exact softmax cross-entropy of each row's positive among every item:
// -log softmax(user @ all_items^T / temperature)[r, pos_ids[r]]. all_items: [N, dim], row i =
// dense item i; pos_ids: [B] dense item ids.
torch::Tensor FullSoftmaxLoss(const torch::Tensor& user, const torch::Tensor& all_items,
                              const torch::Tensor& pos_ids, double temperature);

// SimpleX's cosine contrastive loss, mean over rows r of
//   (1 - cos(user_r, pos_r)) + weight * mean_j max(0, cos(user_r, neg_j) - margin)
// with neg_j the queue and global columns (not the in-batch ones); columns holding row r's own
// positive and empty queue slots are left out of row r's mean. Inputs L2-normalized.
torch::Tensor CosineContrastiveLoss(const torch::Tensor& user, const torch::Tensor& pos,
                                    const torch::Tensor& pos_ids, const NegativeSet& queue,
                                    const NegativeSet& global, double margin, double weight);

// Value used for masked logits: finite so a fully masked row cannot produce NaN, far below any
// real logit.
inline constexpr float kMaskedLogit = -1e9f;

}  // namespace recall::trainer

#endif  // RECALL_TRAINER_NEGATIVES_H_
