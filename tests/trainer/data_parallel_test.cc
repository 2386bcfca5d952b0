// Data-parallel training on loopback: two ranks (threads of this process, each with its own
// Gloo process group and TCPStore connection) against one process at the same global batch,
// a two-rank resume against an uninterrupted two-rank run, and real recall-train ranks killed
// with SIGKILL.
#include <gtest/gtest.h>
#include <omp.h>
#include <signal.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "model/train_config.h"
#include "tests/testing/child_process.h"
#include "tests/testing/free_port.h"
#include "tests/trainer/trainer_test_access.h"
#include "trainer/collective.h"
#include "trainer/synthetic.h"
#include "trainer/trainer.h"

// Built as one unit with the other trainer suites (CMakeLists.txt), so its helpers live in a
// namespace of its own.
namespace recall::trainer::data_parallel_tests {
namespace {

Dataset SmallSynthetic() {
  SyntheticConfig sc;
  sc.num_users = 400;
  sc.num_items = 250;
  sc.num_categories = 6;
  sc.seed = 17;
  return GenerateSynthetic(sc);
}

// Every path that draws or gathers: logQ, history dropout and audiences (row draws), the key
// queue, global negatives (step draws), item SSL (gathered views), the item-to-user term.
TrainConfig RankedConfig(int64_t max_steps) {
  TrainConfig c = *LoadPreset("smoke");
  c.set_batch_size(64);
  c.set_max_steps(max_steps);
  c.set_epochs(1);
  c.set_history_length(10);
  c.set_history_dropout(0.3);
  c.set_item_audience_length(4);
  c.set_logq_correction(true);
  c.set_queue_size(256);
  c.set_momentum(0.9);
  c.set_global_negatives(16);
  c.set_item_ssl_weight(0.1);
  c.set_item_to_user_weight(0.2);
  c.set_threads(1);
  c.set_seed(9);
  return c;
}

// What a rank saw after each step.
struct Trace {
  std::vector<double> losses;
  std::vector<torch::Tensor> queue_keys, queue_ids;
};

std::function<void(const TrainingEvent&)> Recorder(Trainer* t, Trace* trace) {
  return [t, trace](const TrainingEvent& e) {
    if (e.event() != TrainingEvent::STEP) return;
    trace->losses.push_back(e.loss());
    const KeyQueue& q = TrainerTestAccess::objective(*t).queue();
    trace->queue_keys.push_back(q.state_keys().clone());
    trace->queue_ids.push_back(q.state_ids().clone());

  };
}

// Connects `world` ranks of this process (threads: the store's host waits for the others).
std::vector<std::unique_ptr<Collective>> ConnectRanks(int world) {
  const int port = recall::testing::FreeLoopbackPort();
  std::vector<std::unique_ptr<Collective>> ranks(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      Collective::Options o;
      o.world_size = world;
      o.rank = r;
      o.master_port = port;
      o.host = "127.0.0.1";
      o.timeout = std::chrono::seconds(30);
      auto c = Collective::Connect(o);
      if (c.ok()) ranks[r] = *std::move(c);
      else ADD_FAILURE() << c.status();
    });
  }
  for (auto& t : threads) t.join();
  return ranks;
}

// Ends the ranks' collectives (Finish is a barrier: every rank's thread at once).
void FinishRanks(std::vector<std::unique_ptr<Collective>>& ranks) {
  std::vector<std::thread> threads;
  for (auto& r : ranks) threads.emplace_back([&r] { r->Finish(); });
  for (auto& t : threads) t.join();
}

// Trainers for the ranks, created one after another (Create seeds LibTorch's global engine).
std::vector<std::unique_ptr<Trainer>> RankTrainers(const Dataset& d, const TrainConfig& c,
                                                   std::vector<std::unique_ptr<Collective>>& ranks) {
  std::vector<std::unique_ptr<Trainer>> out;
  for (auto& r : ranks) {
    auto t = Trainer::Create(d, c, 0, r.get());
    EXPECT_TRUE(t.ok()) << t.status();
    if (!t.ok()) return {};
    RunOptions run;
    run.log_every_steps = 1;
    (*t)->set_run_options(run);
    out.push_back(*std::move(t));
  }
  return out;
}

