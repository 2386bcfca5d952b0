// The item-item co-occurrence graph of UltraGCN (Mao et al. 2021), used as extra training
// signal: each item keeps its K strongest neighbours, and training may add "this user also
// likes a neighbour of their positive" as an auxiliary InfoNCE term (TrainConfig::
// item_neighbor_weight). It is what LightGCN's higher propagation layers carry (the path
// user -> item -> other user -> other item) handed to a model that stays a two-tower one:
// nothing of it is saved or served.
//
// With R the binary user-item train matrix and G = R^T R (G_ij = users who had both i and j;
// g_i = sum_k G_ik), the weight of j as a neighbour of i is UltraGCN's
//   w_ij = G_ij / (g_i - G_ii) * sqrt(g_i / g_j),
// the share of i's co-occurrences that go to j, scaled down for items that co-occur with
// everything (large g_j). The diagonal is never a neighbour.
#ifndef RECALL_TRAINER_ITEM_GRAPH_H_
#define RECALL_TRAINER_ITEM_GRAPH_H_

#include <cstdint>
#include <random>
#include <vector>

namespace recall::trainer {

class ItemNeighbors {
 public:
  struct Neighbor {
    int64_t item;
    double weight;
  };

  ItemNeighbors() = default;
  // train_by_user[u]: the dense item ids user u had (duplicates count once). Keeps at most k
  // neighbours per item, strongest first (ties: the smaller id first, so the result does not
  // depend on the order of the input). O(sum_u |train_u|^2) time, O(num_items) scratch.
  static ItemNeighbors Build(const std::vector<std::vector<int64_t>>& train_by_user,
                             int64_t num_items, int k);

  int64_t num_items() const { return static_cast<int64_t>(neighbors_.size()); }
  const std::vector<Neighbor>& of(int64_t item) const { return neighbors_[item]; }

  // One neighbour of `item` drawn in proportion to its weight; `item` itself when it has none
  // (no user had it together with anything else). `bits`: 64 random bits.
  int64_t Sample(int64_t item, uint64_t bits) const;

  // How often each item is drawn as a column when the rows' items follow `item_share` (each
  // item's share of the training examples): share_j = sum_i item_share_i P(j | i). The logQ
  // correction of the neighbour term subtracts its log. Linear in item_share: counts in give
  // expected counts out.
  std::vector<double> DrawShare(const std::vector<double>& item_share) const;

 private:
  std::vector<std::vector<Neighbor>> neighbors_;
  std::vector<double> total_weight_;  // per item, the sum of its kept weights
};

}  // namespace recall::trainer

#endif  // RECALL_TRAINER_ITEM_GRAPH_H_
