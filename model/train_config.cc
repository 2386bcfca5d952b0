#include "model/train_config.h"

#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include <cmath>
#include <map>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace recall {

// model/embed_files.cmake: "preset/<name>" -> textproto, "train_config.desc" -> the
// FileDescriptorSet of train_config.proto with its comments.
const std::map<std::string, std::string_view>& EmbeddedFiles();

namespace {
namespace pb = google::protobuf;
using FieldPath = std::vector<const pb::FieldDescriptor*>;

std::string PathName(const FieldPath& path) {
  std::vector<std::string> names;
  for (const auto* f : path) names.push_back(f->name());
  return absl::StrJoin(names, ".");
}

// Every scalar or repeated option of TrainConfig, depth first, in field-number order.
void CollectOptions(const pb::Descriptor* d, FieldPath prefix, std::vector<FieldPath>* out) {
  std::vector<const pb::FieldDescriptor*> fields;
  for (int i = 0; i < d->field_count(); ++i) fields.push_back(d->field(i));
  std::sort(fields.begin(), fields.end(),
            [](auto* a, auto* b) { return a->number() < b->number(); });
  for (const auto* f : fields) {
    FieldPath p = prefix;
    p.push_back(f);
    if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      CollectOptions(f->message_type(), p, out);
    } else {
      out->push_back(p);
    }
  }
}

const std::vector<FieldPath>& AllOptions() {
  static const auto* options = [] {
    auto* v = new std::vector<FieldPath>();
    CollectOptions(v1::TrainConfig::descriptor(), {}, v);
    return v;
  }();
  return *options;
}

// key -> path for every spelling SetTrainOption accepts. A leaf name must be unique across the
// nested messages (trainer_config_test checks it), so `--dim` is unambiguous.
const absl::flat_hash_map<std::string, FieldPath>& OptionKeys() {
  static const auto* keys = [] {
    auto* m = new absl::flat_hash_map<std::string, FieldPath>();
    for (const FieldPath& p : AllOptions()) {
      (*m)[PathName(p)] = p;
      m->emplace(p.back()->name(), p);
      const auto& opts = p.back()->options();
      if (opts.HasExtension(v1::legacy_flag)) m->emplace(opts.GetExtension(v1::legacy_flag), p);
    }
    return m;
  }();
  return *keys;
}

const FieldPath* FindOption(absl::string_view key) {
  const auto& keys = OptionKeys();
  auto it = keys.find(std::string(key));
  return it == keys.end() ? nullptr : &it->second;
}

// The message holding the path's last field, created on the way.
pb::Message* Holder(const FieldPath& path, pb::Message* root) {
  pb::Message* m = root;
  for (size_t i = 0; i + 1 < path.size(); ++i) {
    m = m->GetReflection()->MutableMessage(m, path[i]);
  }
  return m;
}

std::string TypeName(const pb::FieldDescriptor* f) {
  if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_ENUM) {
    std::vector<std::string> values;
    for (int i = 0; i < f->enum_type()->value_count(); ++i) {
      values.push_back(absl::AsciiStrToLower(f->enum_type()->value(i)->name()));
    }
    return absl::StrJoin(values, "|");
  }
  std::string t = f->type_name();
  return f->is_repeated() ? absl::StrCat("list of ", t) : t;
}

std::string DefaultText(const pb::FieldDescriptor* f) {
  switch (f->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_INT32: return absl::StrCat(f->default_value_int32());
    case pb::FieldDescriptor::CPPTYPE_INT64: return absl::StrCat(f->default_value_int64());
    case pb::FieldDescriptor::CPPTYPE_UINT32: return absl::StrCat(f->default_value_uint32());
    case pb::FieldDescriptor::CPPTYPE_UINT64: return absl::StrCat(f->default_value_uint64());
    case pb::FieldDescriptor::CPPTYPE_DOUBLE:
      return absl::StrFormat("%.10g", f->default_value_double());
    case pb::FieldDescriptor::CPPTYPE_FLOAT:
      return absl::StrFormat("%.7g", f->default_value_float());
    case pb::FieldDescriptor::CPPTYPE_BOOL: return f->default_value_bool() ? "true" : "false";
    case pb::FieldDescriptor::CPPTYPE_ENUM:
      return absl::AsciiStrToLower(f->default_value_enum()->name());
    case pb::FieldDescriptor::CPPTYPE_STRING: return absl::StrCat("\"", f->default_value_string(), "\"");
    default: return "";
  }
}

