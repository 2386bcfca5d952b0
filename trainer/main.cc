// recall-train: trains the two towers on a dataset, evaluates them with full ranking and
// publishes a model version into --model_base.
#include <gflags/gflags.h>
#include <glog/logging.h>
#include <omp.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "model/openmp_env.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "trainer/dataset.h"
#include "trainer/ensemble.h"
#include "trainer/synthetic.h"
#include "trainer/trainer.h"

DEFINE_string(dataset, "synthetic",
              "'synthetic' (the embedded default), 'lightgcn:<dir>' (train.txt/test.txt), "
              "'dir:<dir>' (what --export_dataset writes: LightGCN files + items.tsv/users.tsv "
              "categorical features) or 'interactions:<file>' (user,item[,timestamp] rows; "
              "trainer/DATASETS.md)");
DEFINE_double(test_fraction, 0.2, "interactions: share of each user's items held out for test "
              "(the latest ones when rows carry timestamps)");
DEFINE_string(user_features, "", "interactions: optional user feature file (header + rows)");
DEFINE_string(item_features, "", "interactions: optional item feature file (header + rows)");
DEFINE_string(model_base, "", "publish the trained version under this directory (empty: don't)");
DEFINE_int64(publish_version, 0, "version number to publish (0: newest existing + 1)");
DEFINE_int32(epochs, 10, "training epochs");
DEFINE_int32(batch_size, 1024, "examples per step; every other positive in the batch is a negative");
DEFINE_double(lr, 1e-3, "Adam learning rate");
DEFINE_double(temperature, 0.1, "InfoNCE temperature tau");
DEFINE_string(loss, "softmax", "softmax (InfoNCE over in-batch/queue/global negatives) | "
              "full_softmax (exact softmax over every item each step; no sampled negatives) | "
              "ccl (cosine contrastive loss over the uniform --global_negatives, SimpleX; "
              "--temperature and --logq do not apply)");
DEFINE_double(item_to_user_weight, 0,
              "softmax loss: also each batch item against the batch's users (symmetric InfoNCE), "
              "with this weight (0: off)");
DEFINE_double(item_neighbor_weight, 0,
              "softmax loss: also each batch user against one co-occurrence neighbour of its "
              "positive (UltraGCN's item-item graph, --item_neighbors strongest per item), "
              "with this weight (0: off)");
DEFINE_int32(item_neighbors, 10, "neighbours kept per item for --item_neighbor_weight");
DEFINE_double(ccl_margin, 0.9, "ccl: negatives below this cosine cost nothing");
DEFINE_double(ccl_negative_weight, 150, "ccl: weight of the mean negative hinge term");
DEFINE_bool(logq, false,
            "logQ correction: subtract log of each negative's sampling probability (item "
            "frequency for in-batch and queue negatives, mixed with 1/N for global ones)");
DEFINE_double(logq_weight, 1.0, "with --logq: subtract this multiple alpha of log q (1: the "
              "full correction; below 1 keeps part of the popularity prior)");
DEFINE_bool(mask_user_positives, false,
            "softmax loss: also mask negatives that are another train item of the row's user "
            "(false negatives), not only the row's own positive (accidental hits)");
DEFINE_int64(queue_size, 0, "MoCo queue of momentum-encoder item keys used as negatives (0: off)");
DEFINE_double(momentum, 0.99, "MoCo key encoder momentum m: k = m*k + (1-m)*q after each step");
DEFINE_bool(queue_reencode, false,
            "queue variant: re-encode the queued item ids with the online item tower each step "
            "(gradient reaches them) instead of using the momentum encoder's keys");
DEFINE_int64(global_negatives, 0,
             "uniformly drawn items per step added as negatives (mixed negative sampling; 0: off)");
DEFINE_double(weight_decay, 0, "Adam L2 penalty on every parameter");
DEFINE_double(weight_average_decay, 0,
              "> 0: validate, evaluate and export an exponential moving average of the tower "
              "weights with this decay per step (Polyak averaging; e.g. 0.999); 0 = the live weights");
DEFINE_double(user_id_dropout, 0,
              "training: probability of replacing a user's id by the OOV row (regularizes the id "
              "table; the tower learns to serve from history alone)");
