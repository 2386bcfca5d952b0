#include "model/version_dir.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace recall {
namespace {
namespace fs = std::filesystem;

class VersionDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = (fs::temp_directory_path() /
             ("recall_vdir_" + std::to_string(::getpid()) + "_" +
              ::testing::UnitTest::GetInstance()->current_test_info()->name()))
                .string();
    fs::remove_all(base_);
  }
  void TearDown() override { fs::remove_all(base_); }

  std::string Publish(int64_t version, int score_offset_stride = 0) {
    auto staging = CreateStagingDir(base_, version);
    EXPECT_TRUE(staging.ok());
    for (const char* name : {kUserTowerFile, kItemTowerFile, kIndexFile}) {
      std::ofstream(fs::path(*staging) / name) << "payload of " << name << std::string(100, 'x');
    }
    recall::v1::ModelManifest m;
    m.set_version(version);
    m.set_embedding_dim(8);
    m.set_score_offset_stride(score_offset_stride);
    auto path = PublishVersion(base_, *staging, m);
    EXPECT_TRUE(path.ok()) << path.status();
    return *path;
  }

  std::string base_;
};

TEST_F(VersionDirTest, PublishesAtomicallyAndVerifies) {
  const std::string dir = Publish(1);
  EXPECT_EQ(dir, VersionPath(base_, 1));
  auto m = VerifyVersionDir(dir);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->version(), 1);
  EXPECT_EQ(m->files_size(), 3);
  for (const auto& f : m->files()) EXPECT_EQ(f.sha256().size(), 64u);
  EXPECT_EQ(ListVersionNumbers(base_), std::vector<int64_t>{1});
  EXPECT_EQ(NextVersionNumber(base_), 2);
  for (const auto& e : fs::directory_iterator(base_)) {
    EXPECT_NE(e.path().filename().string().rfind(".tmp-", 0), 0u) << "staging dir left behind";
  }
}

TEST_F(VersionDirTest, CorruptedByteIsRefusedNamingTheFile) {
  const std::string dir = Publish(3);
  {
    std::fstream f(fs::path(dir) / kIndexFile, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(20);
    f.put('!');
  }
  auto m = VerifyVersionDir(dir);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(m.status().message().find(kIndexFile), std::string::npos) << m.status();
}

TEST_F(VersionDirTest, MissingFileIsRefusedNamingTheFile) {
  const std::string dir = Publish(2);
  fs::remove(fs::path(dir) / kUserTowerFile);
  auto m = VerifyVersionDir(dir);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find(kUserTowerFile), std::string::npos) << m.status();
}

TEST_F(VersionDirTest, TruncatedFileAndMissingManifestAreRefused) {
  const std::string dir = Publish(4);
  fs::resize_file(fs::path(dir) / kItemTowerFile, 10);
  auto m = VerifyVersionDir(dir);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find(kItemTowerFile), std::string::npos) << m.status();

  const std::string dir5 = Publish(5);
  fs::remove(fs::path(dir5) / kManifestFile);
  m = VerifyVersionDir(dir5);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find(kManifestFile), std::string::npos) << m.status();
}

TEST_F(VersionDirTest, RefusesToOverwriteAndIgnoresStagingDirs) {
  Publish(1);
  auto staging = CreateStagingDir(base_, 1);
  ASSERT_TRUE(staging.ok());
  recall::v1::ModelManifest m;
  m.set_version(1);
  m.set_embedding_dim(8);
  EXPECT_EQ(PublishVersion(base_, *staging, m).status().code(), absl::StatusCode::kAlreadyExists);
  // A half-written staging dir is never listed as a version.
  EXPECT_EQ(ListVersionNumbers(base_), std::vector<int64_t>{1});
}

