// The training loop (Trainer::Train / TrainEpoch / Step) and what reads the towers after it:
// embeddings and evaluation. The units it drives are in trainer.h.
#include "trainer/trainer.h"

#include <glog/logging.h>
#include <torch/csrc/jit/runtime/graph_executor.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <utility>

#include "absl/strings/str_cat.h"
#include "model/whole_file.h"
#include "trainer/quality.h"

namespace recall::trainer {

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const Dataset& d, const TrainConfig& c,
                                                         int ensemble_member,
                                                         Collective* collective) {
  if (absl::Status st = CheckTrainConfig(c); !st.ok()) return st;
  if (collective != nullptr && collective->world_size() > 1) {
    if (c.batch_size() % collective->world_size() != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "batch_size ", c.batch_size(), " is the global batch: it must split evenly over ",
          collective->world_size(), " ranks"));
    }
    if (c.ensemble() > 1 || ensemble_member != 0) {
      return absl::InvalidArgumentError(
          "an ensemble trains its members side by side in one process; train each member as "
          "its own multi-rank run, or the ensemble on one rank");
    }
  }
  // The JIT's profiling executor re-specializes the tower graphs after their first runs, with
  // different float rounding: a resumed run would then drift from an uninterrupted one in the
  // last bits. The towers are a few ops each, so the plain interpreter costs nothing measurable.
  torch::jit::setGraphExecutorOptimize(false);
  std::unique_ptr<Trainer> t(new Trainer(c, ensemble_member, collective));
  auto batches = ExampleBatches::Create(d, c);
  if (!batches.ok()) return batches.status();
  t->batches_ = *std::move(batches);
  t->examples_ = t->batches_->TrainExamples();
  // Member 0 draws exactly what a single model with this seed draws.
  const uint64_t draw_seed =
      c.seed() + 0x9e3779b97f4a7c15ULL * static_cast<uint64_t>(ensemble_member);
  // Every rank seeds alike: the same initial weights and the same example order everywhere.
  torch::manual_seed(draw_seed);
  t->rng_.seed(draw_seed);
  t->draw_seed_ = draw_seed;
  t->towers_ = BuildTowers(t->encoder(), c.tower(), static_cast<float>(c.temperature()));
  t->objective_ = std::make_unique<Objective>(t->config_, *t->batches_, &t->towers_, collective);
  t->optimizer_ = std::make_unique<torch::optim::Adam>(
      t->towers_.parameters(),
      torch::optim::AdamOptions(c.learning_rate()).weight_decay(c.weight_decay()));
  t->schedule_ = std::make_unique<Schedule>(t->config_, &t->towers_, t->optimizer_.get());
  return t;
}

double Trainer::Step(int64_t s) {
  const int world = collective_ ? collective_->world_size() : 1;
  const int64_t rows = config_.batch_size() / world;
  const int64_t first = s * config_.batch_size() + (collective_ ? collective_->rank() : 0) * rows;
  std::vector<int64_t> users(rows), items(rows);
  for (int64_t j = 0; j < rows; ++j) {
    users[j] = examples_[first + j].first;
    items[j] = examples_[first + j].second;
  }
  // A row's draws are keyed by its place in the epoch's order, not by which rank holds it.
  const DrawKeys keys = DrawKeys::ForRows(MixKey(draw_seed_, static_cast<uint64_t>(epoch_)), s,
                                          first, rows);
  optimizer_->zero_grad();
  torch::Tensor loss = objective_->Loss(users, items, keys);
  loss.backward();
  torch::Tensor value = loss.detach().reshape({1}).to(torch::kFloat32);
  if (world > 1) AverageOverRanks(value);
  optimizer_->step();
  objective_->AfterStep();
  schedule_->AfterStep();
  return value.item<double>();
}

void Trainer::AverageOverRanks(torch::Tensor& loss) {
  // DDP's job, written against the process group: one bucketed all-reduce of every gradient
  // (the loss rides in the last bucket), then the mean. A parameter the loss did not reach
  // gets a zero gradient first, so every rank's buckets have the same layout.
  std::vector<torch::Tensor> grads;
  for (torch::Tensor& p : towers_.parameters()) {
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    grads.push_back(p.mutable_grad());
  }
  grads.push_back(loss);
  collective_->AllReduceSum(grads);
  const double inv = 1.0 / collective_->world_size();
  for (torch::Tensor& g : grads) g.mul_(inv);
}

