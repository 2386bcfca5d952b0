// recall-cli: every RPC of recall-server from the shell.
//
//   recall-cli <command> [--flags]        recall-cli help [<command>]
//
// Flags are gflags flags, but the command line is parsed here (not by
// gflags::ParseCommandLineFlags) so that every mistake -- unknown flag, bad value, flag that does
// not apply to the command -- gives one clear message and exit code 64, and so that --help shows
// only this tool's flags. See client/README.md for the command reference and exit codes.

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gflags/gflags.h>
#include <google/protobuf/text_format.h>
#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "client/cli_util.h"
#include "recall/v1/recall.grpc.pb.h"

// ---- global ----
DEFINE_string(addr, "127.0.0.1:50051", "server address, host:port");
DEFINE_int32(timeout_ms, 5000,
             "deadline of each RPC in milliseconds (for 'stream': of the whole stream; "
             "0 = no deadline)");
DEFINE_bool(json, false, "print responses as proto3 JSON, one object per line");
DEFINE_string(token, "", "bearer token, sent as 'authorization: Bearer <token>' metadata");
DEFINE_bool(wait_for_ready, false,
            "wait (up to --timeout_ms) for the server to become reachable instead of failing "
            "fast with UNAVAILABLE");

// ---- recall / stream ----
DEFINE_int64(user_id, 0, "user id (unknown ids use the OOV row)");
DEFINE_string(history, "", "user's history item ids, most recent last: 1,2,3");
DEFINE_int32(k, 10, "number of items to return");
DEFINE_string(exclude, "", "item ids never to return: 4,5");
DEFINE_bool(exclude_history, false, "also exclude the --history items");
DEFINE_string(cat, "", "categorical features name:value,name2:value");
DEFINE_string(num, "", "numeric features name:1.5,name2:-0.3");
DEFINE_bool(return_embedding, false, "ask for the user tower output and print it");
DEFINE_string(request_id, "", "recall/stream: request id echoed by the server (stream --repeat: "
              "prefix); upsert/delete: idempotency key, so a retry is logged once (upsert "
              "--file: <id>-<call number>)");
DEFINE_uint64(min_write_sequence, 0, "recall: answer only once the server has applied the write "
              "with this sequence (the write_sequence upsert/delete printed): read-your-writes "
              "on any replica");
DEFINE_bool(digest, false, "index-info: also compute the online-write state digest (reads back "
            "every item written online)");
DEFINE_string(item_features, "",
              "TSV with a header row 'item_id<TAB>feature...': show those columns per result "
              "and summarize the first one");
DEFINE_string(requests, "", "file with one RecallRequest in proto3 JSON per line");
DEFINE_int32(repeat, 0, "send the request built from the recall flags N times on one stream");

// ---- upsert / delete ----
DEFINE_int64(item_id, 0, "item id to upsert");
DEFINE_string(vector, "", "raw embedding 0.1,0.2,... (L2-normalized, length = model dim)");
DEFINE_int64(model_version, 0, "with --vector: the serving model version the vector belongs to");
DEFINE_string(file, "", "file with one ItemUpsert in proto3 JSON per line (bulk upsert)");
DEFINE_int32(batch_size, 1000, "with --file: items per UpsertItems call");
DEFINE_string(ids, "", "item ids to delete: 1,2,3");

// ---- health ----
DEFINE_string(service, "", "service name to check (empty = the whole server)");

// ---- training ----
DEFINE_string(dataset, "", "dataset to retrain on, e.g. synthetic, lightgcn:<dir>");
DEFINE_string(preset, "", "retrain: the trainer preset (default | gowalla | smoke; empty: default)");
DEFINE_string(override, "",
              "retrain: TrainConfig overrides key=value,key2=value; a key is a field (a tower "
              "field by its name or as tower.<name>), e.g. epochs=3,learning_rate=0.01,dim=32");
DEFINE_string(config, "",
              "retrain: TrainConfig overrides as textproto, e.g. 'epochs: 3 tower { dim: 32 }' "
              "(applied before --override)");
DEFINE_string(job_id, "", "retrain job id");
DEFINE_bool(wait, false, "poll the job until it ends; exit 0 only if it SUCCEEDED");
DEFINE_int32(poll_ms, 1000, "with --wait: poll interval in milliseconds");
// Shown and accepted as --version (gflags reserves that name for itself).
DEFINE_int64(target_version, -1, "model version to serve; 0 = unpin (follow the newest)");

namespace {

using recall::cli::kExitOk;
using recall::cli::kExitRpcError;
using recall::cli::kExitUsage;
namespace rv1 = ::recall::v1;

constexpr char kProgram[] = "recall-cli";

// ============================================================================================
// Command table and argument parsing
// ============================================================================================

struct Command {
  std::string name;
  std::string summary;
  std::vector<std::string> usage;     // lines after "recall-cli "
  std::vector<std::string> flags;     // command-specific flags
  std::function<int()> run;
};

const std::vector<std::string> kGlobalFlags = {"addr", "timeout_ms", "json", "token",
                                               "wait_for_ready"};

std::vector<Command>& Commands();  // defined at the bottom, after the command functions

const Command* FindCommand(const std::string& name) {
  for (const Command& c : Commands()) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

std::set<std::string> g_given;      // flags given on the command line (internal names)
std::string g_command;              // the command being run

bool Given(const std::string& flag) { return g_given.count(flag) > 0; }

// The name a flag is shown with.
std::string DisplayName(const std::string& flag) {
  return flag == "target_version" ? "version" : flag;
}

int UsageError(const std::string& message) {
  std::cerr << "error: " << message << "\n";
  if (!g_command.empty()) {
    std::cerr << "(see '" << kProgram << " " << g_command << " --help')\n";
  } else {
    std::cerr << "(see '" << kProgram << " --help')\n";
  }
  return kExitUsage;
}

size_t EditDistance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::set<std::string> AllFlags() {
  std::set<std::string> all(kGlobalFlags.begin(), kGlobalFlags.end());
  for (const Command& c : Commands()) all.insert(c.flags.begin(), c.flags.end());
  return all;
}

std::string Suggest(const std::string& name) {
  std::string best;
  size_t best_d = 3;  // suggest only close matches
  for (const std::string& f : AllFlags()) {
    size_t d = EditDistance(name, DisplayName(f));
    if (d < best_d) {
      best_d = d;
      best = DisplayName(f);
    }
  }
  return best.empty() ? "" : absl::StrCat(" (did you mean --", best, "?)");
}

bool IsBoolFlag(const std::string& name) {
  gflags::CommandLineFlagInfo info;
  return gflags::GetCommandLineFlagInfo(name.c_str(), &info) && info.type == "bool";
}

struct ParsedArgs {
  bool help = false;
  std::vector<std::string> positionals;
};

// Returns kExitOk or kExitUsage (message already printed).
int ParseArgs(int argc, char** argv, ParsedArgs* out) {
  const std::set<std::string> known = AllFlags();
  bool serve_version_cmd = false;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "serve-version") serve_version_cmd = true;
  }
  bool only_positionals = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (only_positionals || arg.size() < 2 || arg[0] != '-') {
      out->positionals.push_back(arg);
      continue;
    }
    if (arg == "--") {
      only_positionals = true;
      continue;
    }
    std::string body = arg.substr(arg[1] == '-' ? 2 : 1);
    std::string name = body;
    std::optional<std::string> value;
    if (size_t eq = body.find('='); eq != std::string::npos) {
      name = body.substr(0, eq);
      value = body.substr(eq + 1);
    }
    if (name == "help" || name == "h" || name == "helpshort" || name == "helpfull") {
      out->help = true;
      continue;
    }
    if (name == "version") {
      if (!serve_version_cmd) {
        std::cout << kProgram << " (Tower Recall), recall.v1 API\n";
        std::exit(kExitOk);
      }
      name = "target_version";
    } else if (name == "target_version") {
      return UsageError("unknown flag --target_version (use --version)");
    }
    if (known.count(name) == 0) {
      // --noFLAG for booleans
      if (!value && name.rfind("no", 0) == 0 && known.count(name.substr(2)) &&
          IsBoolFlag(name.substr(2))) {
        name = name.substr(2);
        value = "false";
      } else {
        return UsageError(absl::StrCat("unknown flag --", name, Suggest(name)));
      }
    }
    const bool is_bool = IsBoolFlag(name);
    if (!value) {
      if (is_bool) {
        value = "true";
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        return UsageError(absl::StrCat("flag --", DisplayName(name), " needs a value"));
      }
    }
    if (gflags::SetCommandLineOption(name.c_str(), value->c_str()).empty()) {
      gflags::CommandLineFlagInfo info;
      gflags::GetCommandLineFlagInfo(name.c_str(), &info);
      return UsageError(absl::StrCat("invalid value '", *value, "' for --", DisplayName(name),
                                     " (expected ", info.type, ")"));
    }
    g_given.insert(name);
  }
  return kExitOk;
}

