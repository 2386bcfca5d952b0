// recall-train: trains the two towers on a dataset, evaluates them with full ranking and
// publishes a model version into --model_base. Training options are TrainConfig fields
// (proto/recall/v1/train_config.proto, trainer/command_line.h); the flags below are run options.
#include <gflags/gflags.h>
#include <glog/logging.h>
#include <omp.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "model/mutex_mode.h"
#include "model/openmp_env.h"
#include "model/train_config.h"
#include "trainer/collective.h"
#include "trainer/command_line.h"
#include "trainer/dataset.h"
#include "trainer/ensemble.h"
#include "trainer/export.h"
#include "trainer/index_tuning.h"
#include "trainer/run_report.h"
#include "trainer/synthetic.h"
#include "trainer/trainer.h"

DEFINE_string(preset, "default",
              "the TrainConfig preset to start from (trainer/presets/<name>.textproto, compiled "
              "in): default | gowalla | smoke");
DEFINE_string(config, "", "start from this TrainConfig textproto file instead of --preset");
DEFINE_string(overrides, "",
              "a TrainConfig textproto overlaid on the preset before the option flags (what "
              "TriggerRetrain passes), e.g. 'epochs: 3 tower { dim: 32 }'");
DEFINE_bool(print_config, false, "print the resolved TrainConfig as textproto and exit");
DEFINE_string(dataset, "synthetic",
              "'synthetic' (the embedded default), 'lightgcn:<dir>' (train.txt/test.txt), "
              "'dir:<dir>' (what --export_dataset writes: LightGCN files + items.tsv/users.tsv "
              "categorical features) or 'interactions:<file>' (user,item[,timestamp] rows; "
              "trainer/DATASETS.md)");
DEFINE_string(user_features, "", "interactions: optional user feature file (header + rows)");
DEFINE_string(item_features, "", "interactions: optional item feature file (header + rows)");
DEFINE_string(model_base, "", "publish the trained version under this directory (empty: don't)");
DEFINE_int64(publish_version, 0, "version number to publish (0: newest existing + 1)");
DEFINE_string(checkpoint, "", "write a checkpoint here after every epoch (and see --checkpoint_every_steps)");
DEFINE_int32(checkpoint_every_steps, 0, "also checkpoint every N steps within an epoch (0: epochs only)");
DEFINE_bool(resume, false, "continue from --checkpoint if it exists (same dataset and config)");
DEFINE_int32(log_every_steps, recall::trainer::RunOptions().log_every_steps,
             "progress event every N steps");
DEFINE_int32(eval_every, recall::trainer::RunOptions().eval_every_epochs,
             "also evaluate on test every N epochs (0: only at the end)");
DEFINE_string(progress, "auto", "auto | bar | json | none (auto: bar on a terminal, else json)");
DEFINE_bool(skip_eval, false,
            "publish without the test evaluation (e.g. a 1M-item serving-benchmark model, "
            "where full ranking would take far longer than training); the manifest then has no "
            "test figures");
DEFINE_string(metrics_out, "", "also write the final metrics as JSON to this file");
DEFINE_int32(benchmark_steps, 0,
             "throughput benchmark: train this many steps after 5 warm-up steps, print "
             "{\"examples_per_sec\": ...} and exit (no validation, evaluation or export)");
DEFINE_string(report_dir, "",
              "write metrics.json, history.jsonl (one line per epoch) and training.png (loss and "
              "Recall@20 per epoch, drawn by gnuplot when installed) into this directory");
DEFINE_string(export_dataset, "", "write the dataset (items.tsv, users.tsv, train/test) here");
DEFINE_int32(world_size, 1,
             "data-parallel ranks of this run (one process each; TRAINING.md \"Data-parallel "
             "training\"); 1: this process alone, no rendezvous");
DEFINE_int32(rank, 0, "this process's rank in [0, world_size); rank 0 hosts the store, writes "
             "checkpoints, evaluates and publishes");
DEFINE_string(master_addr, "127.0.0.1", "rank 0's address (the TCPStore rendezvous)");
DEFINE_int32(master_port, 29500, "rank 0's TCPStore port");
DEFINE_string(rank_host, "", "address this rank's Gloo sockets bind to (empty: the host name)");
DEFINE_double(rank_timeout_s, 120,
              "process-group timeout: rendezvous, each collective, and a peer whose heartbeat "
              "stops; a rank that loses a peer exits with status 3 naming it");