DEFINE_int64(user_id_buckets, 0, "hash user ids into this many embedding rows (0: a "
             "collision-free vocabulary of the dataset's users)");
DEFINE_int64(item_id_buckets, 0, "hash item ids into this many embedding rows (0: a vocabulary); "
             "keeps the towers small for a large catalog");
DEFINE_double(history_dropout, 0,
              "training: probability of dropping each history item from the main loss's user "
              "batch (at least one is kept), so the tower cannot memorize a user's full history");
DEFINE_int32(item_audience_length, 0,
             "> 0: the item tower also mean-pools up to this many of the item's training users "
             "(its audience: the item side of the user's history; online items have none)");
DEFINE_int32(eval_audience_length, 0,
             "with --item_audience_length: evaluation, validation and the published item vectors "
             "pool up to this many of each item's train users (0: --item_audience_length)");
DEFINE_int32(item_neighbor_length, 0,
             "> 0: the item tower also mean-pools this many of the item's strongest co-occurrence "
             "neighbours (items its train users also had; online items have none)");
DEFINE_double(audience_dropout, 0,
              "training: probability of dropping each audience user of an item");
DEFINE_double(item_ssl_weight, 0, "weight of the item-side self-supervised loss (0: off)");
DEFINE_double(user_ssl_weight, 0, "weight of the user-side self-supervised loss (0: off)");
DEFINE_double(ssl_mask_prob, 0.3, "SSL views: probability of masking an id / feature / history item");
DEFINE_bool(share_item_embeddings, false,
            "the user tower pools history from the item tower's id table (SimpleX-style)");
DEFINE_string(pooling, "mean",
              "how the user tower pools its history and the item tower its audience: mean "
              "(sum / n) | sqrt (sum / sqrt(n), LightGCN's degree normalization)");
DEFINE_bool(item_bias, false,
            "learn a per-item score offset b (logit units), served as one more coordinate: "
            "score = cos(u, i) + temperature * b_i (trainer/TRAINING.md)");
DEFINE_bool(l2_normalize, true, "L2-normalize tower outputs (off only for the ablation)");
DEFINE_int64(validation_users, 0,
             "hold one train item of this many users out for validation; the best epoch by "
             "validation Recall@20 is kept (0: no validation, keep the last epoch)");
DEFINE_double(validation_item_fraction, 0,
              "> 0: each validation user holds out this share of its train items (at least one) "
              "instead of one, so validation weighs many held-out items per user like the test "
              "protocol");
DEFINE_int32(patience, 0, "stop after N epochs without a better validation Recall@20 (0: never)");
DEFINE_double(lr_decay, 0,
              "on a validation plateau of --patience epochs: restore the best weights, multiply "
              "the learning rate by this and go on (0: off, the plateau stops training)");
DEFINE_int32(max_lr_decays, 2, "plateaus answered by --lr_decay before one stops training");
DEFINE_string(checkpoint, "", "write a checkpoint here after every epoch (and see --checkpoint_every_steps)");
DEFINE_int32(checkpoint_every_steps, 0, "also checkpoint every N steps within an epoch (0: epochs only)");
DEFINE_bool(resume, false, "continue from --checkpoint if it exists (same dataset and flags)");
DEFINE_int32(history_length, 50, "history items pooled by the user tower");
DEFINE_int32(dim, 64, "output embedding dimension");
DEFINE_int32(id_dim, 64, "id embedding dimension");
DEFINE_int32(cat_dim, 16, "categorical feature embedding dimension");
DEFINE_string(user_hidden, "", "comma-separated hidden widths of the user tower MLP");
DEFINE_string(item_hidden, "", "comma-separated hidden widths of the item tower MLP");
DEFINE_int32(ensemble, 1,
             "train this many models concurrently (each on threads/N threads; they differ in "
             "initialization and example order) and publish them as one model of N*dim whose "
             "score is the mean of theirs (trainer/ensemble.h)");