// ---- help ----

std::string FlagLine(const std::string& flag) {
  gflags::CommandLineFlagInfo info;
  if (!gflags::GetCommandLineFlagInfo(flag.c_str(), &info)) return "";
  std::string left = absl::StrCat("--", DisplayName(flag));
  if (info.type == "bool") {
    // shown as a switch
  } else if (info.type == "string") {
    left += info.default_value.empty() ? "=<string>" : absl::StrCat("=", info.default_value);
  } else {
    left += absl::StrCat("=", info.default_value);
  }
  // Word-wrap the description at ~100 columns, continuation lines under its first word.
  constexpr size_t kIndent = 29, kWidth = 100;
  std::string out = absl::StrFormat("  %-26s ", left);
  if (out.size() > kIndent) out += "\n" + std::string(kIndent, ' ');
  size_t col = kIndent;
  bool first = true;
  for (absl::string_view word : absl::StrSplit(info.description, ' ', absl::SkipEmpty())) {
    if (!first && col + 1 + word.size() > kWidth) {
      out += "\n" + std::string(kIndent, ' ');
      col = kIndent;
    } else if (!first) {
      out += ' ';
      ++col;
    }
    out.append(word.data(), word.size());
    col += word.size();
    first = false;
  }
  return out + "\n";
}

void PrintGeneralHelp(std::ostream& os) {
  os << kProgram << ": every RPC of recall-server from the shell.\n\n"
     << "usage: " << kProgram << " <command> [--flags]\n"
     << "       " << kProgram << " help <command>      (or: " << kProgram
     << " <command> --help)\n\ncommands:\n";
  for (const Command& c : Commands()) os << absl::StrFormat("  %-15s %s\n", c.name, c.summary);
  os << "\nglobal flags (every command):\n";
  for (const std::string& f : kGlobalFlags) os << FlagLine(f);
  os << "\nexit codes:\n"
     << "  0   OK (health: SERVING; --wait: job SUCCEEDED)\n"
     << "  1   RPC failed (UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, ...), health not SERVING,\n"
     << "      waited-for job did not succeed, stream replies out of order\n"
     << "  2   request refused: INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS,\n"
     << "      FAILED_PRECONDITION, OUT_OF_RANGE\n"
     << "  3   UNAUTHENTICATED, PERMISSION_DENIED\n"
     << "  64  usage error: unknown flag, bad value, unreadable input file\n"
     << "RPC errors are printed to stderr as 'error: <CODE_NAME>: <message>'.\n";
}

void PrintCommandHelp(const Command& c, std::ostream& os) {
  os << c.summary << "\n\nusage:\n";
  for (const std::string& u : c.usage) {
    // A line starting with a space continues the previous one.
    const std::string lead = u.empty() || u[0] != ' ' ? absl::StrCat(kProgram, " ")
                                                      : std::string(sizeof(kProgram), ' ');
    os << "  " << lead << u << "\n";
  }
  if (!c.flags.empty()) {
    os << "\nflags:\n";
    for (const std::string& f : c.flags) os << FlagLine(f);
  }
  os << "\nglobal flags:\n";
  for (const std::string& f : kGlobalFlags) os << FlagLine(f);
}

// ============================================================================================
// RPC plumbing
// ============================================================================================

std::shared_ptr<grpc::Channel> MakeChannel() {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  return grpc::CreateCustomChannel(FLAGS_addr, grpc::InsecureChannelCredentials(), args);
}

void Prepare(grpc::ClientContext* ctx) {
  if (FLAGS_timeout_ms > 0) {
    ctx->set_deadline(std::chrono::system_clock::now() +
                      std::chrono::milliseconds(FLAGS_timeout_ms));
  }
  if (!FLAGS_token.empty()) ctx->AddMetadata("authorization", "Bearer " + FLAGS_token);
  if (FLAGS_wait_for_ready) ctx->set_wait_for_ready(true);
}

int RpcError(const grpc::Status& s) {
  std::cerr << "error: " << recall::cli::StatusCodeName(s.error_code()) << ": "
            << s.error_message() << "\n";
  return recall::cli::ExitCodeFor(s.error_code());
}

std::string ToJson(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions opts;
  opts.always_print_primitive_fields = true;
  std::string out;
  auto st = google::protobuf::util::MessageToJsonString(m, &out, opts);
  if (!st.ok()) return absl::StrCat("{\"error\": \"json: ", st.ToString(), "\"}");
  return out;
}

template <typename M>
absl::Status FromJson(const std::string& json, M* m) {
  google::protobuf::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = false;
  auto st = google::protobuf::util::JsonStringToMessage(json, m, opts);
  if (!st.ok()) return absl::InvalidArgumentError(st.ToString());
  return absl::OkStatus();
}

template <typename T>
bool ParseOrReport(const absl::StatusOr<T>& r, const std::string& flag, int* exit_code) {
  if (r.ok()) return true;
  *exit_code = UsageError(absl::StrCat("--", flag, ": ", r.status().message()));
  return false;
}

std::string Score(float s) { return absl::StrFormat("%.6f", s); }

// ============================================================================================
// recall / stream
// ============================================================================================

