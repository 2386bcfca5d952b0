// recall-index: tunes a published version's item index and publishes the result as a new
// version (same towers, the tuned index, the frontier in its manifest), or prints how a
// version's index was chosen. index/TUNING.md explains the method.
//
//   recall-index tune --model_base=DIR [--model_version=N] [--queries_from=FILE.fvecs]
//                     [--k=K] [--recall_target=R] [--memory_budget_mb=M] [--tune_budget_s=S]
//                     [--candidates="IVF4096,Flat;HNSW32"] [--publish_version=V] [--dry_run]
//   recall-index info --model_base=DIR [--model_version=N]
//
// A version is immutable (its files are checksummed), so tuning publishes a new one; the
// server loads it like any other (and `recall-cli set-version` pins either).
#include <gflags/gflags.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "index/embedding_index.h"
#include "index/index_tuner.h"
#include "index/vector_file.h"
#include "model/mutex_mode.h"
#include "model/version_dir.h"
#include "trainer/index_tuning.h"

DEFINE_string(model_base, "", "the model base holding the version");
DEFINE_int64(model_version, 0, "the version to tune or show (0 = the newest)");
DEFINE_string(queries_from, "",
              "tuning queries, an fvecs file of user-tower outputs (default: the version's own "
              "tune_queries.fvecs, written by recall-train when it tunes)");
DEFINE_int32(k, 0, "recall@k to reach (0 = the version's index_recall_k)");
DEFINE_double(recall_target, 0, "recall@k target (0 = the version's index_recall_target)");
DEFINE_int64(memory_budget_mb, -1, "largest index the pick may be, MiB (-1 = the version's "
             "index_memory_budget_mb; 0 = none)");
DEFINE_double(tune_budget_s, 0, "wall-clock budget, seconds (0 = the version's)");
DEFINE_string(candidates, "", "';'-separated factory strings to try (default: the tuner's "
              "candidates for the catalog's size); one string forces that kind, still tuned");
DEFINE_int64(publish_version, 0, "number of the new version (0 = the next free one)");
DEFINE_bool(dry_run, false, "tune and print, publish nothing");