DEFINE_uint64(seed, 42, "seed of every random choice (init, shuffling, history sampling)");
DEFINE_int32(threads, 0, "torch intra-op and OpenMP threads (0: all cores)");
DEFINE_string(index_factory, "HNSW32", "FAISS factory string of the published item index");
DEFINE_int32(log_every_steps, 50, "progress event every N steps");
DEFINE_int32(eval_every, 0, "evaluate every N epochs (0: only at the end)");
DEFINE_string(progress, "auto", "auto | bar | json | none (auto: bar on a terminal, else json)");
DEFINE_bool(skip_eval, false,
            "publish without the test evaluation (e.g. a 1M-item serving-benchmark model, "
            "where full ranking would take far longer than training); the manifest then has no "
            "test figures");
DEFINE_string(metrics_out, "", "also write the final metrics as JSON to this file");
DEFINE_int32(benchmark_steps, 0,
             "throughput benchmark: train this many steps after 5 warm-up steps, print "
             "{\"examples_per_sec\": ...} and exit (no evaluation, no export)");
DEFINE_string(report_dir, "",
              "write metrics.json, history.jsonl (one line per epoch) and training.png (loss and "
              "Recall@20 per epoch, drawn by gnuplot when installed) into this directory");
DEFINE_int64(synthetic_users, 2000, "synthetic dataset: users");
DEFINE_int64(synthetic_items, 1000, "synthetic dataset: items");
DEFINE_int32(synthetic_categories, 10, "synthetic dataset: item categories");
DEFINE_int32(synthetic_item_numeric, 0,
             "synthetic dataset: numeric item features per item (category center + Gaussian "
             "noise; every item distinct, for feature-embedded catalogs, trainer/DATASETS.md)");
DEFINE_double(synthetic_taste_bandwidth, 0,
              "synthetic dataset: users draw their preferred category's items by closeness of "
              "the numeric features to a per-user taste point, kernel width h (0 = off; needs "
              "--synthetic_item_numeric; trainer/DATASETS.md)");
DEFINE_int32(synthetic_min_interactions, 10, "synthetic dataset: fewest distinct items per user");
DEFINE_int32(synthetic_max_interactions, 40, "synthetic dataset: most distinct items per user");
DEFINE_string(export_dataset, "", "write the dataset (items.tsv, users.tsv, train/test) here");