// Builds the RecallRequest from the recall flags; returns kExitOk or a usage error code.
int BuildRecallRequest(rv1::RecallRequest* req) {
  int rc = kExitOk;
  auto history = recall::cli::ParseInt64List(FLAGS_history);
  if (!ParseOrReport(history, "history", &rc)) return rc;
  auto exclude = recall::cli::ParseInt64List(FLAGS_exclude);
  if (!ParseOrReport(exclude, "exclude", &rc)) return rc;
  auto cat = recall::cli::ParseStringPairs(FLAGS_cat, ':');
  if (!ParseOrReport(cat, "cat", &rc)) return rc;
  // Non-finite numbers pass through: validating them is the server's job.
  auto num = recall::cli::ParseFloatPairs(FLAGS_num, /*allow_non_finite=*/true);
  if (!ParseOrReport(num, "num", &rc)) return rc;

  rv1::UserFeatures* user = req->mutable_user();
  user->set_user_id(FLAGS_user_id);
  for (int64_t id : *history) user->add_history_item_ids(id);
  for (const auto& [k, v] : *cat) (*user->mutable_categorical())[k] = v;
  for (const auto& [k, v] : *num) (*user->mutable_numeric())[k] = v;
  req->set_k(FLAGS_k);
  for (int64_t id : *exclude) req->add_exclude_item_ids(id);
  req->set_exclude_history(FLAGS_exclude_history);
  req->set_return_user_embedding(FLAGS_return_embedding);
  req->set_request_id(FLAGS_request_id);
  req->set_min_write_sequence(FLAGS_min_write_sequence);
  return kExitOk;
}

// Loads --item_features if given; returns kExitOk or a usage error code.
int LoadItemFeatures(std::optional<recall::cli::ItemFeatureTable>* table) {
  if (FLAGS_item_features.empty()) return kExitOk;
  auto t = recall::cli::ReadItemFeatureTsv(FLAGS_item_features);
  if (!t.ok()) return UsageError(absl::StrCat("--item_features: ", t.status().message()));
  *table = std::move(*t);
  return kExitOk;
}

void PrintRecallResponse(const rv1::RecallRequest& req, const rv1::RecallResponse& resp,
                         const std::optional<recall::cli::ItemFeatureTable>& table) {
  std::string head = absl::StrCat("model_version: ", resp.model_version(),
                                   "  index_generation: ", resp.index_generation(),
                                   "  items: ", resp.items_size());
  if (resp.applied_write_sequence() > 0) {
    absl::StrAppend(&head, "  applied_write_sequence: ", resp.applied_write_sequence());
  }
  if (!resp.request_id().empty()) absl::StrAppend(&head, "  request_id: ", resp.request_id());
  std::cout << head << "\n";

  std::vector<std::string> header = {"rank", "item_id", "score"};
  std::vector<bool> right = {true, true, true};
  if (table) {
    header.insert(header.end(), table->columns.begin(), table->columns.end());
  }
  std::vector<std::vector<std::string>> rows;
  std::vector<int64_t> ids;
  for (int i = 0; i < resp.items_size(); ++i) {
    const rv1::RecalledItem& it = resp.items(i);
    ids.push_back(it.item_id());
    std::vector<std::string> row = {absl::StrCat(i + 1), absl::StrCat(it.item_id()),
                                    Score(it.score())};
    if (table) {
      const auto* values = table->Find(it.item_id());
      for (size_t c = 0; c < table->columns.size(); ++c) {
        row.push_back(values ? (*values)[c] : "?");
      }
    }
    rows.push_back(std::move(row));
  }
  if (!rows.empty()) std::cout << recall::cli::FormatTable(header, rows, right);

  if (table && !table->columns.empty()) {
    if (!ids.empty()) {
      std::cout << recall::cli::FormatSummary(recall::cli::MostCommonValue(*table, ids, 0))
                << "\n";
    }
    const auto& hist = req.user().history_item_ids();
    if (!hist.empty()) {
      std::vector<int64_t> hist_ids(hist.begin(), hist.end());
      std::cout << "history "
                << recall::cli::FormatSummary(recall::cli::MostCommonValue(*table, hist_ids, 0))
                << "\n";
    }
  }
  if (resp.user_embedding_size() > 0) {
    std::vector<std::string> v;
    for (float x : resp.user_embedding()) v.push_back(absl::StrFormat("%.6f", x));
    float norm = 0;
    for (float x : resp.user_embedding()) norm += x * x;
    std::cout << "user_embedding (dim " << resp.user_embedding_size() << ", norm "
              << absl::StrFormat("%.4f", std::sqrt(norm)) << "): [" << absl::StrJoin(v, ", ")
              << "]\n";
  }
}

int CmdRecall() {
  rv1::RecallRequest req;
  if (int rc = BuildRecallRequest(&req); rc != kExitOk) return rc;
  std::optional<recall::cli::ItemFeatureTable> table;
  if (int rc = LoadItemFeatures(&table); rc != kExitOk) return rc;

  auto stub = rv1::RecallService::NewStub(MakeChannel());
  grpc::ClientContext ctx;
  Prepare(&ctx);
  rv1::RecallResponse resp;
  grpc::Status s = stub->Recall(&ctx, req, &resp);
  if (!s.ok()) return RpcError(s);
  if (FLAGS_json) {
    std::cout << ToJson(resp) << "\n";
  } else {
    PrintRecallResponse(req, resp, table);
  }
  return kExitOk;
}

