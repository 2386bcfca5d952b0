#include "trainer/item_graph.h"

#include <algorithm>
#include <cmath>

namespace recall::trainer {

ItemNeighbors ItemNeighbors::Build(const std::vector<std::vector<int64_t>>& train_by_user,
                                   int64_t num_items, int k) {
  // Distinct items per user, and each item's users.
  std::vector<std::vector<int64_t>> items_of(train_by_user.size());
  std::vector<std::vector<int64_t>> users_of(num_items);
  for (size_t u = 0; u < train_by_user.size(); ++u) {
    items_of[u] = train_by_user[u];
    std::sort(items_of[u].begin(), items_of[u].end());
    items_of[u].erase(std::unique(items_of[u].begin(), items_of[u].end()), items_of[u].end());
    for (int64_t i : items_of[u]) users_of[i].push_back(static_cast<int64_t>(u));
  }
  // g_i = sum_j G_ij = sum over i's users of their degree.
  std::vector<double> g(num_items, 0.0);
  for (int64_t i = 0; i < num_items; ++i) {
    for (int64_t u : users_of[i]) g[i] += static_cast<double>(items_of[u].size());
  }
  ItemNeighbors out;
  out.neighbors_.resize(num_items);
  out.total_weight_.assign(num_items, 0.0);
  std::vector<int64_t> count(num_items, 0), touched;
  std::vector<Neighbor> row;
  for (int64_t i = 0; i < num_items; ++i) {
    touched.clear();
    for (int64_t u : users_of[i]) {
      for (int64_t j : items_of[u]) {
        if (j == i) continue;
        if (count[j]++ == 0) touched.push_back(j);
      }
    }
    const double off_diagonal = g[i] - static_cast<double>(users_of[i].size());  // g_i - G_ii
    row.clear();
    for (int64_t j : touched) {
      row.push_back({j, count[j] / off_diagonal * std::sqrt(g[i] / g[j])});
      count[j] = 0;
    }
    const size_t keep = std::min<size_t>(row.size(), static_cast<size_t>(std::max(k, 0)));
    std::partial_sort(row.begin(), row.begin() + keep, row.end(),
                      [](const Neighbor& a, const Neighbor& b) {
                        return a.weight != b.weight ? a.weight > b.weight : a.item < b.item;
                      });
    out.neighbors_[i].assign(row.begin(), row.begin() + keep);
    for (const Neighbor& n : out.neighbors_[i]) out.total_weight_[i] += n.weight;
  }
  return out;
}

int64_t ItemNeighbors::Sample(int64_t item, uint64_t bits) const {
  const auto& row = neighbors_[item];
  if (row.empty()) return item;
  // 53 random bits -> [0, total): the same draw on every platform (no std distributions).
  double x = static_cast<double>(bits >> 11) * 0x1.0p-53 * total_weight_[item];
  for (const Neighbor& n : row) {
    if (x < n.weight) return n.item;
    x -= n.weight;
  }
  return row.back().item;  // rounding
}

std::vector<double> ItemNeighbors::DrawShare(const std::vector<double>& item_share) const {
  std::vector<double> out(neighbors_.size(), 0.0);
  for (size_t i = 0; i < neighbors_.size(); ++i) {
    if (neighbors_[i].empty()) {
      out[i] += item_share[i];
      continue;
    }
    for (const Neighbor& n : neighbors_[i]) {
      out[n.item] += item_share[i] * n.weight / total_weight_[i];
    }
  }
  return out;
}

}  // namespace recall::trainer