namespace {
using recall::trainer::ProgressEvent;

std::vector<int> ParseWidths(const std::string& s) {
  std::vector<int> out;
  for (absl::string_view p : absl::StrSplit(s, ',', absl::SkipEmpty())) {
    int w;
    if (!absl::SimpleAtoi(p, &w) || w <= 0) {
      std::cerr << "error: bad layer width '" << p << "'\n";
      std::exit(64);
    }
    out.push_back(w);
  }
  return out;
}

std::string MetricsJson(const std::map<std::string, double>& m) {
  std::vector<std::string> parts;
  for (const auto& [k, v] : m) parts.push_back(absl::StrFormat("\"%s\": %.6f", k, v));
  return absl::StrCat("{", absl::StrJoin(parts, ", "), "}");
}

std::string Duration(double sec) {
  const int s = static_cast<int>(sec);
  return absl::StrFormat("%d:%02d", s / 60, s % 60);
}

// member >= 0: the event is an ensemble member's (a "member" field / an "[m<k>]" prefix).
void Render(const ProgressEvent& e, bool bar, int member = -1) {
  if (!bar) {
    const std::string member_field =
        member >= 0 ? absl::StrCat("\"member\": ", member, ", ") : std::string();
    std::printf(
        "{%s\"event\": \"%s\", \"epoch\": %d, \"epochs\": %d, \"step\": %lld, \"steps\": %lld, "
        "\"loss\": %.5f, \"examples_per_sec\": %.1f, \"eta_sec\": %.1f, \"elapsed_sec\": %.2f, "
        "\"metrics\": %s}\n",
        member_field.c_str(), e.kind.c_str(), e.epoch, e.total_epochs,
        static_cast<long long>(e.step),
        static_cast<long long>(e.total_steps), e.loss, e.examples_per_sec, e.eta_sec,
        e.elapsed_sec, MetricsJson(e.metrics).c_str());
    std::fflush(stdout);
    return;
  }
  const std::string prefix = member >= 0 ? absl::StrCat("[m", member, "] ") : std::string();
  if (e.kind == "step") {
    const int width = 30;
    const int filled = e.total_steps ? static_cast<int>(width * e.step / e.total_steps) : width;
    std::fprintf(stderr, "\r%sepoch %d/%d [%s%s] %lld/%lld loss %.4f  %.0f ex/s  ETA %s   ",
                 prefix.c_str(), e.epoch, e.total_epochs, std::string(filled, '#').c_str(),
                 std::string(width - filled, '.').c_str(), static_cast<long long>(e.step),
                 static_cast<long long>(e.total_steps), e.loss, e.examples_per_sec,
                 Duration(e.eta_sec).c_str());
  } else {
    std::fprintf(stderr, "\r%sepoch %d/%d done: loss %.4f, %.0f ex/s, %.1fs %s%s\n",
                 prefix.c_str(), e.epoch,
                 e.total_epochs, e.loss, e.examples_per_sec, e.elapsed_sec,
                 e.metrics.empty() ? "" : "metrics ", e.metrics.empty() ? "" : MetricsJson(e.metrics).c_str());
  }
}

// Runs argv (never a shell) and waits; false if it could not run or failed.
bool RunQuietly(const std::vector<std::string>& args) {
  const pid_t pid = fork();
  if (pid < 0) return false;
  if (pid == 0) {
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

void WriteReport(const std::string& dir, const std::vector<ProgressEvent>& epochs,
                 const std::map<std::string, double>& final_metrics) {
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/metrics.json") << MetricsJson(final_metrics) << "\n";
  std::ofstream hist(dir + "/history.jsonl");
  std::ofstream dat(dir + "/history.dat");
  dat << "# epoch loss val_recall@20 test_recall@20\n";
  bool have_test = false;  // test metrics per epoch only with --eval_every
  for (const auto& e : epochs) {
    hist << absl::StrFormat("{\"epoch\": %d, \"loss\": %.6f, \"elapsed_sec\": %.2f, \"metrics\": %s}\n",
                            e.epoch, e.loss, e.elapsed_sec, MetricsJson(e.metrics));
    auto get = [&](const char* k) {
      auto it = e.metrics.find(k);
      return it == e.metrics.end() ? std::string("NaN") : absl::StrFormat("%.6f", it->second);
    };
    have_test |= e.metrics.count("recall@20") > 0;
    dat << e.epoch << " " << e.loss << " " << get("val_recall@20") << " " << get("recall@20") << "\n";
  }
  dat.close();
  const std::string gnuplot = "/usr/bin/gnuplot";
  if (!std::filesystem::exists(gnuplot)) {
    std::fprintf(stderr, "report: %s/ (no gnuplot: training.png not drawn)\n", dir.c_str());
    return;
  }
  std::ofstream(dir + "/training.gp")
      << "set terminal pngcairo size 900,500 noenhanced\n"
      << "set output '" << dir << "/training.png'\n"
      << "set xlabel 'epoch'\nset ylabel 'loss'\nset y2label 'Recall@20'\n"
      << "set ytics nomirror\nset y2tics\nset key outside bottom center horizontal\n"
      << "set datafile missing 'NaN'\nset grid\n"
      << "plot '" << dir << "/history.dat' using 1:2 with linespoints title 'train loss' axes x1y1, "
      << "'' using 1:3 with linespoints title 'validation Recall@20' axes x1y2"
      << (have_test ? ", '' using 1:4 with linespoints title 'test Recall@20' axes x1y2" : "")
      << "\n";
  const bool ok = RunQuietly({gnuplot, dir + "/training.gp"});
  std::fprintf(stderr, "report: %s/ %s\n", dir.c_str(), ok ? "(training.png)" : "(gnuplot failed)");
}

}  // namespace

int main(int argc, char** argv) {
  recall::EnsurePassiveOpenMpWait(argv);
  gflags::SetUsageMessage(
      "recall-train [flags]\n"
      "Trains user and item towers with InfoNCE over in-batch, MoCo-queue and global negatives,\n"
      "evaluates Recall@K/NDCG@K with full ranking on the test split, and publishes a model\n"
      "version into --model_base. Flags can come from a file: --flagfile=trainer/presets/gowalla.flags\n"
      "Example: recall-train --dataset=lightgcn:../shared/data/gowalla --model_base=/tmp/models");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);

  const int threads = FLAGS_threads > 0 ? FLAGS_threads : static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  torch::set_num_threads(threads);  // Debian's LibTorch starts with 1 intra-op thread
  omp_set_num_threads(threads);
  const bool bar = FLAGS_progress == "bar" || (FLAGS_progress == "auto" && isatty(STDERR_FILENO));
  const bool quiet = FLAGS_progress == "none";

  const auto t0 = std::chrono::steady_clock::now();
  recall::trainer::Dataset dataset;
  if (FLAGS_dataset == "synthetic") {
    recall::trainer::SyntheticConfig sc;
    sc.num_users = FLAGS_synthetic_users;
    sc.num_items = FLAGS_synthetic_items;
    sc.num_categories = FLAGS_synthetic_categories;
    sc.item_numeric_features = FLAGS_synthetic_item_numeric;
    sc.taste_bandwidth = FLAGS_synthetic_taste_bandwidth;
    sc.min_interactions = FLAGS_synthetic_min_interactions;
    sc.max_interactions = FLAGS_synthetic_max_interactions;
    sc.seed = FLAGS_seed;
    if (absl::Status st = recall::trainer::ValidateSyntheticConfig(sc); !st.ok()) {
      std::cerr << "error: " << st.message() << "\n";
      return 2;
    }
    dataset = recall::trainer::GenerateSynthetic(sc);
  } else {
    absl::StatusOr<recall::trainer::Dataset> d;
    if (absl::StartsWith(FLAGS_dataset, "lightgcn:")) {
      d = recall::trainer::LoadLightGcn(FLAGS_dataset.substr(9));
    } else if (absl::StartsWith(FLAGS_dataset, "dir:")) {
      d = recall::trainer::LoadDatasetDir(FLAGS_dataset.substr(4));
    } else if (absl::StartsWith(FLAGS_dataset, "interactions:")) {
      recall::trainer::InteractionsOptions o;
      o.test_fraction = FLAGS_test_fraction;
      o.seed = FLAGS_seed;
      o.user_features = FLAGS_user_features;
      o.item_features = FLAGS_item_features;
      d = recall::trainer::LoadInteractions(FLAGS_dataset.substr(13), o);
    } else {
      std::cerr << "error: --dataset must be 'synthetic', 'lightgcn:<dir>', 'dir:<dir>' or "
                   "'interactions:<file>', got '"
                << FLAGS_dataset << "'\n";
      return 64;
    }
    if (!d.ok()) {
      std::cerr << "error: " << d.status().message() << "\n";
      return 2;
    }
    dataset = *std::move(d);
  }
  LOG(INFO) << "dataset " << dataset.name << ": " << dataset.num_users << " users, "
            << dataset.num_items << " items, " << dataset.num_train_interactions() << " train / "
            << dataset.num_test_interactions() << " test interactions; threads=" << threads;
  if (!FLAGS_export_dataset.empty()) {
    if (auto s = recall::trainer::WriteDatasetFiles(dataset, FLAGS_export_dataset); !s.ok()) {
      std::cerr << "error: " << s.message() << "\n";
      return 1;
    }
  }

  recall::trainer::TrainConfig cfg;
  cfg.epochs = FLAGS_epochs;
  cfg.batch_size = FLAGS_batch_size;
  cfg.learning_rate = FLAGS_lr;
  cfg.temperature = FLAGS_temperature;
  cfg.logq_correction = FLAGS_logq;
  cfg.logq_weight = FLAGS_logq_weight;
  cfg.mask_user_positives = FLAGS_mask_user_positives;
  cfg.loss = FLAGS_loss;
  cfg.item_to_user_weight = FLAGS_item_to_user_weight;
  cfg.item_neighbor_weight = FLAGS_item_neighbor_weight;
  cfg.item_neighbors = FLAGS_item_neighbors;
  cfg.ccl_margin = FLAGS_ccl_margin;
  cfg.ccl_negative_weight = FLAGS_ccl_negative_weight;
  cfg.queue_size = FLAGS_queue_size;
  cfg.momentum = FLAGS_momentum;
  cfg.queue_reencode = FLAGS_queue_reencode;
  cfg.global_negatives = FLAGS_global_negatives;
  cfg.weight_decay = FLAGS_weight_decay;
  cfg.weight_average_decay = FLAGS_weight_average_decay;
  cfg.validation_users = FLAGS_validation_users;
  cfg.validation_item_fraction = FLAGS_validation_item_fraction;
  cfg.patience = FLAGS_patience;
  cfg.lr_decay = FLAGS_lr_decay;
  cfg.max_lr_decays = FLAGS_max_lr_decays;
  cfg.tower.l2_normalize = FLAGS_l2_normalize;
  cfg.tower.item_bias = FLAGS_item_bias;
  cfg.tower.bias_scale = static_cast<float>(FLAGS_temperature);
  cfg.tower.share_item_embeddings = FLAGS_share_item_embeddings;
  if (FLAGS_pooling != "mean" && FLAGS_pooling != "sqrt") {
    std::cerr << "error: --pooling must be mean or sqrt, not " << FLAGS_pooling << "\n";
    return 64;
  }
  cfg.tower.sqrt_pooling = FLAGS_pooling == "sqrt";
  cfg.user_id_dropout = FLAGS_user_id_dropout;
  cfg.history_dropout = FLAGS_history_dropout;
  cfg.item_audience_length = FLAGS_item_audience_length;
  cfg.eval_audience_length = FLAGS_eval_audience_length;
  cfg.audience_dropout = FLAGS_audience_dropout;
  cfg.item_neighbor_length = FLAGS_item_neighbor_length;
  cfg.user_id_buckets = FLAGS_user_id_buckets;
  cfg.item_id_buckets = FLAGS_item_id_buckets;
  cfg.item_ssl_weight = FLAGS_item_ssl_weight;
  cfg.user_ssl_weight = FLAGS_user_ssl_weight;
  cfg.ssl_mask_prob = FLAGS_ssl_mask_prob;
  cfg.history_length = FLAGS_history_length;
  cfg.seed = FLAGS_seed;
  cfg.eval_every_epochs = FLAGS_eval_every;
  cfg.log_every_steps = std::max(1, FLAGS_log_every_steps);
  cfg.tower.dim = FLAGS_dim;
  cfg.tower.id_dim = FLAGS_id_dim;
  cfg.tower.cat_dim = FLAGS_cat_dim;
  cfg.tower.user_hidden = ParseWidths(FLAGS_user_hidden);
  cfg.tower.item_hidden = ParseWidths(FLAGS_item_hidden);
  constexpr int kWarmupSteps = 5;
  if (FLAGS_benchmark_steps > 0) {
    cfg.max_steps = kWarmupSteps + FLAGS_benchmark_steps;
    cfg.log_every_steps = 1;
    cfg.validation_users = 0;
  }
  if (FLAGS_ensemble < 1) {
    std::cerr << "error: --ensemble must be >= 1\n";
    return 64;
  }
  const bool ensemble = FLAGS_ensemble > 1;
  if (ensemble && FLAGS_benchmark_steps > 0) {
    std::cerr << "error: --benchmark_steps measures one model; drop --ensemble\n";
    return 64;
  }
  auto created = recall::trainer::CreateEnsemble(dataset, cfg, FLAGS_ensemble);
  if (!created.ok()) {
    std::cerr << "error: " << created.status().message() << "\n";
    return 2;
  }
  std::vector<recall::trainer::Trainer*> members;
  for (const auto& m : *created) members.push_back(m.get());
  // Member 0 is the single model without --ensemble; with it, member 0 ends up evaluating and
  // publishing the combined towers.
  recall::trainer::Trainer* const trainer = members[0];
  if (!FLAGS_checkpoint.empty()) {
    for (size_t k = 0; k < members.size(); ++k) {
      const std::string path =
          ensemble ? absl::StrCat(FLAGS_checkpoint, ".member", k) : FLAGS_checkpoint;
      members[k]->set_checkpoint(path, FLAGS_checkpoint_every_steps);
      if (FLAGS_resume && std::filesystem::exists(path)) {
        if (auto s = members[k]->LoadCheckpoint(path); !s.ok()) {
          std::cerr << "error: " << s.message() << "\n";
          return 2;
        }
        LOG(INFO) << "resumed from " << path;
      }
    }
  } else if (FLAGS_resume) {
    std::cerr << "error: --resume needs --checkpoint\n";
    return 64;
  }
  std::vector<ProgressEvent> epochs;  // member 0's (the report's loss / Recall@20 curves)
  auto member_progress = [&](int member, const ProgressEvent& e) {
    if (e.kind == "epoch" && member == 0) epochs.push_back(e);
    if (!quiet) Render(e, bar, ensemble ? member : -1);
  };
  if (FLAGS_benchmark_steps > 0) {
    int64_t seen = 0;
    std::chrono::steady_clock::time_point begin, end;
    double last_loss = 0;
    auto timing = [&](const ProgressEvent& e) {
      if (e.kind != "step") return;
      ++seen;
      if (seen == kWarmupSteps) begin = std::chrono::steady_clock::now();
      end = std::chrono::steady_clock::now();
      last_loss = e.loss;
    };
    if (auto s = trainer->Train(timing); !s.ok()) {
      std::cerr << "error: " << s.message() << "\n";
      return 1;
    }
    const double sec = std::chrono::duration<double>(end - begin).count();
    std::printf("{\"examples_per_sec\": %.1f, \"steps\": %lld, \"seconds\": %.3f, \"loss\": %.5f}\n",
                (seen - kWarmupSteps) * static_cast<double>(cfg.batch_size) / std::max(sec, 1e-9),
                static_cast<long long>(seen - kWarmupSteps), sec, last_loss);
    return 0;
  }
  if (auto s = recall::trainer::TrainConcurrently(members, threads, member_progress); !s.ok()) {
    std::cerr << "error: " << s.message() << "\n";
    return 1;
  }
  const double train_sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // Each member's own figures first (what the ensemble adds is measured in the same run).
  std::map<std::string, double> member_metrics;
  if (ensemble) {
    for (size_t k = 0; k < members.size(); ++k) {
      const std::string prefix = absl::StrCat("member", k, "_");
      if (!FLAGS_skip_eval) {
        for (const auto& [key, v] : members[k]->Evaluate().values) member_metrics[prefix + key] = v;
      }
      if (cfg.validation_users > 0) member_metrics[prefix + "best_epoch"] = members[k]->best_epoch();
    }
    recall::trainer::CombineInto(members);
  }
  recall::trainer::RankingMetrics metrics;
  if (!FLAGS_skip_eval) metrics = trainer->EvaluateReport(FLAGS_index_factory);
  if (cfg.validation_users > 0) {
    // The validation figures go into the manifest too: the quality gate compares them.
    for (const auto& [k, v] : trainer->EvaluateValidation().values) metrics.values["val_" + k] = v;
    metrics.values["best_epoch"] = trainer->best_epoch();
  }
  for (const auto& [k, v] : member_metrics) metrics.values[k] = v;
  ProgressEvent ev;
  ev.kind = "eval";
  ev.epoch = ev.total_epochs = cfg.epochs;
  ev.metrics = metrics.values;
  ev.elapsed_sec = train_sec;
  if (!bar && !quiet) Render(ev, false);
  std::fprintf(stderr, "eval (%lld users, exact full ranking): %s\n",
               static_cast<long long>(metrics.num_users), MetricsJson(metrics.values).c_str());
  if (!FLAGS_metrics_out.empty()) {
    std::ofstream(FLAGS_metrics_out) << MetricsJson(metrics.values) << "\n";
  }
  if (!FLAGS_report_dir.empty()) WriteReport(FLAGS_report_dir, epochs, metrics.values);
  if (!FLAGS_model_base.empty()) {
    std::map<std::string, std::string> echo;
    std::vector<gflags::CommandLineFlagInfo> flags;
    gflags::GetAllFlags(&flags);
    for (const auto& f : flags) {
      if (absl::StrContains(f.filename, "trainer/main.cc")) echo[f.name] = f.current_value;
    }
    auto path = trainer->Export(FLAGS_model_base, FLAGS_index_factory, metrics, echo, FLAGS_publish_version);
    if (!path.ok()) {
      std::cerr << "error: publishing the version: " << path.status().message() << "\n";
      return 1;
    }
    std::fprintf(stderr, "published %s\n", path->c_str());
    if (!bar && !quiet) std::printf("{\"event\": \"published\", \"path\": \"%s\"}\n", path->c_str());
  }
  std::fprintf(stderr, "total wall time %.1fs\n",
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return 0;
}