TEST_F(VersionDirTest, ScoreOffsetStrideMustSplitTheDimIntoBlocks) {
  // 8 = 2 blocks of 4 (two ensemble members of dim 3 + their offsets): valid.
  EXPECT_TRUE(VerifyVersionDir(Publish(1, 4)).ok());
  for (int stride : {3, 1, -4}) {
    auto m = VerifyVersionDir(Publish(2 + (stride + 4), stride));
    ASSERT_FALSE(m.ok()) << stride;
    EXPECT_EQ(m.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_NE(m.status().message().find("score_offset_stride"), std::string::npos) << m.status();
  }
}

// The manifest records the resolved TrainConfig; manifests written before it (the trainer's
// flags as a string map) still load.
TEST_F(VersionDirTest, TrainConfigIsStoredAndOldFlagMapManifestsStillLoad) {
  const std::string dir = Publish(1);
  const std::string path = (fs::path(dir) / "MANIFEST.json").string();
  std::stringstream json;
  json << std::ifstream(path).rdbuf();
  std::string old_style = json.str();
  ASSERT_EQ(old_style.rfind("{", 0), 0u);
  old_style.insert(1, R"("training_config": {"lr": "0.002", "logq": "true", "dim": "128"},)");
  std::ofstream(path, std::ios::trunc) << old_style;
  auto old = VerifyVersionDir(dir);
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_EQ(old->training_config().at("lr"), "0.002");
  EXPECT_FALSE(old->has_train_config());

  auto staging = CreateStagingDir(base_, 2);
  ASSERT_TRUE(staging.ok());
  for (const char* name : {kUserTowerFile, kItemTowerFile, kIndexFile}) {
    std::ofstream(fs::path(*staging) / name) << name;
  }
  recall::v1::ModelManifest m;
  m.set_version(2);
  m.set_embedding_dim(8);
  m.mutable_train_config()->set_learning_rate(0.002);
  m.mutable_train_config()->mutable_tower()->set_pooling(recall::v1::TowerConfig::SQRT);
  m.set_train_preset("gowalla");
  ASSERT_TRUE(PublishVersion(base_, *staging, m).ok());
  auto now = VerifyVersionDir(VersionPath(base_, 2));
  ASSERT_TRUE(now.ok()) << now.status();
  EXPECT_DOUBLE_EQ(now->train_config().learning_rate(), 0.002);
  EXPECT_EQ(now->train_config().tower().pooling(), recall::v1::TowerConfig::SQRT);
  EXPECT_EQ(now->train_preset(), "gowalla");
}

TEST_F(VersionDirTest, ManifestVersionMustMatchDirectory) {
  const std::string dir = Publish(6);
  fs::rename(dir, VersionPath(base_, 7));
  auto m = VerifyVersionDir(VersionPath(base_, 7));
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("does not match"), std::string::npos);
}

}  // namespace
// A vocabulary the spec names is read by the loader, so it must be checksummed like the towers:
// a manifest that names one it does not list is refused (a fuzz finding, tests/fuzz/README.md).
TEST_F(VersionDirTest, VocabularyNamedByTheSpecButNotListedIsRefused) {
  auto staging = CreateStagingDir(base_, 4);
  ASSERT_TRUE(staging.ok());
  for (const char* name : {kUserTowerFile, kItemTowerFile, kIndexFile}) {
    std::ofstream(fs::path(*staging) / name) << "payload of " << name;
  }
  recall::v1::ModelManifest m;
  m.set_version(4);
  m.set_embedding_dim(8);
  m.mutable_feature_spec()->mutable_user_id()->set_vocab_file(kUserVocabFile);
  auto path = PublishVersion(base_, *staging, m);
  ASSERT_TRUE(path.ok()) << path.status();
  // Written after publication, so present on disk but absent from the manifest's list.
  std::ofstream(fs::path(*path) / kUserVocabFile) << "unchecked bytes";
  auto verified = VerifyVersionDir(*path);
  ASSERT_FALSE(verified.ok());
  EXPECT_EQ(verified.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(verified.status().message().find(kUserVocabFile), std::string::npos)
      << verified.status();
}

}  // namespace recall
