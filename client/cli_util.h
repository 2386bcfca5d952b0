// Helpers of recall-cli that do not talk to the network: flag value parsing, the item features
// TSV, the hand-rolled grpc.health.v1 codec, gRPC status code names and the exit code policy.
// Kept in a library (recall_client_lib) so they can be unit tested.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace recall::cli {

// ---- exit codes (documented in client/README.md) ----
inline constexpr int kExitOk = 0;
inline constexpr int kExitRpcError = 1;       // any RPC error not listed below; also NOT_SERVING
inline constexpr int kExitBadRequest = 2;     // the server refused the request as wrong
inline constexpr int kExitAuth = 3;           // UNAUTHENTICATED / PERMISSION_DENIED
inline constexpr int kExitUsage = 64;         // bad command line or unreadable input file (EX_USAGE)

// "INVALID_ARGUMENT", "UNAVAILABLE", ... ("CODE_<n>" for codes outside the enum).
std::string StatusCodeName(grpc::StatusCode code);

// Exit code for a failed RPC: kExitBadRequest for INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS,
// FAILED_PRECONDITION and OUT_OF_RANGE; kExitAuth for UNAUTHENTICATED and PERMISSION_DENIED;
// kExitRpcError for everything else; kExitOk for OK.
int ExitCodeFor(grpc::StatusCode code);

// ---- flag value parsing. Empty input -> empty result. Whitespace around elements is ignored.
// Errors name the offending element. ----

// "1,2,3" -> {1,2,3}
absl::StatusOr<std::vector<int64_t>> ParseInt64List(absl::string_view text);
// "0.1,-2,3e-2" -> floats; rejects non-finite values unless allow_non_finite.
absl::StatusOr<std::vector<float>> ParseFloatList(absl::string_view text,
                                                  bool allow_non_finite = false);
// "name:value,name2:value" -> map; splits each pair at its FIRST separator, so values may contain
// the separator; names must be non-empty and unique.
absl::StatusOr<std::map<std::string, std::string>> ParseStringPairs(absl::string_view text,
                                                                     char separator = ':');
// "name:1.5,name2:-3" -> map of floats. Non-finite values pass through (the server validates
// them) only if allow_non_finite; otherwise they are a parse error.
absl::StatusOr<std::map<std::string, float>> ParseFloatPairs(absl::string_view text,
                                                             bool allow_non_finite = true);

// ---- item features TSV ----
// A header row whose first column is the item id (conventionally "item_id") and whose other
// columns name features; one row per item. Blank lines and lines starting with '#' are skipped;
// a trailing '\r' is stripped; rows with fewer columns than the header are padded with "".
struct ItemFeatureTable {
  std::vector<std::string> columns;  // feature column names (the id column excluded)
  std::unordered_map<int64_t, std::vector<std::string>> rows;  // id -> values (columns.size())

  // nullptr when the id is not in the table.
  const std::vector<std::string>* Find(int64_t item_id) const;
};
absl::StatusOr<ItemFeatureTable> ParseItemFeatureTsv(absl::string_view content,
                                                     absl::string_view source_name = "<tsv>");
absl::StatusOr<ItemFeatureTable> ReadItemFeatureTsv(const std::string& path);

// The most common value of feature column `column` among `item_ids` (ties -> smallest value).
struct ValueSummary {
  std::string column;
  std::string value;   // empty when no id was found in the table
  int count = 0;       // ids having `value`
  int total = 0;       // item_ids.size()
  int missing = 0;     // ids absent from the table
};
ValueSummary MostCommonValue(const ItemFeatureTable& table, const std::vector<int64_t>& item_ids,
                             size_t column = 0);
// "category: c3 in 9/10" (+ " (1 not in table)" when some ids were missing).
std::string FormatSummary(const ValueSummary& s);

// ---- grpc.health.v1 wire format, encoded by hand (Debian ships no health.proto) ----
// message HealthCheckRequest { string service = 1; }
// message HealthCheckResponse { enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2;
//                                                    SERVICE_UNKNOWN = 3; } ServingStatus status = 1; }
inline constexpr char kHealthCheckMethod[] = "/grpc.health.v1.Health/Check";
enum class HealthStatus : int { kUnknown = 0, kServing = 1, kNotServing = 2, kServiceUnknown = 3 };
std::string EncodeHealthCheckRequest(absl::string_view service);
// Returns the status field (any int value, not only the four known ones); unknown fields are
// skipped; malformed bytes -> error.
absl::StatusOr<int> DecodeHealthCheckResponse(absl::string_view bytes);
std::string HealthStatusName(int status);

// ---- output ----
// Renders a header and rows as columns separated by two spaces, each as wide as its widest cell;
// column i is right-aligned when right_align[i] (missing entries: left). Rows may be shorter than
// the header. Every line ends with '\n'; trailing spaces are trimmed.
std::string FormatTable(const std::vector<std::string>& header,
                        const std::vector<std::vector<std::string>>& rows,
                        const std::vector<bool>& right_align = {});

// ---- index search parameters ----
// "k_factor=2,nprobe=64": sorted by name, values in shortest form; "-" when empty.
std::string FormatSearchParams(const std::map<std::string, double>& params);

// ---- misc ----
// Reads a whole file; the error names the path.
absl::StatusOr<std::string> ReadFile(const std::string& path);
// Splits into lines, dropping a trailing '\r'; returns (1-based line number, text) for lines
// that are not blank and do not start with '#'.
std::vector<std::pair<int, std::string>> ContentLines(absl::string_view content);

}  // namespace recall::cli
