#include "client/cli_util.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace recall::cli {

std::string StatusCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: break;
  }
  return absl::StrCat("CODE_", static_cast<int>(code));
}

int ExitCodeFor(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return kExitOk;
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::NOT_FOUND:
    case grpc::StatusCode::ALREADY_EXISTS:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::OUT_OF_RANGE:
      return kExitBadRequest;
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::PERMISSION_DENIED:
      return kExitAuth;
    default:
      return kExitRpcError;
  }
}

namespace {

// Splits on ',' and strips whitespace; rejects empty elements (e.g. "1,,2" or "1,").
absl::StatusOr<std::vector<std::string>> SplitList(absl::string_view text) {
  std::vector<std::string> out;
  text = absl::StripAsciiWhitespace(text);
  if (text.empty()) return out;
  int index = 0;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    ++index;
    part = absl::StripAsciiWhitespace(part);
    if (part.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("empty element #", index, " in list '", text, "'"));
    }
    out.emplace_back(part);
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<int64_t>> ParseInt64List(absl::string_view text) {
  auto parts = SplitList(text);
  if (!parts.ok()) return parts.status();
  std::vector<int64_t> out;
  out.reserve(parts->size());
  for (const std::string& p : *parts) {
    int64_t v = 0;
    if (!absl::SimpleAtoi(p, &v)) {
      return absl::InvalidArgumentError(absl::StrCat("'", p, "' is not an integer (int64)"));
    }
    out.push_back(v);
  }
  return out;
}

absl::StatusOr<std::vector<float>> ParseFloatList(absl::string_view text, bool allow_non_finite) {
  auto parts = SplitList(text);
  if (!parts.ok()) return parts.status();
  std::vector<float> out;
  out.reserve(parts->size());
  for (const std::string& p : *parts) {
    float v = 0;
    if (!absl::SimpleAtof(p, &v)) {
      return absl::InvalidArgumentError(absl::StrCat("'", p, "' is not a number"));
    }
    if (!allow_non_finite && !std::isfinite(v)) {
      return absl::InvalidArgumentError(absl::StrCat("'", p, "' is not a finite number"));
    }
    out.push_back(v);
  }
  return out;
}

absl::StatusOr<std::map<std::string, std::string>> ParseStringPairs(absl::string_view text,
                                                                     char separator) {
  auto parts = SplitList(text);
  if (!parts.ok()) return parts.status();
  std::map<std::string, std::string> out;
  for (const std::string& p : *parts) {
    size_t pos = p.find(separator);
    if (pos == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("'", p, "' is not of the form name",
                                                     std::string(1, separator), "value"));
    }
    std::string name(absl::StripAsciiWhitespace(absl::string_view(p).substr(0, pos)));
    std::string value(absl::StripAsciiWhitespace(absl::string_view(p).substr(pos + 1)));
    if (name.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("'", p, "' has an empty name"));
    }
    if (!out.emplace(name, value).second) {
      return absl::InvalidArgumentError(absl::StrCat("name '", name, "' given twice"));
    }
  }
  return out;
}

absl::StatusOr<std::map<std::string, float>> ParseFloatPairs(absl::string_view text,
                                                             bool allow_non_finite) {
  auto pairs = ParseStringPairs(text, ':');
  if (!pairs.ok()) return pairs.status();
  std::map<std::string, float> out;
  for (const auto& [name, value] : *pairs) {
    float v = 0;
    if (!absl::SimpleAtof(value, &v)) {
      return absl::InvalidArgumentError(
          absl::StrCat("value '", value, "' of '", name, "' is not a number"));
    }
    if (!allow_non_finite && !std::isfinite(v)) {
      return absl::InvalidArgumentError(
          absl::StrCat("value '", value, "' of '", name, "' is not a finite number"));
    }
    out[name] = v;
  }
  return out;
}

// ---- files ----

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open '", path, "'"));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("error reading '", path, "'"));
  return ss.str();
}

std::vector<std::pair<int, std::string>> ContentLines(absl::string_view content) {
  std::vector<std::pair<int, std::string>> out;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(content, '\n')) {
    ++line_no;
    absl::ConsumeSuffix(&line, "\r");
    absl::string_view stripped = absl::StripAsciiWhitespace(line);
    if (stripped.empty() || stripped[0] == '#') continue;
    out.emplace_back(line_no, std::string(line));
  }
  return out;
}

// ---- item features TSV ----

const std::vector<std::string>* ItemFeatureTable::Find(int64_t item_id) const {
  auto it = rows.find(item_id);
  return it == rows.end() ? nullptr : &it->second;
}

absl::StatusOr<ItemFeatureTable> ParseItemFeatureTsv(absl::string_view content,
                                                     absl::string_view source_name) {
  ItemFeatureTable table;
  bool have_header = false;
  for (const auto& [line_no, line] : ContentLines(content)) {
    std::vector<std::string> fields = absl::StrSplit(line, '\t');
    for (std::string& f : fields) f = std::string(absl::StripAsciiWhitespace(f));
    if (!have_header) {
      if (fields.size() < 2) {
        return absl::InvalidArgumentError(
            absl::StrCat(source_name, ":", line_no,
                         ": header needs an id column and at least one feature column "
                         "separated by tabs, e.g. \"item_id\\tcategory\""));
      }
      table.columns.assign(fields.begin() + 1, fields.end());
      have_header = true;
      continue;
    }
    int64_t id = 0;
    if (!absl::SimpleAtoi(fields[0], &id)) {
      return absl::InvalidArgumentError(
          absl::StrCat(source_name, ":", line_no, ": item id '", fields[0], "' is not an integer"));
    }
    if (fields.size() > table.columns.size() + 1) {
      return absl::InvalidArgumentError(absl::StrCat(source_name, ":", line_no, ": ",
                                                     fields.size(), " columns, header has ",
                                                     table.columns.size() + 1));
    }
    std::vector<std::string> values(fields.begin() + 1, fields.end());
    values.resize(table.columns.size());
    table.rows[id] = std::move(values);  // a later row for the same id wins
  }
  if (!have_header) {
    return absl::InvalidArgumentError(absl::StrCat(source_name, ": no header row"));
  }
  return table;
}

