// The model-version directory: <model_base>/<version>/ with MANIFEST.json written last.
//
// Publication is atomic: files are written into <model_base>/.tmp-<version>-<pid>/, fsynced,
// the manifest (with the sha256 of every other file) is written and fsynced, the directory is
// fsynced and renamed to <model_base>/<version>, and <model_base> is fsynced. A reader either
// sees no <version> directory or a complete one. Stale .tmp-* directories are never read.
//
// Functions here are stateless and thread-compatible; concurrent publishers must use
// different version numbers (rename fails if the target exists).
#ifndef RECALL_MODEL_VERSION_DIR_H_
#define RECALL_MODEL_VERSION_DIR_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "recall/v1/model.pb.h"

namespace recall {

inline constexpr char kManifestFile[] = "MANIFEST.json";
inline constexpr char kUserTowerFile[] = "user_tower.pt";
inline constexpr char kItemTowerFile[] = "item_tower.pt";
inline constexpr char kIndexFile[] = "items.faiss";
inline constexpr char kUserVocabFile[] = "user_vocab.bin";
inline constexpr char kItemVocabFile[] = "item_vocab.bin";

// Lowercase hex sha256 of a file's contents.
absl::StatusOr<std::string> Sha256File(const std::string& path);

// Version numbers of the directories under `base` whose names are positive integers,
// ascending (valid or not). Missing base -> empty list.
std::vector<int64_t> ListVersionNumbers(const std::string& base);

// max(existing versions) + 1 (1 for an empty base).
int64_t NextVersionNumber(const std::string& base);

std::string VersionPath(const std::string& base, int64_t version);

// Creates <base>/.tmp-<version>-<pid>/ (and base itself if needed) and returns its path.
absl::StatusOr<std::string> CreateStagingDir(const std::string& base, int64_t version);

// Fills manifest.files with every regular file in `staging` (except MANIFEST.json), writes the
// manifest last, fsyncs everything and renames staging to <base>/<manifest.version>.
// Returns the published path. AlreadyExists if that version exists.
absl::StatusOr<std::string> PublishVersion(const std::string& base, const std::string& staging,
                                           recall::v1::ModelManifest manifest);

// Reads and checks a published version: the manifest parses, its version matches the
// directory name, every listed file exists with the recorded size and sha256, and the tower,
// index and vocabulary files it names are listed. Errors name the offending file.
absl::StatusOr<recall::v1::ModelManifest> VerifyVersionDir(const std::string& dir);

// Parses MANIFEST.json without checking the files (for listing).
absl::StatusOr<recall::v1::ModelManifest> ReadManifest(const std::string& dir);

// Deletes stale staging dirs (.tmp-*) whose writer process is gone. Returns how many.
int RemoveStaleStagingDirs(const std::string& base);

}  // namespace recall

#endif  // RECALL_MODEL_VERSION_DIR_H_