namespace {
using recall::v1::TrainingEvent;
namespace tr = recall::trainer;

int Fail(int code, absl::string_view what) {
  std::cerr << "error: " << what << "\n";
  return code;
}

bool KnownDatasetForm(const std::string& d) {
  return d == "synthetic" || absl::StartsWith(d, "lightgcn:") || absl::StartsWith(d, "dir:") ||
         absl::StartsWith(d, "interactions:");
}

// `FLAGS_dataset` must be a KnownDatasetForm.
absl::StatusOr<tr::Dataset> LoadDataset(const recall::v1::TrainConfig& cfg) {
  if (FLAGS_dataset == "synthetic") {
    tr::SyntheticConfig sc;
    sc.num_users = cfg.synthetic_users();
    sc.num_items = cfg.synthetic_items();
    sc.num_categories = cfg.synthetic_categories();
    sc.item_numeric_features = cfg.synthetic_item_numeric();
    sc.taste_bandwidth = cfg.synthetic_taste_bandwidth();
    sc.min_interactions = cfg.synthetic_min_interactions();
    sc.max_interactions = cfg.synthetic_max_interactions();
    sc.seed = cfg.seed();
    if (absl::Status st = tr::ValidateSyntheticConfig(sc); !st.ok()) return st;
    return tr::GenerateSynthetic(sc);
  }
  if (absl::StartsWith(FLAGS_dataset, "lightgcn:")) return tr::LoadLightGcn(FLAGS_dataset.substr(9));
  if (absl::StartsWith(FLAGS_dataset, "dir:")) return tr::LoadDatasetDir(FLAGS_dataset.substr(4));
  if (absl::StartsWith(FLAGS_dataset, "interactions:")) {
    tr::InteractionsOptions o;
    o.test_fraction = cfg.test_fraction();
    o.seed = cfg.seed();
    o.user_features = FLAGS_user_features;
    o.item_features = FLAGS_item_features;
    return tr::LoadInteractions(FLAGS_dataset.substr(13), o);
  }
  return absl::InvalidArgumentError("unreachable: KnownDatasetForm was checked");
}

void SetMetrics(const std::map<std::string, double>& m, TrainingEvent* e) {
  for (const auto& [k, v] : m) (*e->mutable_metrics())[k] = v;
}

}  // namespace

