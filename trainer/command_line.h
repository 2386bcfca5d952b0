// recall-train's command line around TrainConfig: every training option is a flag named after
// its field (--batch_size=512, --dim=128, bools also as --logq / --nologq), or --set KEY=VALUE;
// the options are applied in order on top of the preset (or --config file) and --overrides.
// Old --flagfile files still work: their lines are read as if given on the command line. The
// rest of argv (run options: paths, progress format, ...) is left to gflags.
//
// Thread-safety: free functions without shared state.
#ifndef RECALL_TRAINER_COMMAND_LINE_H_
#define RECALL_TRAINER_COMMAND_LINE_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "recall/v1/train_config.pb.h"

namespace recall::trainer {

struct SplitArgs {
  std::vector<std::pair<std::string, std::string>> options;  // (key, value), in order
  std::vector<std::string> rest;                             // argv[0] and the run flags
  bool help = false;                                         // --help / --helpfull / -h
};
// InvalidArgument for an unreadable --flagfile (naming the preset that replaced the old
// trainer/presets/gowalla.flags) or --set without KEY=VALUE.
absl::StatusOr<SplitArgs> SplitTrainArgs(const std::vector<std::string>& argv);

// Where a run's config starts and what changes it; see the header comment for the order.
struct ConfigSources {
  std::string preset = "default";  // ignored when config_file is set
  std::string config_file;         // a TrainConfig textproto
  std::string overrides_text;      // a TrainConfig textproto overlaid on the preset
  std::vector<std::pair<std::string, std::string>> options;
};
// The checked config (CheckTrainConfig passed), not yet resolved. InvalidArgument naming the
// file, the option or the field.
absl::StatusOr<recall::v1::TrainConfig> ConfigFromSources(const ConfigSources& sources);

}  // namespace recall::trainer

#endif  // RECALL_TRAINER_COMMAND_LINE_H_
