#include "trainer/command_line.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "model/train_config.h"
#include "model/whole_file.h"

namespace recall::trainer {
namespace {

absl::Status ReadFlagfile(const std::string& path, std::vector<std::string>* out) {
  std::ifstream in(path);
  if (!in) {
    if (std::filesystem::path(path).filename() == "gowalla.flags") {
      return absl::InvalidArgumentError(absl::StrCat(
          "--flagfile=", path, ": the Gowalla flags preset was replaced by --preset=gowalla "
          "(trainer/presets/gowalla.textproto) plus --dataset=lightgcn:<dir>"));
    }
    return absl::InvalidArgumentError(absl::StrCat("--flagfile=", path, ": cannot read it"));
  }
  std::string line;
  while (std::getline(in, line)) {
    absl::string_view l = absl::StripAsciiWhitespace(line);
    if (l.empty() || l[0] == '#') continue;
    out->emplace_back(l);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SplitArgs> SplitTrainArgs(const std::vector<std::string>& argv) {
  SplitArgs out;
  std::vector<std::string> args;
  for (size_t i = 0; i < argv.size(); ++i) {
    absl::string_view a = argv[i];
    if (i > 0 && (absl::ConsumePrefix(&a, "--flagfile=") || absl::ConsumePrefix(&a, "-flagfile="))) {
      if (absl::Status s = ReadFlagfile(std::string(a), &args); !s.ok()) return s;
    } else {
      args.push_back(argv[i]);
    }
  }
  for (size_t i = 0; i < args.size(); ++i) {
    if (i == 0) {
      out.rest.push_back(args[i]);
      continue;
    }
    absl::string_view a = args[i];
    absl::string_view body = a;
    if (!absl::ConsumePrefix(&body, "--")) absl::ConsumePrefix(&body, "-");
    if (body == a || body.empty()) {  // not a flag (gflags reports it)
      out.rest.push_back(args[i]);
      continue;
    }
    if (body == "help" || body == "helpfull" || body == "h") {
      out.help = true;
      continue;
    }
    const size_t eq = body.find('=');
    const std::string key(body.substr(0, eq));
    if (key == "set") {
      std::string kv;
      if (eq != absl::string_view::npos) {
        kv = std::string(body.substr(eq + 1));
      } else if (i + 1 < args.size()) {
        kv = args[++i];
      }
      const size_t e = kv.find('=');
      if (e == std::string::npos || e == 0) {
        return absl::InvalidArgumentError(absl::StrCat("--set needs KEY=VALUE, got '", kv, "'"));
      }
      out.options.emplace_back(kv.substr(0, e), kv.substr(e + 1));
      continue;
    }
    bool is_bool = false;
    if (IsTrainOption(key, &is_bool)) {
      if (eq != absl::string_view::npos) {
        out.options.emplace_back(key, std::string(body.substr(eq + 1)));
      } else if (is_bool) {
        out.options.emplace_back(key, "true");
      } else if (i + 1 < args.size()) {
        out.options.emplace_back(key, args[++i]);
      } else {
        return absl::InvalidArgumentError(absl::StrCat("--", key, " needs a value"));
      }
      continue;
    }
    if (eq == absl::string_view::npos && absl::StartsWith(key, "no") &&
        IsTrainOption(key.substr(2), &is_bool) && is_bool) {
      out.options.emplace_back(key.substr(2), "false");
      continue;
    }
    out.rest.push_back(args[i]);
  }
  return out;
}

absl::StatusOr<recall::v1::TrainConfig> ConfigFromSources(const ConfigSources& s) {
  absl::StatusOr<recall::v1::TrainConfig> config;
  if (!s.config_file.empty()) {
    auto text = ReadWholeFile(s.config_file);
    if (!text.ok()) return text.status();
    config = ParseTrainConfigText(*text, s.config_file);
  } else {
    config = LoadPreset(s.preset);
    if (!config.ok() && absl::IsNotFound(config.status())) {
      return absl::InvalidArgumentError(absl::StrCat("--preset: ", config.status().message()));
    }
  }
  if (!config.ok()) return config.status();
  if (!s.overrides_text.empty()) {
    auto overrides = ParseTrainConfigText(s.overrides_text, "--overrides");
    if (!overrides.ok()) return overrides.status();
    OverlayTrainConfig(*overrides, &*config);
  }
  for (const auto& [k, v] : s.options) {
    if (absl::Status st = SetTrainOption(k, v, &*config); !st.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--", st.message()));
    }
  }
  if (absl::Status st = CheckTrainConfig(*config); !st.ok()) return st;
  return config;
}

}  // namespace recall::trainer
