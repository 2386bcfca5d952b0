// CheckTrainConfig (model/train_config.h): what no trainer can run with, as one list so that
// recall-train and TriggerRetrain refuse the same configs with the same words.
#include "absl/strings/str_cat.h"
#include "model/train_config.h"

namespace recall {
namespace {

absl::Status Bad(absl::string_view what) { return absl::InvalidArgumentError(what); }

}  // namespace

absl::Status CheckTrainConfig(const v1::TrainConfig& c) {
  using L = v1::TrainConfig;
  const auto& t = c.tower();
  if (c.epochs() < 0) return Bad("epochs must be >= 0");
  if (c.batch_size() < 2) return Bad("batch_size must be >= 2");
  if (!(c.learning_rate() > 0)) return Bad("learning_rate must be > 0");
  if (!(c.temperature() > 0)) return Bad("temperature must be > 0");
  if (c.max_steps() < 0) return Bad("max_steps must be >= 0");
  if (c.threads() < 0) return Bad("threads must be >= 0 (0: every core)");
  if (c.ensemble() < 1) return Bad("ensemble must be >= 1");
  if (t.dim() < 1 || t.id_dim() < 1 || t.cat_dim() < 1) {
    return Bad("tower.dim, tower.id_dim and tower.cat_dim must be >= 1");
  }
  for (int w : t.user_hidden()) if (w < 1) return Bad("tower.user_hidden widths must be >= 1");
  for (int w : t.item_hidden()) if (w < 1) return Bad("tower.item_hidden widths must be >= 1");
  if (c.loss() == L::FULL_SOFTMAX &&
      (c.logq_correction() || c.queue_size() > 0 || c.global_negatives() > 0)) {
    return Bad("loss full_softmax scores every item: logq_correction, queue_size and "
               "global_negatives do not apply");
  }
  if (c.mask_user_positives() && c.loss() != L::SOFTMAX) {
    return Bad("mask_user_positives applies to loss softmax only");
  }
  if (c.loss() == L::CCL && c.global_negatives() <= 0) {
    return Bad("loss ccl needs global_negatives > 0");
  }
  if (t.item_bias() && c.loss() == L::CCL) {
    // The offset is in logit units; CCL scores cosines and has no logit to offset.
    return Bad("tower.item_bias needs loss softmax or full_softmax");
  }
  if (!(c.item_to_user_weight() >= 0) || (c.item_to_user_weight() > 0 && c.loss() != L::SOFTMAX)) {
    return Bad("item_to_user_weight must be >= 0, and > 0 only with loss softmax");
  }
  if (!(c.item_neighbor_weight() >= 0) ||
      (c.item_neighbor_weight() > 0 && c.loss() != L::SOFTMAX) || c.item_neighbors() < 1) {
    return Bad("item_neighbor_weight must be >= 0, and > 0 only with loss softmax; "
               "item_neighbors must be >= 1");
  }
  if (!(c.logq_weight() >= 0)) return Bad("logq_weight must be >= 0");
  if (c.history_length() < 0) return Bad("history_length must be >= 0");
  if (!(c.validation_item_fraction() >= 0 && c.validation_item_fraction() < 1)) {
    return Bad("validation_item_fraction must be in [0, 1)");
  }
  if (c.queue_size() < 0 || c.global_negatives() < 0 || c.validation_users() < 0) {
    return Bad("queue_size, global_negatives and validation_users must be >= 0");
  }
  if (c.patience() < 0) return Bad("patience must be >= 0");
  if (!(c.weight_decay() >= 0)) return Bad("weight_decay must be >= 0");
  if (!(c.weight_average_decay() >= 0 && c.weight_average_decay() < 1)) {
    return Bad("weight_average_decay must be in [0, 1)");
  }
  if (!(c.momentum() >= 0 && c.momentum() <= 1)) return Bad("momentum must be in [0, 1]");
  for (double p : {c.user_id_dropout(), c.history_dropout(), c.ssl_mask_prob()}) {
    if (!(p >= 0 && p < 1)) {
      return Bad("user_id_dropout, history_dropout and ssl_mask_prob must be in [0, 1)");
    }
  }
  if (!(c.item_ssl_weight() >= 0 && c.user_ssl_weight() >= 0)) {
    return Bad("item_ssl_weight and user_ssl_weight must be >= 0");
  }
  if (c.user_id_buckets() < 0 || c.item_id_buckets() < 0) {
    return Bad("user_id_buckets and item_id_buckets must be >= 0");
  }
  if (c.lr_decay() != 0 && !(c.lr_decay() > 0 && c.lr_decay() < 1 && c.max_lr_decays() > 0 &&
                             c.validation_users() > 0 && c.patience() > 0)) {
    return Bad("lr_decay must be in (0, 1) with max_lr_decays > 0, validation_users and "
               "patience (it acts on a validation plateau)");
  }
  if (c.item_audience_length() < 0 || !(c.audience_dropout() >= 0 && c.audience_dropout() < 1)) {
    return Bad("item_audience_length must be >= 0 and audience_dropout in [0, 1)");
  }
  if (c.item_neighbor_length() < 0 || c.item_neighbor_length() > 10000) {
    return Bad("item_neighbor_length must be in [0, 10000]");
  }
  if (c.eval_audience_length() < 0 ||
      (c.eval_audience_length() > 0 && c.item_audience_length() == 0)) {
    return Bad("eval_audience_length must be >= 0, and > 0 only with item_audience_length");
  }
  if (c.index_factory().empty()) return Bad("index_factory must not be empty");
  if (!(c.index_recall_target() > 0 && c.index_recall_target() <= 1) || c.index_recall_k() < 1 ||
      c.index_memory_budget_mb() < 0 || !(c.index_tune_budget_s() > 0) ||
      c.index_tune_queries() < 1) {
    return Bad("index_recall_target must be in (0, 1], index_recall_k, index_tune_budget_s and "
               "index_tune_queries > 0, index_memory_budget_mb >= 0");
  }
  if (!(c.test_fraction() > 0 && c.test_fraction() < 1)) {
    return Bad("test_fraction must be in (0, 1)");
  }
  return absl::OkStatus();
}

}  // namespace recall
