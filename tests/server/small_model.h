// Test helper: the small synthetic dataset and a model trained on it, which the loopback and
// in-process server suites share (SmallModelSuite trains it once per test process).
//
// The trainer stays behind this header: trainer/trainer.h brings LibTorch's front end, which
// took ~25 s to parse in each suite's file. A suite that needs the trainer itself (its
// embeddings, a config edit) includes trainer/trainer.h and calls trainer().
#ifndef RECALL_TESTS_SERVER_SMALL_MODEL_H_
#define RECALL_TESTS_SERVER_SMALL_MODEL_H_

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "recall/v1/model.pb.h"
#include "recall/v1/train_config.pb.h"
#include "trainer/dataset.h"
#include "trainer/evaluator.h"
#include "trainer/synthetic.h"

namespace recall::trainer {
class Trainer;
using TrainConfig = recall::v1::TrainConfig;
}  // namespace recall::trainer

namespace recall::testing {

// 400 users, 300 items in 6 categories.
trainer::SyntheticConfig SmallSyntheticConfig();
// 3 epochs of batch 128, history 20, seed 7: trains in about a second (5 s under ASan).
trainer::TrainConfig SmallTrainConfig();

// A fresh directory under the temp dir, unique per process and name; removed by the caller.
std::string FreshTempDir(const std::string& name);

// A fresh temp dir (removed with it), the small dataset and a model trained on it. A training
// failure is recorded as a test failure and leaves ok() false.
class SmallTrainedModel {
 public:
  // `edit` (may be null) changes SmallTrainConfig() before training; `edit_data` (may be null)
  // changes the synthetic dataset first (e.g. adds numeric side features).
  explicit SmallTrainedModel(const std::string& name,
                             void (*edit)(trainer::TrainConfig&) = nullptr,
                             void (*edit_data)(trainer::Dataset&) = nullptr);
  ~SmallTrainedModel();

  bool ok() const { return trainer_ != nullptr; }
  // Publishes the model as version `version` (0: the next) under model_base with an index
  // built by `index_factory`; returns the version directory.
  absl::StatusOr<std::string> Export(const std::string& model_base,
                                     const std::string& index_factory = "Flat",
                                     int64_t version = 0) const;
  // The same, with `edit` applied to the manifest before publication (e.g. the tuner's search
  // parameters and frontier): exported into a scratch model base first, then published under
  // model_base with the edited manifest (model/version_dir.h recomputes the checksums), so a
  // server watching model_base never sees the unedited version.
  absl::StatusOr<std::string> ExportEdited(
      const std::string& model_base, const std::string& index_factory,
      const std::function<void(recall::v1::ModelManifest&)>& edit, int64_t version = 0) const;
  int dim() const;  // the towers' output dimension
  // The trained towers' outputs as the server must reproduce them, row-major: every item
  // (num_items rows of width()) and one user. Plain floats keep LibTorch's front end out of
  // the suites' files.
  int width() const;  // an embedding's length: dim(), plus 1 with a score offset
  std::vector<float> ItemEmbeddings() const;
  std::vector<float> UserEmbedding(int64_t user) const;
  trainer::Trainer& trainer() const { return *trainer_; }

  const std::string dir;
  const trainer::Dataset dataset;  // the trainer keeps a reference: declared before it
  trainer::RankingMetrics metrics;

 private:
  std::unique_ptr<trainer::Trainer> trainer_;
};

// Fixture base of a suite that shares one SmallTrainedModel: Derived names its temp dir with
// `static constexpr char kTempName[]` and may train another config by defining its own
// `static void EditModelConfig(trainer::TrainConfig&)`. A suite that needs more set-up calls
// these first.
template <typename Derived>
class SmallModelSuite : public ::testing::Test {
 protected:
  static void EditModelConfig(trainer::TrainConfig&) {}
  static void SetUpTestSuite() {
    model_ = new SmallTrainedModel(Derived::kTempName, &Derived::EditModelConfig);
    ASSERT_TRUE(model_->ok());
    dir_ = &model_->dir;
    dataset_ = &model_->dataset;
  }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }

  // <suite dir>/<current test's name>, emptied: a fresh model base for each test.
  static std::string FreshTestDir() {
    const std::string d =
        *dir_ + "/" + ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(d);
    std::filesystem::create_directories(d);
    return d;
  }

  static inline SmallTrainedModel* model_ = nullptr;
  static inline const std::string* dir_ = nullptr;
  static inline const trainer::Dataset* dataset_ = nullptr;
};

}  // namespace recall::testing

#endif  // RECALL_TESTS_SERVER_SMALL_MODEL_H_
