# Unit tests of recall_wal (server/write_ahead_log.h, server/crc32c.h).
add_executable(write_ahead_log_test ${CMAKE_CURRENT_LIST_DIR}/write_ahead_log_test.cc)
target_link_libraries(write_ahead_log_test PRIVATE recall_wal GTest::gtest_main)
recall_discover_gtests(write_ahead_log_test)