int CmdStream() {
  const bool from_file = Given("requests");
  if (from_file == (FLAGS_repeat > 0)) {
    return UsageError(from_file ? "give either --requests or --repeat, not both"
                                : "stream needs --requests=<file> or --repeat=N (N >= 1)");
  }
  std::vector<rv1::RecallRequest> reqs;
  if (from_file) {
    for (const char* f : {"user_id", "history", "k", "exclude", "exclude_history", "cat", "num",
                          "return_embedding", "request_id"}) {
      if (Given(f)) {
        return UsageError(absl::StrCat("--", f, " builds a request for --repeat; with --requests "
                                       "every request comes from the file"));
      }
    }
    auto content = recall::cli::ReadFile(FLAGS_requests);
    if (!content.ok()) return UsageError(absl::StrCat("--requests: ", content.status().message()));
    for (const auto& [line_no, line] : recall::cli::ContentLines(*content)) {
      rv1::RecallRequest r;
      if (absl::Status st = FromJson(line, &r); !st.ok()) {
        return UsageError(absl::StrCat(FLAGS_requests, ":", line_no,
                                       ": not a RecallRequest in proto3 JSON: ", st.message()));
      }
      if (r.request_id().empty()) r.set_request_id(absl::StrCat("line-", line_no));
      reqs.push_back(std::move(r));
    }
    if (reqs.empty()) return UsageError(absl::StrCat("--requests: ", FLAGS_requests, " is empty"));
  } else {
    rv1::RecallRequest base;
    if (int rc = BuildRecallRequest(&base); rc != kExitOk) return rc;
    const std::string prefix = FLAGS_request_id.empty() ? "r" : FLAGS_request_id + "-";
    for (int i = 0; i < FLAGS_repeat; ++i) {
      rv1::RecallRequest r = base;
      r.set_request_id(absl::StrCat(prefix, i + 1));
      reqs.push_back(std::move(r));
    }
  }
  std::optional<recall::cli::ItemFeatureTable> table;
  if (int rc = LoadItemFeatures(&table); rc != kExitOk) return rc;

  auto stub = rv1::RecallService::NewStub(MakeChannel());
  grpc::ClientContext ctx;
  Prepare(&ctx);
  const auto start = std::chrono::steady_clock::now();
  std::unique_ptr<grpc::ClientReaderWriter<rv1::RecallRequest, rv1::RecallResponse>> rw =
      stub->RecallStream(&ctx);
  // Write from a second thread so a long request file cannot deadlock on flow control while
  // the replies pile up unread.
  std::thread writer([&] {
    for (const rv1::RecallRequest& r : reqs) {
      if (!rw->Write(r)) break;  // the stream ended; Finish() says why
    }
    rw->WritesDone();
  });
  size_t n = 0;
  std::vector<std::string> problems;
  rv1::RecallResponse resp;
  while (rw->Read(&resp)) {
    if (n >= reqs.size()) {
      problems.push_back(absl::StrCat("extra response #", n + 1, " (request_id '",
                                      resp.request_id(), "')"));
    } else if (resp.request_id() != reqs[n].request_id()) {
      problems.push_back(absl::StrCat("response #", n + 1, " has request_id '", resp.request_id(),
                                      "', expected '", reqs[n].request_id(), "'"));
    }
    if (FLAGS_json) {
      std::cout << ToJson(resp) << "\n";
    } else {
      if (n > 0) std::cout << "\n";
      std::cout << "--- response " << n + 1 << " of " << reqs.size() << "\n";
      PrintRecallResponse(n < reqs.size() ? reqs[n] : rv1::RecallRequest(), resp, table);
    }
    std::cout.flush();
    ++n;
  }
  writer.join();
  grpc::Status s = rw->Finish();
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  if (!s.ok()) {
    std::cerr << "stream: " << n << " of " << reqs.size() << " responses before the error\n";
    return RpcError(s);
  }
  if (n < reqs.size()) {
    problems.push_back(absl::StrCat("stream ended after ", n, " of ", reqs.size(), " responses"));
  }
  if (!FLAGS_json) {
    std::cout << "\nstream: " << reqs.size() << " requests, " << n << " responses in "
              << absl::StrFormat("%.1f", ms) << " ms\n";
  }
  for (const std::string& p : problems) std::cerr << "error: stream: " << p << "\n";
  return problems.empty() ? kExitOk : kExitRpcError;
}

// ============================================================================================
// upsert / delete / index-info
// ============================================================================================

int CmdUpsert() {
  std::vector<rv1::ItemUpsert> items;
  if (Given("file")) {
    for (const char* f : {"item_id", "vector", "model_version", "cat", "num"}) {
      if (Given(f)) {
        return UsageError(absl::StrCat("--", f, " cannot be combined with --file"));
      }
    }
    auto content = recall::cli::ReadFile(FLAGS_file);
    if (!content.ok()) return UsageError(absl::StrCat("--file: ", content.status().message()));
    for (const auto& [line_no, line] : recall::cli::ContentLines(*content)) {
      rv1::ItemUpsert u;
      if (absl::Status st = FromJson(line, &u); !st.ok()) {
        return UsageError(absl::StrCat(FLAGS_file, ":", line_no,
                                       ": not an ItemUpsert in proto3 JSON: ", st.message()));
      }
      if (u.payload_case() == rv1::ItemUpsert::PAYLOAD_NOT_SET) {
        return UsageError(absl::StrCat(FLAGS_file, ":", line_no,
                                       ": ItemUpsert needs \"features\" or \"vector\""));
      }
      items.push_back(std::move(u));
    }
    if (items.empty()) return UsageError(absl::StrCat("--file: ", FLAGS_file, " is empty"));
  } else {
    if (!Given("item_id")) {
      return UsageError("upsert needs --item_id=N (with --cat/--num or --vector), or --file");
    }
    rv1::ItemUpsert u;
    int rc = kExitOk;
    if (Given("vector")) {
      if (Given("cat") || Given("num")) {
        return UsageError("--vector upserts a raw vector; it cannot be combined with --cat/--num");
      }
      if (!Given("model_version")) {
        return UsageError("--vector needs --model_version=V (the serving version, see index-info)");
      }
      auto values = recall::cli::ParseFloatList(FLAGS_vector, /*allow_non_finite=*/true);
      if (!ParseOrReport(values, "vector", &rc)) return rc;
      rv1::RawVector* v = u.mutable_vector();
      v->set_item_id(FLAGS_item_id);
      v->set_model_version(FLAGS_model_version);
      for (float x : *values) v->add_values(x);
    } else {
      if (Given("model_version")) return UsageError("--model_version only applies with --vector");
      auto cat = recall::cli::ParseStringPairs(FLAGS_cat, ':');
      if (!ParseOrReport(cat, "cat", &rc)) return rc;
      auto num = recall::cli::ParseFloatPairs(FLAGS_num, /*allow_non_finite=*/true);
      if (!ParseOrReport(num, "num", &rc)) return rc;
      rv1::ItemFeatures* f = u.mutable_features();
      f->set_item_id(FLAGS_item_id);
      for (const auto& [k, v] : *cat) (*f->mutable_categorical())[k] = v;
      for (const auto& [k, v] : *num) (*f->mutable_numeric())[k] = v;
    }
    items.push_back(std::move(u));
  }
  if (FLAGS_batch_size < 1) return UsageError("--batch_size must be >= 1");

  auto stub = rv1::RecallService::NewStub(MakeChannel());
  int64_t upserted = 0;
  int calls = 0;
  rv1::UpsertItemsResponse last;
  for (size_t begin = 0; begin < items.size(); begin += FLAGS_batch_size) {
    const size_t end = std::min(items.size(), begin + static_cast<size_t>(FLAGS_batch_size));
    rv1::UpsertItemsRequest req;
    for (size_t i = begin; i < end; ++i) *req.add_items() = items[i];
    if (!FLAGS_request_id.empty()) {
      req.set_request_id(items.size() > static_cast<size_t>(FLAGS_batch_size)
                             ? absl::StrCat(FLAGS_request_id, "-", calls + 1)
                             : FLAGS_request_id);
    }
    grpc::ClientContext ctx;
    Prepare(&ctx);
    rv1::UpsertItemsResponse resp;
    grpc::Status s = stub->UpsertItems(&ctx, req, &resp);
    if (!s.ok()) {
      if (begin > 0) {
        std::cerr << "upsert: items 1.." << begin << " of " << items.size()
                  << " were acknowledged (" << upserted << " upserted) before items " << begin + 1
                  << ".." << end << " failed\n";
      }
      return RpcError(s);
    }
    ++calls;
    upserted += resp.upserted();
    last = resp;
    if (FLAGS_json) std::cout << ToJson(resp) << "\n";
  }
  if (!FLAGS_json) {
    std::cout << "upserted: " << upserted << " of " << items.size() << " items in " << calls
              << (calls == 1 ? " call" : " calls") << "  index_generation: "
              << last.index_generation() << "  model_version: " << last.model_version()
              << "  write_sequence: " << last.write_sequence()
              << (last.duplicate() ? "  (a retry: logged before)" : "") << "\n";
  }
  return kExitOk;
}

