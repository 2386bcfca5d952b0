#include "trainer/run_report.h"

#include <google/protobuf/util/json_util.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace recall::trainer {
namespace {
using recall::v1::TrainingEvent;

std::string Duration(double sec) {
  const int s = static_cast<int>(sec);
  return absl::StrFormat("%d:%02d", s / 60, s % 60);
}

std::map<std::string, double> Metrics(const TrainingEvent& e) {
  return {e.metrics().begin(), e.metrics().end()};
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

void RenderBar(const TrainingEvent& e) {
  const std::string prefix = e.has_member() ? absl::StrCat("[m", e.member(), "] ") : "";
  const std::string metrics = e.metrics().empty() ? "" : "metrics " + MetricsJson(Metrics(e));
  switch (e.event()) {
    case TrainingEvent::STEP: {
      const int width = 30;
      const int filled = e.steps() ? static_cast<int>(int64_t{width} * e.step() / e.steps()) : width;
      std::fprintf(stderr, "\r%sepoch %d/%d [%s%s] %d/%d loss %.4f  %.0f ex/s  ETA %s   ",
                   prefix.c_str(), e.epoch(), e.epochs(), std::string(filled, '#').c_str(),
                   std::string(width - filled, '.').c_str(), e.step(), e.steps(), e.loss(),
                   e.examples_per_sec(), Duration(e.eta_sec()).c_str());
      break;
    }
    case TrainingEvent::EPOCH:
      std::fprintf(stderr, "\r%sepoch %d/%d done: loss %.4f, %.0f ex/s, %.1fs %s\n",
                   prefix.c_str(), e.epoch(), e.epochs(), e.loss(), e.examples_per_sec(),
                   e.elapsed_sec(), metrics.c_str());
      break;
    default:  // CONFIG, EVAL and PUBLISHED have their own stderr lines in recall-train
      break;
  }
}

}  // namespace

std::string TrainingEventJson(const TrainingEvent& e) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(e, &out, options);
  return out;
}

std::string MetricsJson(const std::map<std::string, double>& m) {
  std::vector<std::string> parts;
  for (const auto& [k, v] : m) parts.push_back(absl::StrFormat("\"%s\": %.6f", k, v));
  return absl::StrCat("{", absl::StrJoin(parts, ", "), "}");
}

void RunReport::Emit(const TrainingEvent& e) {
  if (e.event() == TrainingEvent::EPOCH && e.member() == 0) epochs_.push_back(e);
  switch (format_) {
    case ProgressFormat::kBar:
      RenderBar(e);
      break;
    case ProgressFormat::kJson:
      std::printf("%s\n", TrainingEventJson(e).c_str());
      std::fflush(stdout);
      break;
    case ProgressFormat::kNone:
      break;
  }
}

void RunReport::WriteReportDir(const std::string& dir,
                               const std::map<std::string, double>& final_metrics) const {
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/metrics.json") << MetricsJson(final_metrics) << "\n";
  std::ofstream hist(dir + "/history.jsonl");
  std::ofstream dat(dir + "/history.dat");
  dat << "# epoch loss val_recall@20 test_recall@20\n";
  bool have_test = false;  // test metrics per epoch only with --eval_every
  for (const auto& e : epochs_) {
    const auto metrics = Metrics(e);
    hist << absl::StrFormat("{\"epoch\": %d, \"loss\": %.6f, \"elapsed_sec\": %.2f, \"metrics\": %s}\n",
                            e.epoch(), e.loss(), e.elapsed_sec(), MetricsJson(metrics));
    auto get = [&](const char* k) {
      auto it = metrics.find(k);
      return it == metrics.end() ? std::string("NaN") : absl::StrFormat("%.6f", it->second);
    };
    have_test |= metrics.count("recall@20") > 0;
    dat << e.epoch() << " " << e.loss() << " " << get("val_recall@20") << " " << get("recall@20")
        << "\n";
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

}  // namespace recall::trainer