absl::Status BadValue(absl::string_view key, absl::string_view value, absl::string_view want) {
  return absl::InvalidArgumentError(
      absl::StrCat(key, ": '", value, "' is not ", want));
}

// Sets one non-repeated scalar field (or appends to a repeated one) from text.
absl::Status SetScalar(pb::Message* m, const pb::FieldDescriptor* f, absl::string_view key,
                       absl::string_view v) {
  const pb::Reflection* r = m->GetReflection();
  const bool rep = f->is_repeated();
  switch (f->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_INT32: {
      int32_t x;
      if (!absl::SimpleAtoi(v, &x)) return BadValue(key, v, "an integer");
      rep ? r->AddInt32(m, f, x) : r->SetInt32(m, f, x);
      return absl::OkStatus();
    }
    case pb::FieldDescriptor::CPPTYPE_INT64: {
      int64_t x;
      if (!absl::SimpleAtoi(v, &x)) return BadValue(key, v, "an integer");
      rep ? r->AddInt64(m, f, x) : r->SetInt64(m, f, x);
      return absl::OkStatus();
    }
    case pb::FieldDescriptor::CPPTYPE_UINT64: {
      uint64_t x;
      if (!absl::SimpleAtoi(v, &x)) return BadValue(key, v, "a non-negative integer");
      rep ? r->AddUInt64(m, f, x) : r->SetUInt64(m, f, x);
      return absl::OkStatus();
    }
    case pb::FieldDescriptor::CPPTYPE_DOUBLE:
    case pb::FieldDescriptor::CPPTYPE_FLOAT: {
      double x;
      if (!absl::SimpleAtod(v, &x) || !std::isfinite(x)) return BadValue(key, v, "a finite number");
      if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_FLOAT) {
        rep ? r->AddFloat(m, f, static_cast<float>(x)) : r->SetFloat(m, f, static_cast<float>(x));
      } else {
        rep ? r->AddDouble(m, f, x) : r->SetDouble(m, f, x);
      }
      return absl::OkStatus();
    }
    case pb::FieldDescriptor::CPPTYPE_BOOL: {
      bool x;
      if (!absl::SimpleAtob(v, &x)) return BadValue(key, v, "true or false");
      rep ? r->AddBool(m, f, x) : r->SetBool(m, f, x);
      return absl::OkStatus();
    }
    case pb::FieldDescriptor::CPPTYPE_ENUM: {
      const auto* e = f->enum_type()->FindValueByName(absl::AsciiStrToUpper(v));
      if (e == nullptr) return BadValue(key, v, absl::StrCat("one of ", TypeName(f)));
      rep ? r->AddEnum(m, f, e) : r->SetEnum(m, f, e);
      return absl::OkStatus();
    }
    case pb::FieldDescriptor::CPPTYPE_STRING:
      rep ? r->AddString(m, f, std::string(v)) : r->SetString(m, f, std::string(v));
      return absl::OkStatus();
    default:
      return absl::InvalidArgumentError(absl::StrCat(key, ": not a settable option"));
  }
}

// Clears in `to` every list that `from` sets (recursively), so that MergeFrom replaces those
// lists instead of appending to them.
void ClearListsSetIn(const pb::Message& from, pb::Message* to) {
  const pb::Reflection* fr = from.GetReflection();
  std::vector<const pb::FieldDescriptor*> set;
  fr->ListFields(from, &set);
  for (const auto* f : set) {
    if (f->is_repeated()) {
      to->GetReflection()->ClearField(to, f);
    } else if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      ClearListsSetIn(fr->GetMessage(from, f), to->GetReflection()->MutableMessage(to, f));
    }
  }
}