int main(int argc, char** argv) {
  recall::EnsurePassiveOpenMpWait(argv);
  recall::SetReleaseMutexMode();
  constexpr char kUsage[] =
      "recall-train [--preset=NAME | --config=FILE] [--OPTION=VALUE | --set OPTION=VALUE]... "
      "[run flags]\n"
      "Trains user and item towers with InfoNCE over in-batch, MoCo-queue and global negatives,\n"
      "evaluates Recall@K/NDCG@K with full ranking on the test split, and publishes a model\n"
      "version into --model_base. Example:\n"
      "  recall-train --preset=gowalla --dataset=lightgcn:../shared/data/gowalla "
      "--model_base=/tmp/models";
  gflags::SetUsageMessage(kUsage);
  auto split = tr::SplitTrainArgs(std::vector<std::string>(argv, argv + argc));
  if (!split.ok()) return Fail(64, split.status().message());
  if (split->help) {
    std::printf("%s\n\nTraining options (TrainConfig; presets: %s):\n%s\nRun flags:\n", kUsage,
                absl::StrJoin(recall::PresetNames(), ", ").c_str(),
                recall::TrainConfigHelp().c_str());
    std::fflush(stdout);
    gflags::ShowUsageWithFlagsRestrict(argv[0], "trainer/main.cc");
    return 0;
  }
  std::vector<char*> rest;
  for (auto& a : split->rest) rest.push_back(a.data());
  int rest_argc = static_cast<int>(rest.size());
  char** rest_argv = rest.data();
  gflags::ParseCommandLineFlags(&rest_argc, &rest_argv, true);
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);

  tr::ConfigSources sources;
  sources.preset = FLAGS_preset;
  sources.config_file = FLAGS_config;
  sources.overrides_text = FLAGS_overrides;
  sources.options = split->options;
  auto checked = tr::ConfigFromSources(sources);
  if (!checked.ok()) return Fail(64, checked.status().message());
  recall::v1::TrainConfig cfg = recall::ResolveTrainConfig(*checked);
  const std::string preset = FLAGS_config.empty() ? FLAGS_preset : "";
  if (!KnownDatasetForm(FLAGS_dataset)) {
    return Fail(64, absl::StrCat("--dataset must be 'synthetic', 'lightgcn:<dir>', 'dir:<dir>' or "
                                 "'interactions:<file>', got '", FLAGS_dataset, "'"));
  }
  if (FLAGS_print_config) {
    std::printf("%s", recall::TrainConfigText(cfg).c_str());
    return 0;
  }
  constexpr int kWarmupSteps = 5;
  tr::RunOptions run;
  run.log_every_steps = std::max(1, FLAGS_log_every_steps);
  run.eval_every_epochs = FLAGS_eval_every;
  if (FLAGS_benchmark_steps > 0) {
    if (cfg.ensemble() > 1) return Fail(64, "--benchmark_steps measures one model; set ensemble 1");
    cfg.set_max_steps(kWarmupSteps + FLAGS_benchmark_steps);
    cfg.set_validation_users(0);
    run.log_every_steps = 1;
  }

  const int threads =
      cfg.threads() > 0 ? cfg.threads() : static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  torch::set_num_threads(threads);  // Debian's LibTorch starts with 1 intra-op thread
  omp_set_num_threads(threads);
  const bool bar = FLAGS_progress == "bar" || (FLAGS_progress == "auto" && isatty(STDERR_FILENO));
  // Ranks other than 0 report only when asked to (their figures are rank 0's).
  const bool quiet = FLAGS_progress == "none" || (FLAGS_rank != 0 && FLAGS_progress == "auto");
  tr::RunReport report(quiet ? tr::ProgressFormat::kNone
                             : bar ? tr::ProgressFormat::kBar : tr::ProgressFormat::kJson);
  {
    TrainingEvent e;
    e.set_event(TrainingEvent::CONFIG);
    e.set_preset(preset);
    *e.mutable_config() = cfg;
    report.Emit(e);
  }
  std::fprintf(stderr, "config (%s):\n%s",
               preset.empty() ? FLAGS_config.c_str() : ("preset " + preset).c_str(),
               recall::TrainConfigText(cfg).c_str());

  const auto t0 = std::chrono::steady_clock::now();
  auto loaded = LoadDataset(cfg);
  if (!loaded.ok()) return Fail(2, loaded.status().message());
  const tr::Dataset dataset = *std::move(loaded);
  LOG(INFO) << "dataset " << dataset.name << ": " << dataset.num_users << " users, "
            << dataset.num_items << " items, " << dataset.num_train_interactions() << " train / "
            << dataset.num_test_interactions() << " test interactions; threads=" << threads;
  if (!FLAGS_export_dataset.empty()) {
    if (auto s = tr::WriteDatasetFiles(dataset, FLAGS_export_dataset); !s.ok()) {
      return Fail(1, s.message());
    }
  }

  std::unique_ptr<tr::Collective> collective;
  if (FLAGS_world_size > 1) {
    tr::Collective::Options co;
    co.world_size = FLAGS_world_size;
    co.rank = FLAGS_rank;
    co.master_addr = FLAGS_master_addr;
    co.master_port = FLAGS_master_port;
    co.host = FLAGS_rank_host;
    co.timeout = std::chrono::milliseconds(static_cast<int64_t>(FLAGS_rank_timeout_s * 1000));
    auto connected = tr::Collective::Connect(co);
    if (!connected.ok()) {
      return Fail(absl::IsInvalidArgument(connected.status()) ? 64 : tr::kExitRankLost,
                  connected.status().message());
    }
    collective = *std::move(connected);
  } else if (FLAGS_rank != 0) {
    return Fail(64, "--rank needs --world_size > 1");
  }
  const bool lead = FLAGS_rank == 0;
  absl::StatusOr<std::vector<std::unique_ptr<tr::Trainer>>> created;
  if (collective) {
    auto one = tr::Trainer::Create(dataset, cfg, 0, collective.get());
    if (!one.ok()) return Fail(64, one.status().message());
    created.emplace();
    created->push_back(*std::move(one));
  } else {
    created = tr::CreateEnsemble(dataset, cfg);
  }
  if (!created.ok()) return Fail(2, created.status().message());
  std::vector<tr::Trainer*> members;
  for (const auto& m : *created) {
    m->set_run_options(run);
    members.push_back(m.get());
  }
  const bool ensemble = members.size() > 1;
  // Member 0 is the single model without an ensemble; with one, member 0 ends up evaluating
  // and publishing the combined towers.
  tr::Trainer* const trainer = members[0];
  if (!FLAGS_checkpoint.empty()) {
    for (size_t k = 0; k < members.size(); ++k) {
      const std::string path =
          ensemble ? absl::StrCat(FLAGS_checkpoint, ".member", k) : FLAGS_checkpoint;
      members[k]->set_checkpoint(path, FLAGS_checkpoint_every_steps);
      // Ranks load collectively: only rank 0 needs the file, and its absence (a fresh start)
      // comes back to every rank as NotFound.
      if (FLAGS_resume && (collective || std::filesystem::exists(path))) {
        absl::Status s = members[k]->LoadCheckpoint(path);
        if (absl::IsNotFound(s)) continue;
        if (!s.ok()) return Fail(2, s.message());
        LOG(INFO) << "resumed from " << path;
      }
    }
  } else if (FLAGS_resume) {
    return Fail(64, "--resume needs --checkpoint");
  }
  if (FLAGS_benchmark_steps > 0) {
    int64_t seen = 0;
    std::chrono::steady_clock::time_point begin, end;
    double last_loss = 0, collective_begin = 0, collective_end = 0;
    auto timing = [&](const TrainingEvent& e) {
      if (e.event() != TrainingEvent::STEP) return;
      ++seen;
      if (seen == kWarmupSteps) {
        begin = std::chrono::steady_clock::now();
        collective_begin = trainer->seconds_in_collectives();
      }
      end = std::chrono::steady_clock::now();
      collective_end = trainer->seconds_in_collectives();
      last_loss = e.loss();
    };
    if (auto s = trainer->Train(timing); !s.ok()) return Fail(1, s.message());
    if (collective) collective->Finish();
    const double sec = std::chrono::duration<double>(end - begin).count();
    // examples_per_sec counts the global batch: every rank's rows.
    std::printf("{\"examples_per_sec\": %.1f, \"steps\": %lld, \"seconds\": %.3f, \"loss\": %.5f, "
                "\"rank\": %d, \"world_size\": %d, \"collective_share\": %.4f}\n",
                (seen - kWarmupSteps) * static_cast<double>(cfg.batch_size()) / std::max(sec, 1e-9),
                static_cast<long long>(seen - kWarmupSteps), sec, last_loss, FLAGS_rank,
                FLAGS_world_size, (collective_end - collective_begin) / std::max(sec, 1e-9));
    return 0;
  }
  auto report_progress = [&](const TrainingEvent& e) { report.Emit(e); };
  auto member_progress = [&](int member, const TrainingEvent& e) {
    if (!ensemble) return report.Emit(e);
    TrainingEvent tagged = e;
    tagged.set_member(member);
    report.Emit(tagged);
  };
  if (collective) {
    if (auto s = trainer->Train(report_progress); !s.ok()) return Fail(1, s.message());
    // Past the last collective: the other ranks are done, rank 0 evaluates and publishes.
    collective->Finish();
    if (!lead) {
      std::fprintf(stderr, "rank %d of %d: trained; rank 0 evaluates and publishes\n", FLAGS_rank,
                   FLAGS_world_size);
      return 0;
    }
  } else if (auto s = tr::TrainConcurrently(members, threads, member_progress); !s.ok()) {
    return Fail(1, s.message());
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
      if (cfg.validation_users() > 0) member_metrics[prefix + "best_epoch"] = members[k]->best_epoch();
    }
    tr::CombineInto(members);
  }
  tr::RankingMetrics metrics;
  // "auto": the export tunes the index and evaluates through the one it publishes.
  if (!FLAGS_skip_eval) {
    metrics = trainer->EvaluateReport(
        cfg.index_factory() == tr::kAutoIndexFactory ? "" : cfg.index_factory());
  }
  if (cfg.validation_users() > 0) {
    // The validation figures go into the manifest too: the quality gate compares them.
    for (const auto& [k, v] : trainer->EvaluateValidation().values) metrics.values["val_" + k] = v;
    metrics.values["best_epoch"] = trainer->best_epoch();
  }
  for (const auto& [k, v] : member_metrics) metrics.values[k] = v;
  {
    TrainingEvent e;
    e.set_event(TrainingEvent::EVAL);
    e.set_epoch(cfg.epochs());
    e.set_epochs(cfg.epochs());
    e.set_elapsed_sec(train_sec);
    SetMetrics(metrics.values, &e);
    report.Emit(e);
  }
  std::fprintf(stderr, "eval (%lld users, exact full ranking): %s\n",
               static_cast<long long>(metrics.num_users), tr::MetricsJson(metrics.values).c_str());
  if (!FLAGS_metrics_out.empty()) {
    std::ofstream(FLAGS_metrics_out) << tr::MetricsJson(metrics.values) << "\n";
  }
  if (!FLAGS_report_dir.empty()) report.WriteReportDir(FLAGS_report_dir, metrics.values);
  if (!FLAGS_model_base.empty()) {
    auto path = tr::ExportVersion(*trainer, FLAGS_model_base, cfg.index_factory(), metrics, preset,
                                  FLAGS_publish_version);
    if (!path.ok()) return Fail(1, absl::StrCat("publishing the version: ", path.status().message()));
    std::fprintf(stderr, "published %s\n", path->c_str());
    TrainingEvent e;
    e.set_event(TrainingEvent::PUBLISHED);
    e.set_path(*path);
    report.Emit(e);
  }
  std::fprintf(stderr, "total wall time %.1fs\n",
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return 0;
}
