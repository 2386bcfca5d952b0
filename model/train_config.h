// The training configuration as the trainer and the server both resolve it: a preset (a
// TrainConfig textproto compiled into the binary), then overrides, then checks. The message
// itself, with every option's type, default and doc, is proto/recall/v1/train_config.proto;
// nothing here restates an option.
//
// Resolution: LoadPreset (or ParseTrainConfigText) -> OverlayTrainConfig / SetTrainOption ->
// CheckTrainConfig -> ResolveTrainConfig (every field explicitly set, for the manifest).
// recall-train and TriggerRetrain call exactly this sequence, so a retrain with preset P and
// overrides O trains what `recall-train --preset=P` with O does.
//
// Thread-safety: every function is thread-safe (the tables behind them are built once).
#ifndef RECALL_MODEL_TRAIN_CONFIG_H_
#define RECALL_MODEL_TRAIN_CONFIG_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "recall/v1/train_config.pb.h"

namespace recall {

// The presets compiled in (trainer/presets/<name>.textproto), sorted.
std::vector<std::string> PresetNames();
// NotFound naming the known presets; a preset that does not parse is Internal (a build defect).
absl::StatusOr<v1::TrainConfig> LoadPreset(absl::string_view name);
// A TrainConfig textproto; InvalidArgument with `origin`:line:column of the first error.
absl::StatusOr<v1::TrainConfig> ParseTrainConfigText(absl::string_view text,
                                                     absl::string_view origin);

// Sets one option from text, as a flag gives it. `key` is a field name (a nested field by its
// own name, e.g. "dim" for tower.dim, or by its path "tower.dim") or a field's legacy flag
// ("lr"). Values: numbers, true/false, an enum value's name in any case, a comma-separated
// list for a repeated field ("" clears it). InvalidArgument naming the key on a bad key/value.
absl::Status SetTrainOption(absl::string_view key, absl::string_view value,
                            v1::TrainConfig* config);
// Whether `key` names an option (as SetTrainOption accepts it), and whether it is a bool.
bool IsTrainOption(absl::string_view key, bool* is_bool = nullptr);
// The field path ("tower.dim") an option key resolves to; "" if none.
std::string TrainOptionPath(absl::string_view key);

// Copies every field set in `overrides` onto `config`; a set repeated field replaces the
// config's list instead of appending to it.
void OverlayTrainConfig(const v1::TrainConfig& overrides, v1::TrainConfig* config);
// InvalidArgument naming (as "config.<path>") the first field set in `overrides` that is not
// marked (retrain_override), with the list of those that are.
absl::Status CheckRetrainOverrides(const v1::TrainConfig& overrides);

// The checks every trainer applies before it starts: InvalidArgument naming the field(s).
absl::Status CheckTrainConfig(const v1::TrainConfig& config);
// `config` with every field set explicitly (a default becomes a set value), so printing it or
// storing it in a manifest shows every option.
v1::TrainConfig ResolveTrainConfig(const v1::TrainConfig& config);

// Multi-line textproto of `config`.
std::string TrainConfigText(const v1::TrainConfig& config);
// `recall-train --help`'s option list: every field with its flag name, type, default and the
// doc comment from train_config.proto.
std::string TrainConfigHelp();

}  // namespace recall

#endif  // RECALL_MODEL_TRAIN_CONFIG_H_
