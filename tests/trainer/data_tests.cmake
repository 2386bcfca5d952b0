# Tests for recall_trainer_data. Included from tests/trainer/CMakeLists.txt.
# The Gowalla check reads $RECALL_GOWALLA_DIR, else this default, and skips if neither exists.
set(RECALL_GOWALLA_DEFAULT_DIR "${PROJECT_SOURCE_DIR}/../shared/data/gowalla")

add_executable(dataset_test ${CMAKE_CURRENT_LIST_DIR}/dataset_test.cc)
target_link_libraries(dataset_test PRIVATE recall_trainer_data GTest::gtest_main)
recall_discover_gtests(dataset_test)

add_executable(evaluator_test ${CMAKE_CURRENT_LIST_DIR}/evaluator_test.cc)
target_link_libraries(evaluator_test PRIVATE recall_trainer_data GTest::gtest_main)
target_compile_definitions(evaluator_test PRIVATE
  RECALL_GOWALLA_DEFAULT_DIR="${RECALL_GOWALLA_DEFAULT_DIR}")
recall_discover_gtests(evaluator_test)
