// Fuzz target: the model-version directory loader (model/version_dir.h) over fuzzed
// MANIFEST.json content, and what ModelVersion::Load does with a verified manifest before it
// hands the tower files to LibTorch (vocabularies, FeatureEncoder::Create). torch::jit::load is
// deliberately not fuzzed: it is uninstrumented third-party code.
//
// Input: the MANIFEST.json text, optionally followed by a line "#EXTRA" and the bytes of a
// file "extra.bin" placed next to it (e.g. a vocabulary the manifest names). Before the text is
// written, "@sha256:NAME@" and "@size:NAME@" are replaced with the sha256 / size of the file
// NAME in the version directory, so mutated files and manifests still pass the checksum check
// often enough to reach the code behind it. The directory is <scratch>/7/ and always holds
// user_tower.pt, item_tower.pt and items.faiss with fixed contents.
//
// Checked: ReadManifest / VerifyVersionDir fail only with DATA_LOSS; a verified manifest has
// the directory's version, embedding_dim > 0, and every file the loader will read (the towers,
// the index and the spec's vocabulary files) listed in it with a name inside the directory and
// its real size and sha256. Vocabularies and FeatureEncoder::Create then run as in
// ModelVersion::Load; an encoder that Create accepts must encode a user and an item into
// tensors of the spec's shapes whose rows lie inside their tables.
//
// RECALL_FUZZ_WRITE_SEEDS=<dir> ./manifest_fuzzer writes the seed corpus to <dir> and exits.
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "model/encoder.h"
#include "model/version_dir.h"
#include "model/vocabulary.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

namespace fs = std::filesystem;


constexpr int64_t kVersion = 7;
constexpr char kExtraFile[] = "extra.bin";
constexpr char kSeparator[] = "\n#EXTRA\n";

std::string g_base;  // scratch model base
std::string g_dir;   // g_base/7

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  FUZZ_CHECK(out.good());
}

// Replaces @sha256:NAME@ and @size:NAME@ (NAME a plain file name in g_dir).
std::string Substitute(const std::string& text) {
  std::string out;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t at = text.find('@', pos);
    if (at == std::string::npos) break;
    out.append(text, pos, at - pos);
    const size_t end = text.find('@', at + 1);
    const std::string token = end == std::string::npos ? "" : text.substr(at + 1, end - at - 1);
    const bool sha = absl::StartsWith(token, "sha256:"), size = absl::StartsWith(token, "size:");
    const std::string name = token.substr(token.find(':') + 1);
    if ((sha || size) && !name.empty() && name.find('/') == std::string::npos &&
        name.find('\0') == std::string::npos && name != "." && name != "..") {
      const std::string path = g_dir + "/" + name;
      std::error_code ec;
      if (sha) {
        auto digest = recall::Sha256File(path);
        out += digest.ok() ? *digest : "0";
      } else {
        const auto n = fs::file_size(path, ec);
        out += ec ? "0" : std::to_string(n);
      }
      pos = end + 1;
    } else {
      out += '@';
      pos = at + 1;
    }
  }
  if (pos < text.size()) out.append(text, pos, std::string::npos);
  return out;
}

bool Listed(const recall::v1::ModelManifest& m, const std::string& name) {
  for (const auto& f : m.files()) {
    if (f.path() == name) return true;
  }
  return false;
}

void CheckEncoder(const recall::FeatureEncoder& enc) {
  const auto& spec = enc.spec();
  FUZZ_CHECK(enc.num_user_rows() >= 2 && enc.num_item_rows() >= 2);
  FUZZ_CHECK(enc.num_user_categorical_rows() >= 0 && enc.num_item_categorical_rows() >= 0);
  recall::v1::UserFeatures u;
  u.set_user_id(5);
  for (int64_t id : {1, 2, 3, -1}) u.add_history_item_ids(id);
  for (const auto& c : spec.user_categorical()) (*u.mutable_categorical())[c.name()] = "v";
  for (const auto& n : spec.user_numeric()) (*u.mutable_numeric())[n.name()] = 1.0f;
  if (!enc.ValidateUser(u, 1000).ok()) return;
  const recall::v1::UserFeatures* users[] = {&u};
  recall::UserBatch ub = enc.EncodeUsers(users);
  FUZZ_CHECK(ub.history.sizes().vec() == (std::vector<int64_t>{1, spec.history_length()}));
  FUZZ_CHECK(ub.categorical.size(1) == spec.user_categorical_size());
  FUZZ_CHECK(ub.numeric.size(1) == spec.user_numeric_size());
  const int64_t uid = ub.user_id.data_ptr<int64_t>()[0];
  FUZZ_CHECK(uid >= 0 && uid < enc.num_user_rows());
  for (int64_t i = 0; i < ub.history.numel(); ++i) {
    const int64_t r = ub.history.data_ptr<int64_t>()[i];
    FUZZ_CHECK(r >= 0 && r < enc.num_item_rows());
  }
  for (int64_t i = 0; i < ub.categorical.numel(); ++i) {
    const int64_t r = ub.categorical.data_ptr<int64_t>()[i];
    FUZZ_CHECK(r >= 1 && r < enc.num_user_categorical_rows());  // "v" is not missing (row 0)
  }
  recall::v1::ItemFeatures it;
  it.set_item_id(3);
  for (const auto& c : spec.item_categorical()) (*it.mutable_categorical())[c.name()] = "w";
  if (!enc.ValidateItem(it).ok()) return;
  const recall::v1::ItemFeatures* items[] = {&it};
  recall::ItemBatch ib = enc.EncodeItems(items);
  FUZZ_CHECK(ib.categorical.size(1) == spec.item_categorical_size());
  FUZZ_CHECK(ib.numeric.size(1) == spec.item_numeric_size());
  const int64_t iid = ib.item_id.data_ptr<int64_t>()[0];
  FUZZ_CHECK(iid >= 0 && iid < enc.num_item_rows());
  for (int64_t i = 0; i < ib.categorical.numel(); ++i) {
    const int64_t r = ib.categorical.data_ptr<int64_t>()[i];
    FUZZ_CHECK(r >= 1 && r < enc.num_item_categorical_rows());
  }
}