// Runs `epoch` (what remains of it) on every rank at once; returns each rank's trace.
std::vector<Trace> TrainEpochOnRanks(std::vector<std::unique_ptr<Trainer>>& trainers, int epoch) {
  std::vector<Trace> traces(trainers.size());
  std::vector<std::thread> threads;
  for (size_t r = 0; r < trainers.size(); ++r) {
    threads.emplace_back([&, r] {
      // OpenMP's thread count is per thread: without this a rank thread's GEMMs would split
      // over the default team while the other rank's run, and round differently run to run.
      omp_set_num_threads(1);
      TrainerTestAccess::TrainEpoch(*trainers[r], epoch, Recorder(trainers[r].get(), &traces[r]));
    });
  }
  for (auto& t : threads) t.join();
  return traces;
}

TEST(DataParallel, TwoRanksTrainTheOneProcessModelOfTheSameGlobalBatch) {
  torch::set_num_threads(1);
  const Dataset d = SmallSynthetic();
  const TrainConfig c = RankedConfig(20);

  auto one = Trainer::Create(d, c);
  ASSERT_TRUE(one.ok()) << one.status();
  RunOptions run;
  run.log_every_steps = 1;
  (*one)->set_run_options(run);
  Trace single;
  TrainerTestAccess::TrainEpoch(**one, 1, Recorder(one->get(), &single));
  ASSERT_EQ(single.losses.size(), 20u);

  auto ranks = ConnectRanks(2);
  ASSERT_TRUE(ranks[0] && ranks[1]);
  auto trainers = RankTrainers(d, c, ranks);
  ASSERT_EQ(trainers.size(), 2u);
  const std::vector<Trace> traces = TrainEpochOnRanks(trainers, 1);
  for (int r = 0; r < 2; ++r) ASSERT_EQ(traces[r].losses.size(), 20u) << "rank " << r;

  double worst = 0;
  for (size_t s = 0; s < 20; ++s) worst = std::max(worst, std::abs(traces[0].losses[s] - single.losses[s]));
  std::printf("largest loss difference to one process over 20 steps: %.3g\n", worst);
  for (size_t s = 0; s < 20; ++s) {
    // Each rank reports the global batch's loss: the same number, and the one process's.
    EXPECT_EQ(traces[0].losses[s], traces[1].losses[s]) << "step " << s + 1;
    EXPECT_NEAR(traces[0].losses[s], single.losses[s], 1e-4) << "step " << s + 1;
    // Every rank enqueues every rank's keys in rank order: identical queues, holding the one
    // process's ids in its order.
    EXPECT_TRUE(torch::equal(traces[0].queue_ids[s], traces[1].queue_ids[s])) << "step " << s + 1;
    EXPECT_TRUE(torch::equal(traces[0].queue_keys[s], traces[1].queue_keys[s])) << "step " << s + 1;
    EXPECT_TRUE(torch::equal(traces[0].queue_ids[s], single.queue_ids[s])) << "step " << s + 1;
    EXPECT_TRUE(torch::allclose(traces[0].queue_keys[s], single.queue_keys[s], 0, 1e-4))
        << "step " << s + 1;
  }
  // And the weights agree: every rank's with each other exactly, with the one process's closely.
  const torch::Tensor v0 = trainers[0]->EmbedAllItems(), v1 = trainers[1]->EmbedAllItems();
  EXPECT_TRUE(torch::equal(v0, v1));
  EXPECT_TRUE(torch::allclose(v0, (*one)->EmbedAllItems(), 0, 1e-4));
  FinishRanks(ranks);
}