double Trainer::TrainEpoch(int epoch, const ProgressFn& progress) {
  const int64_t n = static_cast<int64_t>(examples_.size());
  const int64_t bs = config_.batch_size();
  const int64_t steps = n / bs;  // drop the ragged last batch: it would be a weaker softmax
  const int64_t first_step = std::exchange(resume_step_, 0);
  epoch_ = epoch;
  if (first_step == 0) {
    // Shuffle with the trainer's own engine: identical order for a seed on every platform.
    // (A resumed epoch keeps the order its checkpoint saved.)
    for (int64_t i = n - 1; i > 0; --i) std::swap(examples_[i], examples_[UniformBelow(rng_, i + 1)]);
  }
  towers_.user.train();
  towers_.item.train();
  const auto start = std::chrono::steady_clock::now();
  auto window_start = start;
  double window_collective = seconds_in_collectives();
  double sum = 0, window = 0;
  int64_t window_steps = 0, done = 0;
  for (int64_t s = first_step; s < steps; ++s) {
    if (config_.max_steps() > 0 && steps_done_ >= config_.max_steps()) break;
    ++steps_done_;
    ++done;
    const double l = Step(s);
    sum += l;
    window += l;
    ++window_steps;
    if (progress && (window_steps == run_options_.log_every_steps || s + 1 == steps)) {
      const double el =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      TrainingEvent ev;
      ev.set_event(TrainingEvent::STEP);
      ev.set_epoch(epoch);
      ev.set_epochs(config_.epochs());
      ev.set_step(static_cast<int32_t>(s + 1));
      ev.set_steps(static_cast<int32_t>(steps));
      ev.set_loss(window / window_steps);
      ev.set_elapsed_sec(el);
      ev.set_examples_per_sec((s + 1 - first_step) * bs / std::max(el, 1e-9));
      const double remaining_steps =
          static_cast<double>(steps - s - 1) + static_cast<double>(config_.epochs() - epoch) * steps;
      ev.set_eta_sec(remaining_steps * bs / std::max(ev.examples_per_sec(), 1e-9));
      if (collective_ != nullptr) {
        const auto now = std::chrono::steady_clock::now();
        const double wall = std::chrono::duration<double>(now - window_start).count();
        ev.set_collective_share((seconds_in_collectives() - window_collective) / std::max(wall, 1e-9));
        window_start = now;
        window_collective = seconds_in_collectives();
      }
      progress(ev);
      window = 0;
      window_steps = 0;
    }
    if (!checkpoint_path_.empty() && checkpoint_every_steps_ > 0 &&
        (s + 1) % checkpoint_every_steps_ == 0 && s + 1 < steps) {
      next_epoch_ = epoch;
      resume_step_ = s + 1;
      absl::Status st = SaveCheckpoint(checkpoint_path_);
      resume_step_ = 0;
      if (!st.ok()) LOG(WARNING) << "checkpoint: " << st;
    }
  }
  return done > 0 ? sum / done : 0.0;
}