int CmdDelete() {
  int rc = kExitOk;
  auto ids = recall::cli::ParseInt64List(FLAGS_ids);
  if (!ParseOrReport(ids, "ids", &rc)) return rc;
  if (ids->empty()) return UsageError("delete needs --ids=1,2,3");
  rv1::DeleteItemsRequest req;
  for (int64_t id : *ids) req.add_item_ids(id);
  req.set_request_id(FLAGS_request_id);
  auto stub = rv1::RecallService::NewStub(MakeChannel());
  grpc::ClientContext ctx;
  Prepare(&ctx);
  rv1::DeleteItemsResponse resp;
  grpc::Status s = stub->DeleteItems(&ctx, req, &resp);
  if (!s.ok()) return RpcError(s);
  if (FLAGS_json) {
    std::cout << ToJson(resp) << "\n";
  } else {
    std::cout << "deleted: " << resp.deleted() << " of " << ids->size()
              << " ids (the others were not present)  index_generation: "
              << resp.index_generation() << "  write_sequence: " << resp.write_sequence()
              << (resp.duplicate() ? "  (a retry: logged before)" : "") << "\n";
  }
  return kExitOk;
}

std::string IdSpec(const rv1::IdFeatureSpec& s) {
  if (s.name().empty() && s.num_buckets() == 0) return "-";
  return absl::StrCat(s.name().empty() ? "(unnamed)" : s.name(), "  buckets=", s.num_buckets(),
                      s.vocab_file().empty() ? "" : absl::StrCat("  vocab=", s.vocab_file()));
}

template <typename Repeated>
std::string CatSpecs(const Repeated& r) {
  std::vector<std::string> v;
  for (const auto& c : r) v.push_back(absl::StrCat(c.name(), "(", c.num_buckets(), ")"));
  return v.empty() ? "-" : absl::StrJoin(v, ", ");
}

template <typename Repeated>
std::string NumSpecs(const Repeated& r) {
  std::vector<std::string> v;
  for (const auto& c : r) {
    v.push_back(absl::StrFormat("%s(mean=%g, std=%g)", c.name(), c.mean(), c.std()));
  }
  return v.empty() ? "-" : absl::StrJoin(v, ", ");
}

std::string Metrics(const rv1::EvalMetrics& e) {
  std::map<std::string, double> sorted(e.metrics().begin(), e.metrics().end());
  std::vector<std::string> v;
  for (const auto& [k, x] : sorted) v.push_back(absl::StrFormat("%s=%.4f", k, x));
  return v.empty() ? "-" : absl::StrJoin(v, "  ");
}

std::string SearchParams(const google::protobuf::Map<std::string, double>& params) {
  return recall::cli::FormatSearchParams(std::map<std::string, double>(params.begin(), params.end()));
}

// The tuner's frontier: one line per candidate point, the chosen one marked '*'.
std::string TuningTable(const rv1::IndexTuning& t) {
  std::string out = absl::StrFormat(
      "index_tuning: recall@%d target %g on %d queries (%s), %d items, memory budget %s, "
      "%.1f s, %s: %s\n",
      t.k(), t.recall_target(), t.num_queries(), t.queries().empty() ? "-" : t.queries(),
      t.num_items(),
      t.memory_budget_bytes() > 0 ? absl::StrFormat("%.0f MiB", t.memory_budget_bytes() / 1048576.0)
                                  : std::string("none"),
      t.seconds(), t.tuned_at().empty() ? "-" : t.tuned_at(),
      t.target_met() ? "target met" : "TARGET NOT MET (the best recall within budget chosen)");
  std::vector<std::vector<std::string>> rows;
  std::string unmeasured;  // kinds the tuner skipped or refused, after the table
  for (int i = 0; i < t.points_size(); ++i) {
    const rv1::IndexTuningPoint& p = t.points(i);
    const std::string mark = i == t.chosen() ? "*" : "";
    if (!p.note().empty() && p.recall() == 0 && p.distances_per_query() == 0) {
      absl::StrAppend(&unmeasured, "   not measured: ", p.factory(), " (", p.note(), ")\n");
      continue;
    }
    std::string note = p.within_budget() ? "" : "over budget";
    if (!p.note().empty()) note += (note.empty() ? "" : "; ") + p.note();
    rows.push_back({mark, p.factory(), SearchParams(p.params()),
                    absl::StrFormat("%.4f", p.recall()), p.meets_target() ? "met" : "-",
                    absl::StrFormat("%.0f", p.distances_per_query()),
                    absl::StrFormat("%.0f", p.qps_one_thread()),
                    absl::StrFormat("%.1f", p.bytes() / 1048576.0),
                    absl::StrFormat("%.1f", p.build_seconds()),
                    absl::StrFormat("%.1f", p.insert_us()), note});
  }
  out += recall::cli::FormatTable(
      {"", "factory", "params", absl::StrCat("recall@", t.k()), "target", "dist/query",
       "qps(1t)", "MiB", "build_s", "insert_us", "note"},
      rows, {false, false, false, true, false, true, true, true, true, true, false});
  return out + unmeasured;
}

int CmdIndexInfo() {
  auto stub = rv1::RecallService::NewStub(MakeChannel());
  grpc::ClientContext ctx;
  Prepare(&ctx);
  rv1::GetIndexInfoResponse r;
  rv1::GetIndexInfoRequest req;
  req.set_online_state_digest(FLAGS_digest);
  grpc::Status s = stub->GetIndexInfo(&ctx, req, &r);
  if (!s.ok()) return RpcError(s);
  if (FLAGS_json) {
    std::cout << ToJson(r) << "\n";
    return kExitOk;
  }
  const rv1::FeatureSpec& fs = r.feature_spec();
  std::vector<std::vector<std::string>> rows = {
      {"model_version", absl::StrCat(r.model_version())},
      {"num_items", absl::StrCat(r.num_items(), " live")},
      {"num_hidden", absl::StrCat(r.num_hidden(), " removed/replaced, not yet compacted")},
      {"dim", absl::StrCat(r.dim())},
      {"index_factory", r.index_factory().empty() ? "-" : r.index_factory()},
      {"index_generation", absl::StrCat(r.index_generation())},
      {"search_params", SearchParams(r.search_params())},
      {"probe_recall",
       r.probe_queries() > 0
           ? absl::StrFormat("%.4f on %d recent queries against exact search", r.probe_recall(),
                             r.probe_queries())
           : std::string("- (no probe yet)")},
      {"user_id", IdSpec(fs.user_id())},
      {"item_id", IdSpec(fs.item_id())},
      {"history_length", absl::StrCat(fs.history_length())},
      {"user_categorical", CatSpecs(fs.user_categorical())},
      {"user_numeric", NumSpecs(fs.user_numeric())},
      {"item_categorical", CatSpecs(fs.item_categorical())},
      {"item_numeric", NumSpecs(fs.item_numeric())},
      {"eval", Metrics(r.eval())},
      {"write_log", r.write_log().empty() ? "-" : r.write_log()},
      {"applied_write_sequence",
       absl::StrCat(r.applied_write_sequence(), " of ", r.write_log_last_sequence(),
                    " in the log (", r.online_items(), " items written online)")},
  };
  if (!r.online_state_digest().empty()) rows.push_back({"online_state_digest", r.online_state_digest()});
  if (!r.eval().dataset().empty() || r.eval().num_users() > 0) {
    rows.push_back({"eval_on", absl::StrCat(r.eval().dataset().empty() ? "-" : r.eval().dataset(),
                                            " split=", r.eval().split().empty() ? "-" : r.eval().split(),
                                            " users=", r.eval().num_users())});
  }
  for (auto& row : rows) row[0] += ":";
  std::string out = recall::cli::FormatTable(rows[0], {rows.begin() + 1, rows.end()});
  if (r.has_index_tuning()) out += TuningTable(r.index_tuning());
  std::cout << out;
  return kExitOk;
}

