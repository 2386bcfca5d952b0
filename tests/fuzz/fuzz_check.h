// FUZZ_CHECK(cond): an invariant of a fuzz target. A violation prints the condition and aborts,
// so libFuzzer records the input as a finding, like a sanitizer report.
#ifndef RECALL_TESTS_FUZZ_FUZZ_CHECK_H_
#define RECALL_TESTS_FUZZ_FUZZ_CHECK_H_

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(cond)                                                                    \
  do {                                                                                      \
    if (!(cond)) {                                                                          \
      std::fprintf(stderr, "%s:%d: invariant violated: %s\n", __FILE__, __LINE__, #cond);   \
      std::abort();                                                                         \
    }                                                                                       \
  } while (0)

#endif  // RECALL_TESTS_FUZZ_FUZZ_CHECK_H_
