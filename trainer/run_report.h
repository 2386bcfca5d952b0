// What a recall-train run shows and leaves behind, none of which changes the model: progress
// events rendered as a terminal bar or as JSON lines (TrainingEvent, protobuf's json_util), and
// the report directory (metrics.json, history.jsonl, training.png).
//
// Thread-safety: a RunReport is driven by one thread at a time (ensemble members' events are
// serialized by TrainConcurrently).
#ifndef RECALL_TRAINER_RUN_REPORT_H_
#define RECALL_TRAINER_RUN_REPORT_H_

#include <map>
#include <string>
#include <vector>

#include "recall/v1/train_config.pb.h"

namespace recall::trainer {

enum class ProgressFormat { kBar, kJson, kNone };

// One TrainingEvent as a JSON line (no trailing newline).
std::string TrainingEventJson(const recall::v1::TrainingEvent& e);
// A metrics map as a JSON object with sorted keys.
std::string MetricsJson(const std::map<std::string, double>& m);

class RunReport {
 public:
  explicit RunReport(ProgressFormat format) : format_(format) {}
  // Renders `e` (a bar on stderr, or a JSON line on stdout) and keeps member 0's (or the single
  // model's) EPOCH events for WriteReportDir.
  void Emit(const recall::v1::TrainingEvent& e);
  // metrics.json, history.jsonl (one line per epoch), history.dat and, when gnuplot is
  // installed, training.png (loss and Recall@20 per epoch). Problems are reported on stderr.
  void WriteReportDir(const std::string& dir,
                      const std::map<std::string, double>& final_metrics) const;

 private:
  ProgressFormat format_;
  std::vector<recall::v1::TrainingEvent> epochs_;
};

}  // namespace recall::trainer

#endif  // RECALL_TRAINER_RUN_REPORT_H_