// ModelVersion::Load up to the TorchScript files.
void LoadLikeModelVersion(const recall::v1::ModelManifest& m) {
  const auto& spec = m.feature_spec();
  recall::Vocabulary vocabs[2];
  const std::string* files[2] = {&spec.user_id().vocab_file(), &spec.item_id().vocab_file()};
  for (int i = 0; i < 2; ++i) {
    if (files[i]->empty()) continue;
    auto v = recall::Vocabulary::Load((fs::path(g_dir) / *files[i]).string());
    if (!v.ok()) return;
    for (size_t j = 1; j < v->ids().size(); ++j) FUZZ_CHECK(v->ids()[j - 1] < v->ids()[j]);
    for (size_t j = 0; j < v->ids().size(); ++j) {
      FUZZ_CHECK(v->Row(v->ids()[j]) == static_cast<int64_t>(j) + 1);
    }
    vocabs[i] = *std::move(v);
  }
  auto enc = recall::FeatureEncoder::Create(spec, std::move(vocabs[0]), std::move(vocabs[1]));
  if (!enc.ok()) {
    FUZZ_CHECK(absl::IsInvalidArgument(enc.status()));
    return;
  }
  CheckEncoder(**enc);
}

void RunOne(const std::string& input) {
  std::string manifest_text = input;
  const std::string extra_path = g_dir + "/" + kExtraFile;
  const std::string manifest_path = g_dir + "/" + recall::kManifestFile;
  ::unlink(extra_path.c_str());
  ::unlink(manifest_path.c_str());  // so @sha256:MANIFEST.json@ never sees the previous input
  const size_t sep = input.find(kSeparator);
  if (sep != std::string::npos) {
    manifest_text = input.substr(0, sep);
    WriteFile(extra_path, input.substr(sep + sizeof(kSeparator) - 1));
  }
  WriteFile(manifest_path, Substitute(manifest_text));

  auto read = recall::ReadManifest(g_dir);
  if (!read.ok()) FUZZ_CHECK(absl::IsDataLoss(read.status()));
  auto verified = recall::VerifyVersionDir(g_dir);
  if (!verified.ok()) {
    FUZZ_CHECK(absl::IsDataLoss(verified.status()));
    FUZZ_CHECK(!verified.status().message().empty());
    return;
  }
  FUZZ_CHECK(read.ok());
  const recall::v1::ModelManifest& m = *verified;
  FUZZ_CHECK(m.version() == kVersion);
  FUZZ_CHECK(m.embedding_dim() > 0);
  for (const auto& f : m.files()) {
    FUZZ_CHECK(!f.path().empty() && f.path().find('/') == std::string::npos);
    FUZZ_CHECK(f.path() != "." && f.path() != "..");
    const std::string path = g_dir + "/" + f.path();
    std::error_code ec;
    FUZZ_CHECK(fs::is_regular_file(path, ec));
    FUZZ_CHECK(static_cast<int64_t>(fs::file_size(path, ec)) == f.size_bytes());
    auto digest = recall::Sha256File(path);
    FUZZ_CHECK(digest.ok() && *digest == f.sha256());
  }
  // Everything ModelVersion::Load reads from the directory has been checksummed.
  FUZZ_CHECK(Listed(m, m.user_tower_file()));
  FUZZ_CHECK(Listed(m, m.item_tower_file()));
  FUZZ_CHECK(Listed(m, m.index_file()));
  const auto& spec = m.feature_spec();
  for (const std::string* vocab : {&spec.user_id().vocab_file(), &spec.item_id().vocab_file()}) {
    FUZZ_CHECK(vocab->empty() || Listed(m, *vocab));
  }
  LoadLikeModelVersion(m);
}