namespace {

namespace fs = std::filesystem;
using recall::EmbeddingIndex;

int Fail(const std::string& message) {
  std::fprintf(stderr, "recall-index: %s\n", message.c_str());
  return 1;
}

std::string Params(const google::protobuf::Map<std::string, double>& params) {
  std::vector<std::string> parts;
  for (const auto& [name, v] : params) parts.push_back(absl::StrCat(name, "=", v));
  std::sort(parts.begin(), parts.end());
  return absl::StrJoin(parts, ",");
}

// The frontier as a table: every measured point, the chosen one marked.
void PrintTuning(const recall::v1::ModelManifest& m) {
  std::printf("version %lld: %s %s, %lld items\n", static_cast<long long>(m.version()),
              m.index_factory().c_str(), Params(m.index_search_params()).c_str(),
              static_cast<long long>(m.num_items()));
  if (!m.has_index_tuning()) {
    std::printf("fixed factory string (not tuned)\n");
    return;
  }
  const auto& t = m.index_tuning();
  std::printf("tuned %s: recall@%d target %.3f on %d queries (%s), memory budget %s, %.0f s; %s\n",
              t.tuned_at().c_str(), t.k(), t.recall_target(), t.num_queries(), t.queries().c_str(),
              t.memory_budget_bytes() > 0
                  ? absl::StrFormat("%.0f MiB", t.memory_budget_bytes() / 1048576.0).c_str()
                  : "none",
              t.seconds(), t.target_met() ? "target met" : "TARGET NOT MET (best recall shown)");
  std::printf("  %-22s %-28s %8s %10s %9s %9s %8s %9s\n", "factory", "params", "recall",
              "dist/query", "qps(1t)", "MiB", "build s", "insert us");
  for (int i = 0; i < t.points_size(); ++i) {
    const auto& p = t.points(i);
    if (!p.note().empty()) {
      std::printf("  %-22s %s\n", p.factory().c_str(), p.note().c_str());
      continue;
    }
    std::printf("%s %-22s %-28s %8.4f %10.0f %9.0f %9.1f %8.1f %9.1f%s\n",
                i == t.chosen() ? "*" : " ", p.factory().c_str(), Params(p.params()).c_str(),
                p.recall(), p.distances_per_query(), p.qps_one_thread(), p.bytes() / 1048576.0,
                p.build_seconds(), p.insert_us(), p.within_budget() ? "" : "  over budget");
  }
}

absl::StatusOr<std::string> VersionDir() {
  if (FLAGS_model_base.empty()) return absl::InvalidArgumentError("--model_base is required");
  int64_t v = FLAGS_model_version;
  if (v <= 0) {
    const auto all = recall::ListVersionNumbers(FLAGS_model_base);
    if (all.empty()) return absl::NotFoundError(FLAGS_model_base + " holds no version");
    v = *std::max_element(all.begin(), all.end());
  }
  return recall::VersionPath(FLAGS_model_base, v);
}

int Info() {
  auto dir = VersionDir();
  if (!dir.ok()) return Fail(std::string(dir.status().message()));
  auto m = recall::ReadManifest(*dir);
  if (!m.ok()) return Fail(std::string(m.status().message()));
  PrintTuning(*m);
  return 0;
}

int Tune() {
  auto dir = VersionDir();
  if (!dir.ok()) return Fail(std::string(dir.status().message()));
  auto manifest = recall::VerifyVersionDir(*dir);
  if (!manifest.ok()) return Fail(std::string(manifest.status().message()));
  const std::string index_path = (fs::path(*dir) / manifest->index_file()).string();
  auto index = EmbeddingIndex::Load(index_path, manifest->index_factory());
  if (!index.ok()) return Fail(std::string(index.status().message()));
  const int dim = (*index)->dim();
  std::vector<int64_t> ids;
  std::vector<float> vectors;
  {
    const std::vector<int64_t> live = (*index)->Ids();
    vectors.resize(live.size() * static_cast<size_t>(dim));
    auto read = (*index)->ReconstructMany(live, vectors.data(), &ids);
    if (!read.ok()) return Fail(std::string(read.status().message()));
  }
  index->reset();
  const std::string own_queries = (fs::path(*dir) / recall::trainer::kTuneQueriesFile).string();
  const std::string queries_path = FLAGS_queries_from.empty() ? own_queries : FLAGS_queries_from;
  auto queries = recall::ReadFvecs(queries_path);
  if (!queries.ok()) {
    return Fail(absl::StrCat("tuning queries: ", queries.status().message(),
                             FLAGS_queries_from.empty() ? " (pass --queries_from)" : ""));
  }
  if (queries->dim != dim || queries->rows() == 0) {
    return Fail(absl::StrCat(queries_path, ": ", queries->rows(), " queries of dimension ",
                             queries->dim, ", the index has dimension ", dim));
  }
  recall::TuneOptions options = recall::trainer::TuneOptionsFrom(manifest->train_config());
  if (FLAGS_k > 0) options.k = FLAGS_k;
  if (FLAGS_recall_target > 0) options.recall_target = FLAGS_recall_target;
  if (FLAGS_memory_budget_mb >= 0) options.memory_budget_bytes = FLAGS_memory_budget_mb << 20;
  if (FLAGS_tune_budget_s > 0) options.budget_s = FLAGS_tune_budget_s;
  for (absl::string_view c : absl::StrSplit(FLAGS_candidates, ';', absl::SkipEmpty())) {
    options.candidates.emplace_back(c);
  }
  const int nq = static_cast<int>(queries->rows());
  std::fprintf(stderr, "tuning %zu items x %d dims on %d queries: recall@%d >= %.3f\n",
               ids.size(), dim, nq, options.k, options.recall_target);
  auto tuned = recall::TuneIndex(ids, vectors.data(), dim, queries->values.data(), nq, options);
  if (!tuned.ok()) return Fail(std::string(tuned.status().message()));
  if (tuned->index == nullptr) return Fail("no candidate could be measured");

  recall::v1::ModelManifest m = *manifest;
  m.set_index_factory(tuned->index->factory());
  m.clear_index_search_params();
  for (const auto& [name, v] : tuned->index->SearchParameters()) {
    (*m.mutable_index_search_params())[name] = v;
  }
  *m.mutable_index_tuning() = recall::trainer::TuningRecord(
      *tuned, options, static_cast<int64_t>(ids.size()), nq,
      FLAGS_queries_from.empty() ? std::string(recall::trainer::kTuneQueriesFile)
                                 : FLAGS_queries_from);
  if (FLAGS_dry_run) {
    PrintTuning(m);
    return 0;
  }
  const int64_t version = FLAGS_publish_version > 0
                              ? FLAGS_publish_version
                              : recall::NextVersionNumber(FLAGS_model_base);
  auto staging = recall::CreateStagingDir(FLAGS_model_base, version);
  if (!staging.ok()) return Fail(std::string(staging.status().message()));
  std::error_code ec;
  for (const auto& f : manifest->files()) {
    if (f.path() == manifest->index_file()) continue;
    fs::copy_file(fs::path(*dir) / f.path(), fs::path(*staging) / f.path(), ec);
    if (ec) return Fail(absl::StrCat("copying ", f.path(), ": ", ec.message()));
  }
  if (!FLAGS_queries_from.empty()) {
    const fs::path to = fs::path(*staging) / recall::trainer::kTuneQueriesFile;
    fs::copy_file(FLAGS_queries_from, to, fs::copy_options::overwrite_existing, ec);
    if (ec) return Fail(absl::StrCat("copying ", FLAGS_queries_from, ": ", ec.message()));
  }
  const std::string new_index = (fs::path(*staging) / m.index_file()).string();
  if (auto s = tuned->index->Save(new_index); !s.ok()) return Fail(std::string(s.message()));
  m.set_version(version);
  m.set_created_at(absl::FormatTime(absl::RFC3339_sec, absl::Now(), absl::UTCTimeZone()));
  auto published = recall::PublishVersion(FLAGS_model_base, *staging, std::move(m));
  if (!published.ok()) return Fail(std::string(published.status().message()));
  auto check = recall::ReadManifest(*published);
  if (check.ok()) PrintTuning(*check);
  std::fprintf(stderr, "published %s\n", published->c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  recall::SetReleaseMutexMode();
  gflags::SetUsageMessage(
      "recall-index tune|info --model_base=DIR [flags]: tune a version's item index to a "
      "recall target (publishing a new version), or show how it was chosen");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  const std::string command = argc > 1 ? argv[1] : "";
  if (command == "tune") return Tune();
  if (command == "info") return Info();
  return Fail("usage: recall-index tune|info --model_base=DIR [--model_version=N] (--help)");
}
