#!/usr/bin/env bash
# Sanitizer build and test run (issue 6; .ci/run runs both):
#   bash deploy/sanitize.sh address [ctest -R regex]   ASan + UBSan, into build-asan/
#   bash deploy/sanitize.sh thread  [ctest -R regex]   TSan, into build-tsan/
# Builds with -O1 -g1 (line tables: enough for symbolized reports, half the compile time of -g),
# without the benchmark drivers (RECALL_BUILD_BENCH=OFF: their smoke tests run in the plain
# pass), and runs ctest with the sanitizer's options set so that any report fails
# the test. TARGETS="a b" builds only those ninja targets (ctest cannot tell ninja which ones a
# regex needs; tests whose binaries are not built are listed as not run and fail ctest, so give
# a regex that matches only them).
#
# Only this project's code is instrumented; Debian's LibTorch, FAISS, gRPC, protobuf, Abseil,
# OpenBLAS and libgomp are not. ASan/UBSan need nothing for that. TSan cannot see the
# synchronization inside uninstrumented code: Abseil's mutexes are annotated at the call
# boundary (tests/sanitizers/tsan_absl_sync.cc) and OpenMP runs single-threaded under TSan
# (tests/sanitizers/tsan.supp explains both); a race with a frame of ours is never suppressed.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:?usage: sanitize.sh address|thread [ctest regex]}
regex=${2:-}
case "$kind" in
  address) dir=build-asan; opt=-DRECALL_SANITIZE_ADDRESS=ON ;;
  thread) dir=build-tsan; opt=-DRECALL_SANITIZE_THREAD=ON ;;
  *) echo "unknown sanitizer: $kind" >&2; exit 64 ;;
esac
if [ ! -f "$dir/build.ninja" ]; then
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DRECALL_BUILD_BENCH=OFF "$opt"
fi
# shellcheck disable=SC2086
ninja -C "$dir" -j"${JOBS:-2}" ${TARGETS:-}
if [ "$kind" = thread ]; then bash tests/sanitizers/check_tsan_wraps.sh "$dir"; fi
supp="$PWD/tests/sanitizers"
# Leaks: LeakSanitizer runs (the ASan default) with suppressions for process-lifetime
# allocations of uninstrumented libraries only (tests/sanitizers/lsan.supp).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:halt_on_error=1:detect_stack_use_after_return=0}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$supp/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:suppressions=$supp/tsan.supp}
# TSan: OpenMP regions on their calling thread only (tests/sanitizers/tsan.supp says why).
if [ "$kind" = thread ]; then export OMP_NUM_THREADS=1; fi
cd "$dir"
start=$(date +%s)
# Every test of the project's code runs; the bench-script smokes and the deployment-file checks
# (labels bench, deploy: they drive shell scripts, Python, promtool and Prometheus around the
# binaries, whose code paths the other tests cover) run in the plain pass only, where they take
# a tenth of the time.
ctest --output-on-failure -j"${JOBS:-2}" --timeout 1200 -LE 'deploy|bench' ${regex:+-R "$regex"}
echo "sanitize.sh $kind: ctest passed in $(( $(date +%s) - start )) s"