absl::StatusOr<ItemFeatureTable> ReadItemFeatureTsv(const std::string& path) {
  auto content = ReadFile(path);
  if (!content.ok()) return content.status();
  return ParseItemFeatureTsv(*content, path);
}

ValueSummary MostCommonValue(const ItemFeatureTable& table, const std::vector<int64_t>& item_ids,
                             size_t column) {
  ValueSummary s;
  if (column < table.columns.size()) s.column = table.columns[column];
  s.total = static_cast<int>(item_ids.size());
  std::map<std::string, int> counts;
  for (int64_t id : item_ids) {
    const auto* row = table.Find(id);
    if (row == nullptr || column >= row->size()) {
      ++s.missing;
      continue;
    }
    ++counts[(*row)[column]];
  }
  for (const auto& [value, n] : counts) {  // map order: ties go to the smallest value
    if (n > s.count) {
      s.count = n;
      s.value = value;
    }
  }
  return s;
}

std::string FormatSummary(const ValueSummary& s) {
  std::string out = absl::StrCat(s.column, ": ", s.count == 0 ? "-" : s.value, " in ", s.count,
                                 "/", s.total);
  if (s.missing > 0) absl::StrAppend(&out, " (", s.missing, " not in table)");
  return out;
}

// ---- output ----

std::string FormatTable(const std::vector<std::string>& header,
                        const std::vector<std::vector<std::string>>& rows,
                        const std::vector<bool>& right_align) {
  std::vector<size_t> width(header.size(), 0);
  auto widen = [&](const std::vector<std::string>& row) {
    if (row.size() > width.size()) width.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  };
  widen(header);
  for (const auto& row : rows) widen(row);
  std::string out;
  auto emit = [&](const std::vector<std::string>& row) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      if (i > 0) line += "  ";
      const size_t pad = width[i] - row[i].size();
      const bool right = i < right_align.size() && right_align[i];
      if (right) line.append(pad, ' ');
      line += row[i];
      if (!right) line.append(pad, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line;
    out += '\n';
  };
  emit(header);
  for (const auto& row : rows) emit(row);
  return out;
}

std::string FormatSearchParams(const std::map<std::string, double>& params) {
  if (params.empty()) return "-";
  std::string out;
  for (const auto& [name, value] : params) {
    absl::StrAppend(&out, out.empty() ? "" : ",", name, "=", value);
  }
  return out;
}

// ---- grpc.health.v1 codec ----

namespace {

void AppendVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

bool ReadVarint(absl::string_view* in, uint64_t* v) {
  *v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (in->empty()) return false;
    uint8_t b = static_cast<uint8_t>((*in)[0]);
    in->remove_prefix(1);
    *v |= static_cast<uint64_t>(b & 0x7f) << shift;
    if ((b & 0x80) == 0) return true;
  }
  return false;
}

}  // namespace

std::string EncodeHealthCheckRequest(absl::string_view service) {
  std::string out;
  if (service.empty()) return out;  // proto3: the default value is not serialized
  out.push_back(static_cast<char>((1 << 3) | 2));  // field 1, length-delimited
  AppendVarint(&out, service.size());
  out.append(service.data(), service.size());
  return out;
}

absl::StatusOr<int> DecodeHealthCheckResponse(absl::string_view bytes) {
  int status = 0;
  while (!bytes.empty()) {
    uint64_t key = 0;
    if (!ReadVarint(&bytes, &key)) return absl::DataLossError("truncated field key");
    const uint64_t field = key >> 3;
    const int wire_type = static_cast<int>(key & 7);
    if (field == 0) return absl::DataLossError("field number 0");
    switch (wire_type) {
      case 0: {  // varint
        uint64_t v = 0;
        if (!ReadVarint(&bytes, &v)) return absl::DataLossError("truncated varint");
        if (field == 1) status = static_cast<int>(static_cast<int32_t>(v));
        break;
      }
      case 1:  // fixed64
        if (bytes.size() < 8) return absl::DataLossError("truncated fixed64");
        bytes.remove_prefix(8);
        break;
      case 2: {  // length-delimited
        uint64_t len = 0;
        if (!ReadVarint(&bytes, &len) || len > bytes.size()) {
          return absl::DataLossError("truncated length-delimited field");
        }
        bytes.remove_prefix(len);
        break;
      }
      case 5:  // fixed32
        if (bytes.size() < 4) return absl::DataLossError("truncated fixed32");
        bytes.remove_prefix(4);
        break;
      default:
        return absl::DataLossError(absl::StrCat("unsupported wire type ", wire_type));
    }
  }
  return status;
}

std::string HealthStatusName(int status) {
  switch (status) {
    case 0: return "UNKNOWN";
    case 1: return "SERVING";
    case 2: return "NOT_SERVING";
    case 3: return "SERVICE_UNKNOWN";
    default: return absl::StrCat("STATUS_", status);
  }
}

}  // namespace recall::cli
