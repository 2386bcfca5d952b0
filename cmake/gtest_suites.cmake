# Included by ctest (tests/CMakeLists.txt, recall_discover_gtests PER_SUITE): registers one
# test per gtest suite of RECALL_GTEST_EXE, run as `exe --gtest_filter=Suite.*` in
# RECALL_GTEST_WORKDIR with RECALL_GTEST_PROPERTIES. The listing is cached in
# RECALL_GTEST_TESTS_FILE and redone when the executable is newer.
if(NOT EXISTS "${RECALL_GTEST_EXE}")
  # Not built (e.g. a sanitizer build of some targets only): a test that fails saying so, as
  # gtest_discover_tests does.
  get_filename_component(recall_gtest_name "${RECALL_GTEST_EXE}" NAME)
  add_test("${recall_gtest_name}_NOT_BUILT" "${RECALL_GTEST_EXE}")
  return()
endif()
if(NOT EXISTS "${RECALL_GTEST_TESTS_FILE}" OR "${RECALL_GTEST_EXE}" IS_NEWER_THAN "${RECALL_GTEST_TESTS_FILE}")
  execute_process(COMMAND "${RECALL_GTEST_EXE}" --gtest_list_tests
    WORKING_DIRECTORY "${RECALL_GTEST_WORKDIR}" TIMEOUT 120
    OUTPUT_VARIABLE recall_gtest_out ERROR_VARIABLE recall_gtest_err
    RESULT_VARIABLE recall_gtest_rc)
  if(NOT recall_gtest_rc EQUAL 0)
    message(FATAL_ERROR "listing the tests of ${RECALL_GTEST_EXE} failed (${recall_gtest_rc}):\n"
      "${recall_gtest_out}${recall_gtest_err}")
  endif()
  string(REPLACE "\n" ";" recall_gtest_lines "${recall_gtest_out}")
  set(recall_gtest_script "")
  foreach(line IN LISTS recall_gtest_lines)
    # Suite lines start in column 0 and end with '.', before an optional "  # TypeParam = ...".
    if(line MATCHES "^([^ #][^ ]*)\\.( .*)?$")
      set(suite "${CMAKE_MATCH_1}")
      string(APPEND recall_gtest_script
        "add_test([==[${suite}]==] [==[${RECALL_GTEST_EXE}]==] [==[--gtest_filter=${suite}.*]==])\n"
        "set_tests_properties([==[${suite}]==] PROPERTIES WORKING_DIRECTORY [==[${RECALL_GTEST_WORKDIR}]==] ${RECALL_GTEST_PROPERTIES})\n")
    endif()
  endforeach()
  file(WRITE "${RECALL_GTEST_TESTS_FILE}" "${recall_gtest_script}")
endif()
include("${RECALL_GTEST_TESTS_FILE}")
