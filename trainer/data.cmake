# Datasets, the synthetic generator and full-ranking evaluation (no LibTorch).
# Included from trainer/CMakeLists.txt.
add_library(recall_trainer_data STATIC
  ${CMAKE_CURRENT_LIST_DIR}/dataset.cc
  ${CMAKE_CURRENT_LIST_DIR}/dataset_text.cc
  ${CMAKE_CURRENT_LIST_DIR}/interactions.cc
  ${CMAKE_CURRENT_LIST_DIR}/synthetic.cc
  ${CMAKE_CURRENT_LIST_DIR}/evaluator.cc
)
target_include_directories(recall_trainer_data PUBLIC ${PROJECT_SOURCE_DIR})
target_link_libraries(recall_trainer_data
  PUBLIC
    recall_files
    absl::status
    absl::statusor
    absl::strings
    absl::str_format
    absl::flat_hash_map
    absl::flat_hash_set
  PRIVATE
    OpenMP::OpenMP_CXX
    BLAS::BLAS
    PkgConfig::GLOG
)
