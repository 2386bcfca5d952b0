// Objective: the loss of one batch of (user, positive item) pairs, and the state that loss
// keeps between batches. It owns the logQ tables (each item's, user's and neighbour draw's log
// sampling share), the UltraGCN neighbour graph of the auxiliary term, and MoCo's key encoder
// and key queue. The losses themselves are trainer/negatives.h's; TRAINING.md explains each.
//
// Thread-safety: not thread-safe; one training thread drives it.
#ifndef RECALL_TRAINER_OBJECTIVE_H_
#define RECALL_TRAINER_OBJECTIVE_H_

#include <torch/script.h>

#include <memory>
#include <vector>

#include "recall/v1/train_config.pb.h"
#include "trainer/collective.h"
#include "trainer/example_batches.h"
#include "trainer/item_graph.h"
#include "trainer/negatives.h"
#include "trainer/towers.h"

namespace recall::trainer {

class Objective {
 public:
  // `batches`, `towers` and `collective` (null: one process) must outlive the Objective; the
  // key encoder starts as a copy of towers->item (queue_size > 0).
  Objective(const recall::v1::TrainConfig& config, const ExampleBatches& batches, Towers* towers,
            Collective* collective = nullptr);

  // The configured loss of this rank's rows of one batch (a mean over them) against in-batch
  // (every rank's with gather_negatives), queue and global negatives plus the auxiliary terms;
  // row r draws from keys.rows[r], what the step shares from keys.step. Enqueues every rank's
  // keys afterwards (MoCo: a row never meets its own key). With a collective every rank must
  // call it for the same step.
  torch::Tensor Loss(const std::vector<int64_t>& users, const std::vector<int64_t>& items,
                     const DrawKeys& keys);
  // After an optimizer step: the key encoder's momentum update (no-op without a key queue).
  void AfterStep();

  KeyQueue& queue() { return queue_; }
  const KeyQueue& queue() const { return queue_; }
  torch::jit::Module& key_encoder() { return key_tower_; }
  const torch::jit::Module& key_encoder() const { return key_tower_; }
  const torch::Tensor& log_q() const { return log_q_; }
  // The co-occurrence graph of item_neighbor_weight (empty when off).
  const ItemNeighbors& item_neighbors() const { return item_neighbors_; }

 private:
  // Every item of the dataset in dense id order, built on first use (loss full_softmax).
  const ItemBatch& AllItemsBatch();

  const recall::v1::TrainConfig& config_;
  const ExampleBatches& batches_;
  Towers& towers_;
  Collective* const collective_;
  torch::Tensor log_q_;            // [num_items] log of each item's share of train interactions
  torch::Tensor log_q_users_;      // [num_users] the same for users (item_to_user_weight)
  ItemNeighbors item_neighbors_;   // item_neighbor_weight > 0
  torch::Tensor log_q_neighbors_;  // [num_items] log of each item's share of neighbour draws
  torch::jit::Module key_tower_;   // momentum copy of towers.item (queue_size > 0)
  KeyQueue queue_;
  std::unique_ptr<ItemBatch> all_items_batch_;
};

}  // namespace recall::trainer

#endif  // RECALL_TRAINER_OBJECTIVE_H_