// Without gathering each rank's rows see only its own positives (a different objective from
// one process), but the ranks still agree: the same loss, the same queue, the same weights.
TEST(DataParallel, WithoutGatheredNegativesTheRanksStillAgree) {
  torch::set_num_threads(1);
  const Dataset d = SmallSynthetic();
  TrainConfig c = RankedConfig(20);
  c.set_gather_negatives(false);
  auto ranks = ConnectRanks(2);
  ASSERT_TRUE(ranks[0] && ranks[1]);
  auto trainers = RankTrainers(d, c, ranks);
  ASSERT_EQ(trainers.size(), 2u);
  const std::vector<Trace> traces = TrainEpochOnRanks(trainers, 1);
  ASSERT_EQ(traces[0].losses.size(), 20u);
  ASSERT_EQ(traces[1].losses.size(), 20u);
  for (size_t s = 0; s < 20; ++s) {
    EXPECT_EQ(traces[0].losses[s], traces[1].losses[s]) << "step " << s + 1;
    EXPECT_TRUE(torch::equal(traces[0].queue_keys[s], traces[1].queue_keys[s])) << "step " << s + 1;
  }
  EXPECT_TRUE(torch::equal(trainers[0]->EmbedAllItems(), trainers[1]->EmbedAllItems()));
  FinishRanks(ranks);
}

// Reads a file whole ("" when missing).
std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Two recall-train ranks as child processes on a free loopback port, each logging to
// dir/<tag>.rank<r>.log. Small synthetic data, the smoke method plus logQ and a key queue.
struct RankPair {
  recall::testing::ChildProcess ranks[2];
  std::string logs[2];

  RankPair(const std::string& dir, const std::string& tag, const std::vector<std::string>& extra) {
    const int port = recall::testing::FreeLoopbackPort();
    for (int r = 0; r < 2; ++r) {
      logs[r] = dir + "/" + tag + ".rank" + std::to_string(r) + ".log";
      std::vector<std::string> argv = {
          RECALL_TRAIN_BIN, "--preset=smoke", "--synthetic_users=600", "--synthetic_items=300",
          "--batch_size=64", "--logq_correction", "--queue_size=256", "--momentum=0.9",
          "--threads=1", "--world_size=2", "--rank=" + std::to_string(r),
          "--master_port=" + std::to_string(port), "--rank_host=127.0.0.1", "--progress=json",
          "--log_every_steps=1"};
      argv.insert(argv.end(), extra.begin(), extra.end());
      EXPECT_TRUE(ranks[r].Start(argv, logs[r]));
    }
  }
  // Waits until both ranks have logged a step (both past the rendezvous).
  bool WaitUntilTraining() {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      if (Slurp(logs[0]).find("\"STEP\"") != std::string::npos &&
          Slurp(logs[1]).find("\"STEP\"") != std::string::npos) {
        return true;
      }
      if (!ranks[0].running() || !ranks[1].running()) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }
};

// step -> loss of every STEP event in a rank's log, exactly as printed.
std::map<int, std::string> StepLosses(const std::string& log) {
  std::map<int, std::string> out;
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("{\"event\":\"STEP\"", 0) != 0) continue;
    const size_t step = line.find("\"step\":"), loss = line.find("\"loss\":");
    if (step == std::string::npos || loss == std::string::npos) continue;
    out[std::stoi(line.substr(step + 7))] = line.substr(loss + 7, line.find(',', loss) - loss - 7);
  }
  return out;
}

std::string EvalLine(const std::string& log) {
  const size_t at = log.find("eval (");
  return at == std::string::npos ? "" : log.substr(at, log.find('\n', at) - at);
}

