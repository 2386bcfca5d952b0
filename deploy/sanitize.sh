#!/usr/bin/env bash
# Sanitizer build and test run (issue 6):
#   bash deploy/sanitize.sh address [ctest -R regex]   ASan + UBSan, into build-asan/
#   bash deploy/sanitize.sh thread  [ctest -R regex]   TSan, into build-tsan/
# Builds with -O1 -g (RelWithDebInfo flags replaced) and runs ctest with the sanitizer's
# options set so that any report fails the test. Not yet part of the CI run (see README).
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
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" "$opt"
fi
# Every target: ctest cannot tell ninja which ones a regex needs.
ninja -C "$dir" -j"${JOBS:-2}"
# Leak detection stays off until it has been run over the suite and any third-party
# process-lifetime allocations are suppressed (not done yet).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:halt_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}
cd "$dir"
ctest --output-on-failure -j"${JOBS:-2}" --timeout 1200 ${regex:+-R "$regex"}