constexpr char kManifestTemplate[] = R"({
  "version": "7",
  "created_at": "2024-01-01T00:00:00Z",
  "embedding_dim": 16,
  "feature_spec": {
    "user_id": {"name": "user_id", "num_buckets": "100"USER_VOCAB},
    "item_id": {"name": "item_id", "num_buckets": "1000"ITEM_VOCAB},
    "history_length": 4,
    "user_categorical": [{"name": "country", "num_buckets": "50"}, {"name": "device", "num_buckets": "1"}],
    "user_numeric": [{"name": "age", "mean": 35, "std": 12}],
    "item_categorical": [{"name": "category", "num_buckets": "20"}],
    "item_numeric": [{"name": "price", "mean": 20, "std": 0.25}]
  },
  "index_factory": "Flat",
  "training_config": {"epochs": "3"},
  "eval": {"metrics": {"recall@20": 0.12}, "dataset": "synthetic"},
  "files": [
    {"path": "item_tower.pt", "sha256": "@sha256:item_tower.pt@", "size_bytes": "@size:item_tower.pt@"},
    {"path": "items.faiss", "sha256": "@sha256:items.faiss@", "size_bytes": "@size:items.faiss@"},
    {"path": "user_tower.pt", "sha256": "@sha256:user_tower.pt@", "size_bytes": "@size:user_tower.pt@"}EXTRA_ENTRY
  ],
  "num_items": "1000",
  "user_tower_file": "user_tower.pt",
  "item_tower_file": "item_tower.pt",
  "index_file": "items.faiss",
  "format_version": 1
})";

std::string Manifest(bool user_vocab, bool item_vocab, bool list_extra) {
  std::string t = kManifestTemplate;
  auto replace = [&t](const std::string& from, const std::string& to) {
    t.replace(t.find(from), from.size(), to);
  };
  replace("USER_VOCAB", user_vocab ? R"(, "vocab_file": "extra.bin")" : "");
  replace("ITEM_VOCAB", item_vocab ? R"(, "vocab_file": "extra.bin")" : "");
  replace("EXTRA_ENTRY",
          list_extra ? ",\n    {\"path\": \"extra.bin\", \"sha256\": \"@sha256:extra.bin@\", "
                       "\"size_bytes\": \"@size:extra.bin@\"}"
                     : "");
  return t;
}

std::string VocabBytes(std::vector<int64_t> ids) {
  return std::string(reinterpret_cast<const char*>(ids.data()), ids.size() * sizeof(int64_t));
}

void WriteSeeds(const std::string& dir) {
  auto put = [&dir](const std::string& name, const std::string& bytes) {
    WriteFile(dir + "/" + name, bytes);
  };
  const std::string vocab = std::string(kSeparator) + VocabBytes({-3, 5, 17, 1000000});
  put("valid_hashed_ids", Manifest(false, false, false));
  put("valid_user_vocab", Manifest(true, false, true) + vocab);
  put("valid_item_vocab_and_extra_file", Manifest(false, true, true) + vocab);
  put("unsorted_vocab", Manifest(true, true, true) + std::string(kSeparator) + VocabBytes({9, 2}));
  put("odd_size_vocab", Manifest(true, false, true) + std::string(kSeparator) + "1234567");
  put("vocab_not_listed", Manifest(true, false, false) + vocab);
  std::string wrong_version = Manifest(false, false, false);
  wrong_version.replace(wrong_version.find("\"7\""), 3, "\"8\"");
  put("wrong_version", wrong_version);
  std::string bad_sha = Manifest(false, false, false);
  bad_sha.replace(bad_sha.find("@sha256:items.faiss@"), 20, std::string(64, 'a'));
  put("sha_mismatch", bad_sha);
  std::string escape = Manifest(false, false, false);
  escape.replace(escape.find("\"path\": \"items.faiss\""), 21, "\"path\": \"../7/items.faiss\"");
  put("path_escape", escape);
  std::string huge = Manifest(false, false, false);
  huge.replace(huge.find("\"num_buckets\": \"50\""), 19,
               "\"num_buckets\": \"9223372036854775807\"");
  put("huge_num_buckets", huge);
  put("minimal", R"({"version": 7, "embedding_dim": 1})");
  put("not_json", "{\"version\": 7,");
  put("empty", "");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  if (const char* dir = std::getenv("RECALL_FUZZ_WRITE_SEEDS")) {
    WriteSeeds(dir);
    std::exit(0);
  }
  const char* base = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  std::string tmpl = std::string(base) + "/recall-manifest-fuzz-XXXXXX";
  FUZZ_CHECK(::mkdtemp(tmpl.data()) != nullptr);
  g_base = tmpl;
  g_dir = absl::StrCat(g_base, "/", kVersion);
  fs::create_directories(g_dir);
  WriteFile(g_dir + "/" + recall::kUserTowerFile, "not a real TorchScript user tower\n");
  WriteFile(g_dir + "/" + recall::kItemTowerFile, "not a real TorchScript item tower\n");
  WriteFile(g_dir + "/" + recall::kIndexFile, std::string("IxF2\0\0\0\x10", 8));
  std::atexit([] {
    std::error_code ec;
    fs::remove_all(g_base, ec);
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  RunOne(std::string(reinterpret_cast<const char*>(data), size));
  return 0;
}