absl::Status Trainer::Train(const ProgressFn& progress) {
  for (int epoch = next_epoch_; epoch <= config_.epochs(); ++epoch) {
    if (config_.max_steps() > 0 && steps_done_ >= config_.max_steps()) break;
    const auto start = std::chrono::steady_clock::now();
    const double loss = TrainEpoch(epoch, progress);
    if (!std::isfinite(loss)) {
      return absl::InternalError(absl::StrCat("loss diverged at epoch ", epoch));
    }
    TrainingEvent ev;
    ev.set_event(TrainingEvent::EPOCH);
    ev.set_epoch(epoch);
    ev.set_epochs(config_.epochs());
    ev.set_loss(loss);
    ev.set_elapsed_sec(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    ev.set_examples_per_sec((examples_.size() / config_.batch_size()) * config_.batch_size() /
                            std::max(ev.elapsed_sec(), 1e-9));
    auto& metrics = *ev.mutable_metrics();
    // Validation and evaluation see the averaged weights; training resumes from the live ones.
    const std::vector<torch::Tensor> live = schedule_->SwapInAverage();
    Schedule::Next next = Schedule::Next::kGoOn;
    if (batches_->has_validation()) {
      const RankingMetrics val = EvaluateValidation();
      for (const auto& [k, v] : val.values) metrics["val_" + k] = v;
      next = schedule_->OnValidation(epoch, val.Get("recall@20"));
      metrics["best_epoch"] = schedule_->state().best_epoch;
      metrics["lr"] = schedule_->state().learning_rate;
    }
    if (run_options_.eval_every_epochs > 0 && epoch % run_options_.eval_every_epochs == 0 &&
        epoch != config_.epochs()) {
      for (const auto& [k, v] : Evaluate().values) metrics[k] = v;
    }
    if (!live.empty()) Schedule::Put(live, towers_);
    if (next == Schedule::Next::kRestartFromBest) schedule_->RestartFromBest();
    next_epoch_ = epoch + 1;
    if (!checkpoint_path_.empty()) {
      if (absl::Status st = SaveCheckpoint(checkpoint_path_); !st.ok()) {
        LOG(WARNING) << "checkpoint: " << st;
      }
    }
    if (progress) progress(ev);
    if (next == Schedule::Next::kStop) break;
  }
  schedule_->KeepBest();
  return absl::OkStatus();
}

RunState Trainer::State() {
  RunState s;
  s.towers = &towers_;
  s.optimizer = optimizer_.get();
  s.objective = objective_.get();
  s.schedule = schedule_.get();
  s.examples = &examples_;
  s.rng = &rng_;
  s.next_epoch = &next_epoch_;
  s.resume_step = &resume_step_;
  return s;
}

absl::Status Trainer::SaveCheckpoint(const std::string& path) {
  if (collective_ && collective_->rank() != 0) return absl::OkStatus();
  return WriteCheckpoint(path, State());
}

absl::Status Trainer::LoadCheckpoint(const std::string& path) {
  if (!collective_ || collective_->world_size() == 1) return ReadCheckpoint(path, State());
  // Rank 0 reads, every rank loads the same bytes: the other ranks need no shared volume. A
  // missing file travels as no bytes, so every rank answers alike and none is left waiting.
  std::string bytes;
  if (collective_->rank() == 0) {
    absl::StatusOr<std::string> read = ReadWholeFile(path);
    if (read.ok()) bytes = *std::move(read);
  }
  bytes = collective_->BroadcastBytes(bytes, 0);
  if (bytes.empty()) return absl::NotFoundError(absl::StrCat("no checkpoint ", path, " on rank 0"));
  return ReadCheckpoint(path, State(), &bytes);
}

RankingMetrics Trainer::EvaluateValidation() {
  if (!batches_->has_validation()) return {};
  torch::Tensor u = EmbedAllUsersFrom(fit_split()), v = EmbedAllItemsWith(/*fit_graph=*/true);
  return EvaluateEmbeddings(fit_split(), u.data_ptr<float>(), v.data_ptr<float>(),
                            static_cast<int>(u.size(1)));
}

torch::Tensor Trainer::EmbedUsers(const std::vector<int64_t>& users) {
  return EmbedUsersFrom(dataset(), users);
}

torch::Tensor Trainer::EmbedUsersFrom(const Dataset& source, const std::vector<int64_t>& users) {
  // NoGradGuard, not InferenceMode: the parameters require grad, and TorchScript's executor
  // would try to save inference tensors for a backward pass.
  torch::NoGradGuard guard;
  towers_.user.eval();
  return towers_.user.forward(batches_->HistoryUserBatch(source, users).Inputs()).toTensor().contiguous();
}

torch::Tensor Trainer::EmbedItems(const std::vector<int64_t>& items) {
  torch::NoGradGuard guard;
  towers_.item.eval();
  return towers_.item.forward(batches_->ItemBatchFor(items).Inputs()).toTensor().contiguous();
}

namespace {
// Rows of f per call: 4,096 while each holds up to 100 pooled entries; fewer for wider ones,
// so the gathered [chunk, width, id_dim] block stays ~100 MB at id_dim 64.
int64_t ChunkRows(int64_t width) { return std::max<int64_t>(64, 4096 * 100 / std::max<int64_t>(width, 100)); }

torch::Tensor EmbedAll(int64_t n, int64_t chunk,
                       const std::function<torch::Tensor(const std::vector<int64_t>&)>& f) {
  std::vector<torch::Tensor> parts;
  for (int64_t begin = 0; begin < n; begin += chunk) {
    std::vector<int64_t> ids(std::min(chunk, n - begin));
    std::iota(ids.begin(), ids.end(), begin);
    parts.push_back(f(ids));
  }
  return torch::cat(parts, 0).contiguous();
}
}  // namespace

torch::Tensor Trainer::EmbedAllUsers() { return EmbedAllUsersFrom(dataset()); }

torch::Tensor Trainer::EmbedAllUsersFrom(const Dataset& source) {
  return EmbedAll(dataset().num_users, ChunkRows(config_.history_length()),
                  [&](const std::vector<int64_t>& ids) { return EmbedUsersFrom(source, ids); });
}

torch::Tensor Trainer::EmbedAllItems() { return EmbedAllItemsWith(/*fit_graph=*/false); }

torch::Tensor Trainer::EmbedAllItemsWith(bool fit_graph) {
  torch::NoGradGuard guard;
  towers_.item.eval();
  return EmbedAll(dataset().num_items, ChunkRows(batches_->eval_audience_length()),
                  [&](const std::vector<int64_t>& ids) {
                    const ItemBatch b =
                        fit_graph ? batches_->FitItemBatch(ids) : batches_->ItemBatchFor(ids);
                    return towers_.item.forward(b.Inputs()).toTensor().contiguous();
                  });
}

RankingMetrics Trainer::Evaluate(const EvalOptions& options) {
  torch::Tensor u = EmbedAllUsers(), v = EmbedAllItems();
  return EvaluateEmbeddings(dataset(), u.data_ptr<float>(), v.data_ptr<float>(),
                            static_cast<int>(u.size(1)), options);
}

RankingMetrics Trainer::EvaluateReport(const std::string& index_factory) {
  torch::Tensor u = EmbedAllUsers(), v = EmbedAllItems();
  const int dim = static_cast<int>(u.size(1));
  std::vector<std::vector<int64_t>> top;
  EvalOptions o;
  o.top_lists = &top;
  RankingMetrics m = EvaluateEmbeddings(dataset(), u.data_ptr<float>(), v.data_ptr<float>(), dim, o);
  for (const auto& [k, x] : SliceMetrics(dataset(), top).values) m.values[k] = x;
  {
    // Alignment and uniformity are properties of the unit vectors: drop the bias coordinate
    // that ends each member's dim + 1 block (an ensemble's blocks are scaled by 1/sqrt(N), so
    // the rest keeps unit norm).
    torch::Tensor uu = u, vu = v;
    if (config_.tower().item_bias()) {
      const int64_t block = OutputDim(config_.tower());
      torch::Tensor keep = torch::arange(u.size(1), torch::kInt64);
      keep = keep.masked_select(keep.remainder(block) != block - 1);
      uu = u.index_select(1, keep).contiguous();
      vu = v.index_select(1, keep).contiguous();
    }
    for (const auto& [k, x] : AlignmentUniformity(dataset(), uu.data_ptr<float>(),
                                                  vu.data_ptr<float>(),
                                                  static_cast<int>(uu.size(1)))
                                  .values) {
      m.values[k] = x;
    }
  }
  if (!index_factory.empty()) {
    auto ann = EvaluateThroughIndex(dataset(), u.data_ptr<float>(), v.data_ptr<float>(), dim,
                                    index_factory, m);
    if (ann.ok()) {
      for (const auto& [k, x] : ann->values) m.values[k] = x;
    } else {
      LOG(WARNING) << "evaluation through " << index_factory << ": " << ann.status();
    }
  }
  return m;
}

}  // namespace recall::trainer
