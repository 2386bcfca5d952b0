// Test helper: a trained model published and served in-process (VersionManager + RecallEngine,
// no gRPC), for suites that call the engine directly.
#ifndef RECALL_TESTS_SERVER_IN_PROCESS_ENGINE_H_
#define RECALL_TESTS_SERVER_IN_PROCESS_ENGINE_H_

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "server/recall_engine.h"
#include "server/version_manager.h"
#include "tests/server/small_model.h"

namespace recall::testing {

struct InProcessEngine {
  InProcessEngine(const std::string& model_base, server::EngineLimits limits)
      : versions({model_base, 0, 0}), engine(&versions, limits) {}
  server::VersionManager versions;
  server::RecallEngine engine;
};

// Publishes `model` under model_base with an exact (Flat) index and serves its newest version
// with max_k; nullptr (after a test failure) if either step fails.
inline std::unique_ptr<InProcessEngine> ExportAndServe(const SmallTrainedModel& model,
                                                       const std::string& model_base,
                                                       int max_k) {
  auto dir = model.Export(model_base);
  EXPECT_TRUE(dir.ok()) << dir.status();
  if (!dir.ok()) return nullptr;
  server::EngineLimits limits;
  limits.max_k = max_k;
  auto served = std::make_unique<InProcessEngine>(model_base, limits);
  const absl::Status st = served->versions.LoadNewest();
  EXPECT_TRUE(st.ok()) << st;
  return st.ok() ? std::move(served) : nullptr;
}

// SmallModelSuite whose model is also published and served in-process for the whole suite:
// Derived sets `static constexpr int kMaxK`; engine_ answers its requests.
template <typename Derived>
class ServedModelSuite : public SmallModelSuite<Derived> {
 protected:
  using Base = SmallModelSuite<Derived>;
  static void SetUpTestSuite() {
    Base::SetUpTestSuite();
    if (::testing::Test::HasFatalFailure()) return;
    served_ = ExportAndServe(*Base::model_, *Base::dir_ + "/models", Derived::kMaxK).release();
    ASSERT_NE(served_, nullptr);
    engine_ = &served_->engine;
  }
  static void TearDownTestSuite() {
    delete served_;
    served_ = nullptr;
    engine_ = nullptr;
    Base::TearDownTestSuite();
  }

  static inline InProcessEngine* served_ = nullptr;
  static inline server::RecallEngine* engine_ = nullptr;  // served_->engine
};

}  // namespace recall::testing

#endif  // RECALL_TESTS_SERVER_IN_PROCESS_ENGINE_H_