// ============================================================================================
// health (grpc.health.v1.Health/Check through the generic stub, messages encoded by hand)
// ============================================================================================

int CmdHealth() {
  auto channel = MakeChannel();
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  Prepare(&ctx);
  const std::string req_bytes = recall::cli::EncodeHealthCheckRequest(FLAGS_service);
  grpc::Slice slice(req_bytes);
  grpc::ByteBuffer request(&slice, 1);
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> call =
      stub.PrepareUnaryCall(&ctx, recall::cli::kHealthCheckMethod, request, &cq);
  call->StartCall();
  grpc::ByteBuffer response;
  grpc::Status status;
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  const bool got = cq.Next(&tag, &ok);
  cq.Shutdown();
  void* drain_tag;
  bool drain_ok;
  while (cq.Next(&drain_tag, &drain_ok)) {
  }
  if (!got || !ok) {
    std::cerr << "error: INTERNAL: health check call did not complete\n";
    return kExitRpcError;
  }
  if (!status.ok()) return RpcError(status);

  std::vector<grpc::Slice> slices;
  std::string bytes;
  if (response.Valid() && response.Dump(&slices).ok()) {
    for (const grpc::Slice& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  auto st = recall::cli::DecodeHealthCheckResponse(bytes);
  if (!st.ok()) {
    std::cerr << "error: DATA_LOSS: bad HealthCheckResponse: " << st.status().message() << "\n";
    return kExitRpcError;
  }
  const std::string name = recall::cli::HealthStatusName(*st);
  if (FLAGS_json) {
    std::cout << "{\"status\":\"" << name << "\"}\n";
  } else {
    std::cout << name << "\n";
  }
  return *st == static_cast<int>(recall::cli::HealthStatus::kServing) ? kExitOk : kExitRpcError;
}

// ============================================================================================
// training and versions
// ============================================================================================

bool Terminal(rv1::RetrainState s) {
  return s == rv1::SUCCEEDED || s == rv1::FAILED || s == rv1::REJECTED || s == rv1::CANCELLED;
}

std::string StateName(rv1::RetrainState s) {
  const std::string& n = rv1::RetrainState_Name(s);
  return n.empty() ? absl::StrCat("STATE_", static_cast<int>(s)) : n;
}

void PrintJob(const rv1::RetrainJob& j) {
  if (FLAGS_json) {
    std::cout << ToJson(j) << "\n";
    return;
  }
  std::vector<std::vector<std::string>> rows = {
      {"job_id:", j.job_id()},
      {"state:", StateName(j.state())},
      {"progress:", absl::StrFormat("%.1f%%", 100.0 * j.progress())},
  };
  if (!j.message().empty()) rows.push_back({"message:", j.message()});
  if (j.result_version() != 0) rows.push_back({"result_version:", absl::StrCat(j.result_version())});
  if (!j.started_at().empty()) rows.push_back({"started_at:", j.started_at()});
  if (!j.finished_at().empty()) rows.push_back({"finished_at:", j.finished_at()});
  if (!j.preset().empty()) rows.push_back({"preset:", j.preset()});
  std::cout << recall::cli::FormatTable(rows[0], {rows.begin() + 1, rows.end()});
  if (j.has_config()) {
    google::protobuf::TextFormat::Printer printer;
    printer.SetSingleLineMode(true);
    std::string text;
    printer.PrintToString(j.config(), &text);
    std::cout << "config: " << text << "\n";
  }
  if (j.log_tail_size() > 0) {
    std::cout << "log tail:\n";
    for (const std::string& line : j.log_tail()) std::cout << "  | " << line << "\n";
  }
}

// Polls GetRetrainJob until the job ends. Exit 0 only if it SUCCEEDED.
int WaitForJob(rv1::TrainingService::Stub* stub, const std::string& job_id) {
  std::string last_line;
  while (true) {
    grpc::ClientContext ctx;
    Prepare(&ctx);
    rv1::GetRetrainJobRequest req;
    req.set_job_id(job_id);
    rv1::RetrainJob job;
    grpc::Status s = stub->GetRetrainJob(&ctx, req, &job);
    if (!s.ok()) return RpcError(s);
    if (Terminal(job.state())) {
      if (!FLAGS_json) std::cout << "\n";
      PrintJob(job);
      if (job.state() == rv1::SUCCEEDED) return kExitOk;
      std::cerr << "error: job " << job_id << " ended " << StateName(job.state())
                << (job.message().empty() ? "" : ": " + job.message()) << "\n";
      return kExitRpcError;
    }
    std::string line = absl::StrFormat("[%s] %5.1f%%", StateName(job.state()),
                                       100.0 * job.progress());
    if (!job.message().empty()) absl::StrAppend(&line, " ", job.message());
    if (line != last_line) {
      if (FLAGS_json) {
        std::cout << ToJson(job) << "\n";
      } else {
        std::cout << line << "\n";
      }
      std::cout.flush();
      last_line = line;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(std::max(FLAGS_poll_ms, 10)));
  }
}

// One --override pair onto `config`, found by the message's own descriptor: a top-level field,
// a tower field by its name or path, or a field's legacy flag name. The server checks which
// fields may be overridden; this only turns text into the typed field.
absl::Status SetOverride(const std::string& key, const std::string& value,
                         rv1::TrainConfig* config) {
  namespace pb = google::protobuf;
  const pb::Descriptor* top = rv1::TrainConfig::descriptor();
  const pb::Descriptor* tower = rv1::TowerConfig::descriptor();
  pb::Message* holder = nullptr;
  const pb::FieldDescriptor* field = nullptr;
  auto by_name = [](const pb::Descriptor* d, absl::string_view name) -> const pb::FieldDescriptor* {
    for (int i = 0; i < d->field_count(); ++i) {
      const auto* f = d->field(i);
      if (f->name() == name || f->options().GetExtension(rv1::legacy_flag) == name) return f;
    }
    return nullptr;
  };
  absl::string_view name = key;
  const bool tower_path = absl::ConsumePrefix(&name, "tower.");
  if (!tower_path && (field = by_name(top, name)) != nullptr &&
      field->cpp_type() != pb::FieldDescriptor::CPPTYPE_MESSAGE) {
    holder = config;
  } else if ((field = by_name(tower, name)) != nullptr) {
    holder = config->mutable_tower();
  } else {
    return absl::InvalidArgumentError(absl::StrCat("--override: no training option '", key, "'"));
  }
  if (field->is_repeated()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--override: ", key, " is a list; give it with --config"));
  }
  std::string text = value;
  if (field->cpp_type() == pb::FieldDescriptor::CPPTYPE_STRING) {
    holder->GetReflection()->SetString(holder, field, value);
    return absl::OkStatus();
  }
  if (field->cpp_type() == pb::FieldDescriptor::CPPTYPE_ENUM) text = absl::AsciiStrToUpper(text);
  if (!pb::TextFormat::ParseFieldValueFromString(text, field, holder)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--override: ", key, ": '", value, "' is not a ", field->type_name()));
  }
  return absl::OkStatus();
}

int CmdRetrain() {
  int rc = kExitOk;
  auto overrides = recall::cli::ParseStringPairs(FLAGS_override, '=');
  if (!ParseOrReport(overrides, "override", &rc)) return rc;
  rv1::TriggerRetrainRequest req;
  req.set_dataset(FLAGS_dataset);
  req.set_preset(FLAGS_preset);
  if (!FLAGS_config.empty() &&
      !google::protobuf::TextFormat::ParseFromString(FLAGS_config, req.mutable_config())) {
    return UsageError("--config is not a TrainConfig textproto");
  }
  for (const auto& [k, v] : *overrides) {
    if (absl::Status st = SetOverride(k, v, req.mutable_config()); !st.ok()) {
      return UsageError(std::string(st.message()));
    }
  }
  auto stub = rv1::TrainingService::NewStub(MakeChannel());
  grpc::ClientContext ctx;
  Prepare(&ctx);
  rv1::TriggerRetrainResponse resp;
  grpc::Status s = stub->TriggerRetrain(&ctx, req, &resp);
  if (!s.ok()) return RpcError(s);
  if (FLAGS_json) {
    std::cout << ToJson(resp) << "\n";
  } else {
    std::cout << "job_id: " << resp.job_id() << "\n";
  }
  std::cout.flush();
  if (FLAGS_wait) return WaitForJob(stub.get(), resp.job_id());
  return kExitOk;
}

int CmdJob() {
  if (FLAGS_job_id.empty()) return UsageError("job needs --job_id=<id>");
  auto stub = rv1::TrainingService::NewStub(MakeChannel());
  if (FLAGS_wait) return WaitForJob(stub.get(), FLAGS_job_id);
  grpc::ClientContext ctx;
  Prepare(&ctx);
  rv1::GetRetrainJobRequest req;
  req.set_job_id(FLAGS_job_id);
  rv1::RetrainJob job;
  grpc::Status s = stub->GetRetrainJob(&ctx, req, &job);
  if (!s.ok()) return RpcError(s);
  PrintJob(job);
  return kExitOk;
}

int CmdCancel() {
  if (FLAGS_job_id.empty()) return UsageError("cancel needs --job_id=<id>");
  auto stub = rv1::TrainingService::NewStub(MakeChannel());
  grpc::ClientContext ctx;
  Prepare(&ctx);
  rv1::CancelRetrainRequest req;
  req.set_job_id(FLAGS_job_id);
  rv1::CancelRetrainResponse resp;
  grpc::Status s = stub->CancelRetrain(&ctx, req, &resp);
  if (!s.ok()) return RpcError(s);
  if (FLAGS_json) {
    std::cout << ToJson(resp) << "\n";
  } else {
    PrintJob(resp.job());
  }
  return kExitOk;
}

// ListVersions and ReloadVersions answer the same message; both print it this way.
int PrintVersions(const rv1::ListVersionsResponse& resp) {
  if (FLAGS_json) {
    std::cout << ToJson(resp) << "\n";
    return kExitOk;
  }
  std::cout << "serving_version: " << resp.serving_version() << "  pinned_version: "
            << (resp.pinned_version() == 0 ? std::string("none (follows the newest)")
                                            : absl::StrCat(resp.pinned_version()))
            << "\n";
  std::set<std::string> metric_names;
  for (const auto& v : resp.versions()) {
    for (const auto& [k, x] : v.eval().metrics()) metric_names.insert(k);
  }
  std::vector<std::string> header = {"version", "state", "created_at", "index",
                                     "search_params", "index_recall"};
  header.insert(header.end(), metric_names.begin(), metric_names.end());
  std::vector<bool> right = {true, false, false, false, false, false};
  right.resize(header.size(), true);
  std::vector<std::vector<std::string>> rows;
  for (const auto& v : resp.versions()) {
    // The tuner's recall@k on its queries, and its target ("-": a fixed factory string).
    const std::string tuned =
        v.index_recall_k() > 0 ? absl::StrFormat("%.4f@%d (target %g)", v.index_recall(),
                                                 v.index_recall_k(), v.index_recall_target())
                               : "-";
    std::vector<std::string> row = {absl::StrCat(v.version()), v.state(),
                                    v.created_at().empty() ? "-" : v.created_at(),
                                    v.index_factory().empty() ? "-" : v.index_factory(),
                                    SearchParams(v.index_search_params()), tuned};
    for (const std::string& m : metric_names) {
      auto it = v.eval().metrics().find(m);
      row.push_back(it == v.eval().metrics().end() ? "-" : absl::StrFormat("%.4f", it->second));
    }
    rows.push_back(std::move(row));
  }
  if (rows.empty()) {
    std::cout << "(no versions)\n";
  } else {
    std::cout << recall::cli::FormatTable(header, rows, right);
  }
  if (resp.replicas_size() > 0) {
    std::vector<std::vector<std::string>> replicas;
    for (const auto& r : resp.replicas()) {
      replicas.push_back({r.replica_id(), absl::StrCat(r.serving_version()),
                          r.pinned_version() ? absl::StrCat(r.pinned_version()) : "-",
                          absl::StrCat(r.applied_write_sequence()), r.updated_at()});
    }
    std::cout << "replicas:\n"
              << recall::cli::FormatTable({"replica", "serving", "pinned", "applied_write_seq",
                                           "updated_at"},
                                          replicas, {false, true, true, true, false});
  }
  return kExitOk;
}

int CmdVersions() {
  auto stub = rv1::TrainingService::NewStub(MakeChannel());
  grpc::ClientContext ctx;
  Prepare(&ctx);
  rv1::ListVersionsResponse resp;
  grpc::Status s = stub->ListVersions(&ctx, rv1::ListVersionsRequest(), &resp);
  if (!s.ok()) return RpcError(s);
  return PrintVersions(resp);
}

// Re-reads the model base now instead of at the next poll; the reply is the state after it.
int CmdReload() {
  auto stub = rv1::TrainingService::NewStub(MakeChannel());
  grpc::ClientContext ctx;
  Prepare(&ctx);
  rv1::ListVersionsResponse resp;
  grpc::Status s = stub->ReloadVersions(&ctx, rv1::ReloadVersionsRequest(), &resp);
  if (!s.ok()) return RpcError(s);
  return PrintVersions(resp);
}

int CmdServeVersion() {
  if (!Given("target_version")) {
    return UsageError("serve-version needs --version=N (0 = unpin, follow the newest)");
  }
  if (FLAGS_target_version < 0) return UsageError("--version must be >= 0");
  auto stub = rv1::TrainingService::NewStub(MakeChannel());
  grpc::ClientContext ctx;
  Prepare(&ctx);
  rv1::SetServingVersionRequest req;
  req.set_version(FLAGS_target_version);
  rv1::SetServingVersionResponse resp;
  grpc::Status s = stub->SetServingVersion(&ctx, req, &resp);
  if (!s.ok()) return RpcError(s);
  if (FLAGS_json) {
    std::cout << ToJson(resp) << "\n";
  } else {
    std::cout << "serving_version: " << resp.serving_version()
              << (FLAGS_target_version == 0 ? "  (unpinned: follows the newest valid version)"
                                            : "  (pinned)")
              << "\n";
  }
  return kExitOk;
}

std::vector<Command>& Commands() {
  static std::vector<Command> commands = {
      {"recall",
       "Recall: the top-K items for one user",
       {"recall --user_id=42 --history=1,2,3 --k=10 [--exclude=4,5] [--exclude_history]",
        "       [--cat=name:value,...] [--num=name:1.5,...] [--return_embedding]",
        "       [--item_features=items.tsv] [--request_id=ID] [--min_write_sequence=S]"},
       {"user_id", "history", "k", "exclude", "exclude_history", "cat", "num",
        "return_embedding", "request_id", "item_features", "min_write_sequence"},
       CmdRecall},
      {"stream",
       "RecallStream: many requests on one bidirectional stream, replies checked in order",
       {"stream --requests=requests.jsonl [--item_features=items.tsv]",
        "stream --repeat=N <recall flags>   (request ids r1..rN, or <request_id>-1..N)"},
       {"requests", "repeat", "user_id", "history", "k", "exclude", "exclude_history", "cat",
        "num", "return_embedding", "request_id", "item_features"},
       CmdStream},
      {"upsert",
       "UpsertItems: add or replace items (features, raw vector, or a JSON-lines file)",
       {"upsert --item_id=N [--cat=name:value,...] [--num=name:1.5,...]",
        "upsert --item_id=N --vector=0.1,0.2,... --model_version=V",
        "upsert --file=items.jsonl [--batch_size=1000]",
        "  [--request_id=ID]: an idempotency key (a retry with it is logged once)"},
       {"item_id", "cat", "num", "vector", "model_version", "file", "batch_size", "request_id"},
       CmdUpsert},
      {"delete", "DeleteItems: remove items", {"delete --ids=1,2,3 [--request_id=ID]"},
       {"ids", "request_id"}, CmdDelete},
      {"index-info",
       "GetIndexInfo: serving version, index size, search params, recall probe, tuning "
       "frontier, feature spec, eval metrics, write log",
       {"index-info [--digest]"},
       {"digest"},
       CmdIndexInfo},
      {"health",
       "grpc.health.v1 Health/Check: prints SERVING / NOT_SERVING; exit 0 only if SERVING",
       {"health [--service=recall.v1.RecallService]"},
       {"service"},
       CmdHealth},
      {"retrain",
       "TriggerRetrain: start a retrain job (optionally wait for it)",
       {"retrain [--dataset=synthetic] [--preset=NAME] [--config='TEXTPROTO'] "
        "[--override=key=value,...] [--wait [--poll_ms=1000]]"},
       {"dataset", "preset", "config", "override", "wait", "poll_ms"},
       CmdRetrain},
      {"job",
       "GetRetrainJob: state, progress, log tail of a job (optionally wait for it)",
       {"job --job_id=ID [--wait [--poll_ms=1000]]"},
       {"job_id", "wait", "poll_ms"},
       CmdJob},
      {"cancel", "CancelRetrain: stop a job", {"cancel --job_id=ID"}, {"job_id"}, CmdCancel},
      {"versions",
       "ListVersions: model versions on disk, which one serves, index and tuned recall, "
       "eval metrics",
       {"versions"},
       {},
       CmdVersions},
      {"reload",
       "ReloadVersions: re-read the model base now (no waiting for the poll), then list versions",
       {"reload"},
       {},
       CmdReload},
      {"serve-version",
       "SetServingVersion: pin a version (rollback) or unpin with 0",
       {"serve-version --version=N"},
       {"target_version"},
       CmdServeVersion},
  };
  return commands;
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {  // so that flag errors can point at the command's help
    if (FindCommand(argv[i]) != nullptr) {
      g_command = argv[i];
      break;
    }
  }
  ParsedArgs args;
  if (int rc = ParseArgs(argc, argv, &args); rc != kExitOk) return rc;

  if (args.positionals.empty()) {
    if (args.help) {
      PrintGeneralHelp(std::cout);
      return kExitOk;
    }
    PrintGeneralHelp(std::cerr);
    std::cerr << "\nerror: no command given\n";
    return kExitUsage;
  }
  std::string name = args.positionals[0];
  if (name == "help") {
    if (args.positionals.size() == 1) {
      PrintGeneralHelp(std::cout);
      return kExitOk;
    }
    name = args.positionals[1];
    args.help = true;
    args.positionals.erase(args.positionals.begin());
  }
  const Command* cmd = FindCommand(name);
  if (cmd == nullptr) {
    std::string hint;
    for (const Command& c : Commands()) {
      if (EditDistance(name, c.name) <= 2) hint = absl::StrCat(" (did you mean '", c.name, "'?)");
    }
    return UsageError(absl::StrCat("unknown command '", name, "'", hint));
  }
  g_command = cmd->name;
  if (args.help) {
    PrintCommandHelp(*cmd, std::cout);
    return kExitOk;
  }
  if (args.positionals.size() > 1) {
    return UsageError(absl::StrCat("unexpected argument '", args.positionals[1],
                                   "' (flags are written --name=value)"));
  }
  for (const std::string& f : g_given) {
    const bool global = std::find(kGlobalFlags.begin(), kGlobalFlags.end(), f) != kGlobalFlags.end();
    const bool own = std::find(cmd->flags.begin(), cmd->flags.end(), f) != cmd->flags.end();
    if (!global && !own) {
      return UsageError(absl::StrCat("flag --", DisplayName(f), " does not apply to '", cmd->name,
                                     "'"));
    }
  }
  if (FLAGS_timeout_ms < 0) return UsageError("--timeout_ms must be >= 0");
  if (FLAGS_addr.empty()) return UsageError("--addr must not be empty");
  return cmd->run();
}
