# recall_wal: the write-ahead log behind online index writes (server/WAL.md). Kept free of
# LibTorch, FAISS and gRPC so its tests build in seconds.
add_library(recall_wal STATIC
  ${CMAKE_CURRENT_LIST_DIR}/write_ahead_log.cc
  ${CMAKE_CURRENT_LIST_DIR}/crc32c.cc)
target_include_directories(recall_wal PUBLIC ${PROJECT_SOURCE_DIR})
target_link_libraries(recall_wal PUBLIC
  absl::status absl::statusor absl::synchronization absl::strings absl::time
  PkgConfig::GLOG)