// Real ranks, a real fault: an uninterrupted two-rank epoch against one whose ranks are killed
// with SIGKILL after a mid-epoch checkpoint and restarted with --resume. Every step after the
// checkpoint has the same loss to the last bit, and rank 0's final evaluation is the same.
// (Ranks are processes in production; in-process thread ranks are only for the equivalence
// test above, since the bits of a resumed run there also depend on per-thread library state.)
TEST(DataParallel, TwoRankResumeAfterKillContinuesBitIdentically) {
  const std::string dir = std::filesystem::temp_directory_path() /
                          ("recall_dp_resume_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const std::string ckpt = dir + "/run.ckpt";
  std::string whole_log;
  {
    RankPair whole(dir, "whole", {"--epochs=1"});
    for (int r = 0; r < 2; ++r) ASSERT_EQ(whole.ranks[r].Wait(std::chrono::seconds(60)), 0) << Slurp(whole.logs[r]);
    whole_log = Slurp(whole.logs[0]);
  }
  {
    RankPair killed(dir, "killed",
                    {"--epochs=1", "--checkpoint=" + ckpt, "--checkpoint_every_steps=25"});
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!std::filesystem::exists(ckpt) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_TRUE(std::filesystem::exists(ckpt)) << Slurp(killed.logs[0]);
    for (auto& r : killed.ranks) r.Kill(SIGKILL);
    for (auto& r : killed.ranks) r.Wait();
    ASSERT_EQ(EvalLine(Slurp(killed.logs[0])), "") << "the run finished before it was killed";
  }
  RankPair resumed(dir, "resumed",
                   {"--epochs=1", "--checkpoint=" + ckpt, "--checkpoint_every_steps=25", "--resume"});
  for (int r = 0; r < 2; ++r) ASSERT_EQ(resumed.ranks[r].Wait(std::chrono::seconds(60)), 0) << Slurp(resumed.logs[r]);
  const std::string resumed_log = Slurp(resumed.logs[0]);
  const std::map<int, std::string> a = StepLosses(whole_log), b = StepLosses(resumed_log);
  ASSERT_FALSE(b.empty());
  EXPECT_GT(b.begin()->first, 1) << "the resumed run started over";
  EXPECT_EQ(b.rbegin()->first, a.rbegin()->first);
  for (const auto& [step, loss] : b) {
    ASSERT_TRUE(a.count(step)) << step;
    EXPECT_EQ(loss, a.at(step)) << "step " << step;
  }
  EXPECT_NE(EvalLine(whole_log), "");
  EXPECT_EQ(EvalLine(resumed_log), EvalLine(whole_log));
  std::filesystem::remove_all(dir);
}

// Two recall-train ranks; once both train, `victim` is killed with SIGKILL and the survivor
// must exit with kExitRankLost inside the process-group timeout, naming the victim's rank and
// pid.
void KillOneRank(int victim) {
  const std::string dir = std::filesystem::temp_directory_path() /
                          ("recall_dp_kill_" + std::to_string(getpid()) + "_" + std::to_string(victim));
  std::filesystem::create_directories(dir);
  constexpr int kTimeoutS = 10;
  RankPair pair(dir, "kill", {"--epochs=1000", "--rank_timeout_s=" + std::to_string(kTimeoutS)});
  ASSERT_TRUE(pair.WaitUntilTraining()) << Slurp(pair.logs[0]) << Slurp(pair.logs[1]);
  const int survivor = 1 - victim;
  const pid_t victim_pid = pair.ranks[victim].pid();
  const auto killed = std::chrono::steady_clock::now();
  pair.ranks[victim].Kill(SIGKILL);
  EXPECT_EQ(pair.ranks[victim].Wait(), 128 + SIGKILL);
  const int rc = pair.ranks[survivor].Wait(std::chrono::seconds(kTimeoutS));
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  const std::string log = Slurp(pair.logs[survivor]);
  std::printf("rank %d exited with %d %.2f s after rank %d was killed\n", survivor, rc, took, victim);
  EXPECT_EQ(rc, kExitRankLost) << "rank " << survivor << " after " << took << " s:\n" << log;
  EXPECT_LT(took, kTimeoutS);
  EXPECT_NE(log.find("lost rank " + std::to_string(victim) + " ("), std::string::npos) << log;
  EXPECT_NE(log.find(":" + std::to_string(victim_pid)), std::string::npos) << log;
  std::filesystem::remove_all(dir);
}

TEST(DataParallel, KilledRankMakesTheOtherExitNamingIt) { KillOneRank(1); }

TEST(DataParallel, KilledStoreHostMakesTheOtherExitNamingIt) { KillOneRank(0); }

}  // namespace
}  // namespace recall::trainer::data_parallel_tests