void FindNotOverridable(const pb::Message& m, const std::string& prefix,
                        std::vector<std::string>* out) {
  std::vector<const pb::FieldDescriptor*> set;
  m.GetReflection()->ListFields(m, &set);
  for (const auto* f : set) {
    const std::string path = absl::StrCat(prefix, f->name());
    if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE && !f->is_repeated()) {
      FindNotOverridable(m.GetReflection()->GetMessage(m, f), path + ".", out);
    } else if (!f->options().GetExtension(v1::retrain_override)) {
      out->push_back(path);
    }
  }
}

void Resolve(pb::Message* m) {
  const pb::Reflection* r = m->GetReflection();
  const pb::Descriptor* d = m->GetDescriptor();
  for (int i = 0; i < d->field_count(); ++i) {
    const auto* f = d->field(i);
    if (f->is_repeated()) continue;
    switch (f->cpp_type()) {
      case pb::FieldDescriptor::CPPTYPE_MESSAGE: Resolve(r->MutableMessage(m, f)); break;
      case pb::FieldDescriptor::CPPTYPE_INT32: r->SetInt32(m, f, r->GetInt32(*m, f)); break;
      case pb::FieldDescriptor::CPPTYPE_INT64: r->SetInt64(m, f, r->GetInt64(*m, f)); break;
      case pb::FieldDescriptor::CPPTYPE_UINT32: r->SetUInt32(m, f, r->GetUInt32(*m, f)); break;
      case pb::FieldDescriptor::CPPTYPE_UINT64: r->SetUInt64(m, f, r->GetUInt64(*m, f)); break;
      case pb::FieldDescriptor::CPPTYPE_DOUBLE: r->SetDouble(m, f, r->GetDouble(*m, f)); break;
      case pb::FieldDescriptor::CPPTYPE_FLOAT: r->SetFloat(m, f, r->GetFloat(*m, f)); break;
      case pb::FieldDescriptor::CPPTYPE_BOOL: r->SetBool(m, f, r->GetBool(*m, f)); break;
      case pb::FieldDescriptor::CPPTYPE_ENUM: r->SetEnum(m, f, r->GetEnum(*m, f)); break;
      case pb::FieldDescriptor::CPPTYPE_STRING: r->SetString(m, f, r->GetString(*m, f)); break;
    }
  }
}

class CollectErrors : public pb::io::ErrorCollector {
 public:
  void AddError(int line, int column, const std::string& message) override {
    if (first.empty()) first = absl::StrCat(line + 1, ":", column + 1, ": ", message);
  }
  std::string first;
};

// Field path ("tower.dim") -> leading doc comment, from the embedded descriptor set.
const std::map<std::string, std::string>& DocComments() {
  static const auto* docs = [] {
    auto* out = new std::map<std::string, std::string>();
    const auto& files = EmbeddedFiles();
    auto it = files.find("train_config.desc");
    pb::FileDescriptorSet set;
    if (it == files.end() || !set.ParseFromArray(it->second.data(), it->second.size()) ||
        set.file_size() == 0) {
      return out;
    }
    const pb::FileDescriptorProto& file = set.file(0);
    // message index -> its name, for paths [4, msg, 2, field].
    for (const auto& loc : file.source_code_info().location()) {
      const auto& p = loc.path();
      if (p.size() != 4 || p[0] != 4 || p[2] != 2) continue;
      const auto& msg = file.message_type(p[1]);
      (*out)[absl::StrCat(msg.name(), ".", msg.field(p[3]).name())] = loc.leading_comments();
    }
    return out;
  }();
  return *docs;
}

}  // namespace

std::vector<std::string> PresetNames() {
  std::vector<std::string> names;
  for (const auto& [k, v] : EmbeddedFiles()) {
    if (absl::StartsWith(k, "preset/")) names.push_back(k.substr(7));
  }
  return names;
}

absl::StatusOr<v1::TrainConfig> ParseTrainConfigText(absl::string_view text,
                                                     absl::string_view origin) {
  pb::TextFormat::Parser parser;
  CollectErrors errors;
  parser.RecordErrorsTo(&errors);
  v1::TrainConfig config;
  if (!parser.ParseFromString(std::string(text), &config)) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ":", errors.first));
  }
  return config;
}

absl::StatusOr<v1::TrainConfig> LoadPreset(absl::string_view name) {
  const auto& files = EmbeddedFiles();
  auto it = files.find(absl::StrCat("preset/", name));
  if (it == files.end()) {
    return absl::NotFoundError(absl::StrCat("unknown preset '", name, "' (presets: ",
                                            absl::StrJoin(PresetNames(), ", "), ")"));
  }
  auto config = ParseTrainConfigText(absl::string_view(it->second.data(), it->second.size()),
                                     absl::StrCat("preset ", name));
  if (!config.ok()) return absl::InternalError(config.status().message());
  return config;
}

bool IsTrainOption(absl::string_view key, bool* is_bool) {
  const FieldPath* p = FindOption(key);
  if (p != nullptr && is_bool != nullptr) {
    *is_bool = p->back()->cpp_type() == pb::FieldDescriptor::CPPTYPE_BOOL;
  }
  return p != nullptr;
}

std::string TrainOptionPath(absl::string_view key) {
  const FieldPath* p = FindOption(key);
  return p == nullptr ? "" : PathName(*p);
}

absl::Status SetTrainOption(absl::string_view key, absl::string_view value,
                            v1::TrainConfig* config) {
  const FieldPath* path = FindOption(key);
  if (path == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(key, ": no such training option (recall-train --help lists them)"));
  }
  pb::Message* holder = Holder(*path, config);
  const pb::FieldDescriptor* f = path->back();
  if (!f->is_repeated()) return SetScalar(holder, f, key, absl::StripAsciiWhitespace(value));
  holder->GetReflection()->ClearField(holder, f);
  for (absl::string_view part : absl::StrSplit(value, ',', absl::SkipWhitespace())) {
    if (absl::Status s = SetScalar(holder, f, key, absl::StripAsciiWhitespace(part)); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

void OverlayTrainConfig(const v1::TrainConfig& overrides, v1::TrainConfig* config) {
  // proto2 MergeFrom copies exactly the fields `overrides` sets (presence), merging nested
  // messages; only lists would append.
  ClearListsSetIn(overrides, config);
  config->MergeFrom(overrides);
}

absl::Status CheckRetrainOverrides(const v1::TrainConfig& overrides) {
  std::vector<std::string> refused;
  FindNotOverridable(overrides, "", &refused);
  if (refused.empty()) return absl::OkStatus();
  std::vector<std::string> allowed;
  for (const FieldPath& p : AllOptions()) {
    if (p.back()->options().GetExtension(v1::retrain_override)) allowed.push_back(PathName(p));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "config.", refused.front(),
      ": not overridable in TriggerRetrain (choose a preset that sets it; overridable: ",
      absl::StrJoin(allowed, ", "), ")"));
}

v1::TrainConfig ResolveTrainConfig(const v1::TrainConfig& config) {
  v1::TrainConfig out = config;
  Resolve(&out);
  return out;
}

std::string TrainConfigText(const v1::TrainConfig& config) {
  std::string out;
  pb::TextFormat::PrintToString(config, &out);
  return out;
}

std::string TrainConfigHelp() {
  const auto& docs = DocComments();
  std::string out;
  for (const FieldPath& p : AllOptions()) {
    const pb::FieldDescriptor* f = p.back();
    const auto& o = f->options();
    absl::StrAppend(&out, "  --", f->name(), " (", PathName(p) == f->name() ? "" : PathName(p) + ", ",
                    TypeName(f), f->is_repeated() ? ", comma-separated" : "",
                    f->is_repeated() ? "" : absl::StrCat(", default ", DefaultText(f)),
                    o.HasExtension(v1::legacy_flag)
                        ? absl::StrCat(", also --", o.GetExtension(v1::legacy_flag))
                        : "",
                    o.GetExtension(v1::retrain_override) ? ", retrain override" : "", ")\n");
    auto it = docs.find(absl::StrCat(f->containing_type()->name(), ".", f->name()));
    if (it != docs.end()) {
      for (absl::string_view line : absl::StrSplit(it->second, '\n', absl::SkipEmpty())) {
        absl::StrAppend(&out, "      ", absl::StripAsciiWhitespace(line), "\n");
      }
    }
  }
  return out;
}

}  // namespace recall
