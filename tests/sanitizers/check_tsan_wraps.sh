#!/usr/bin/env bash
# Fails when this project's objects in a TSan build call an Abseil synchronization function
# that tests/sanitizers/tsan_absl_sync.cc does not wrap: TSan would not see that call release
# or take its mutex, and reports a false "double lock" or race, or misses a real one.
#   bash tests/sanitizers/check_tsan_wraps.sh BUILD_DIR
set -euo pipefail
build=${1:?usage: check_tsan_wraps.sh BUILD_DIR}
here=$(cd "$(dirname "$0")" && pwd)
wrapped=$(sed -n 's/^RECALL_WRAP([^,]*, *\([A-Za-z0-9_]*\).*/\1/p' "$here/tsan_absl_sync.cc" | sort -u)
# Calls that neither release nor take a mutex, and need no annotation.
harmless='Mutex16AssertReaderHeldEv|Mutex10AssertHeldEv|CondVar6SignalEv|CondVar9SignalAllEv|CondVarD1Ev|CondVarC1Ev'
used=$(find "$build" -name '*.o' ! -name 'tsan_absl_sync.cc.o' -print0 |
  xargs -0 nm -u 2>/dev/null |
  grep -oE '_Z[A-Za-z0-9_]*absl7debian3(5Mutex|7CondVar|12Notification)[A-Za-z0-9_]*' | sort -u)
missing=$(comm -23 <(echo "$used") <(echo "$wrapped") | grep -vE "$harmless" || true)
if [ -n "$missing" ]; then
  echo "check_tsan_wraps: called but not wrapped in tests/sanitizers/tsan_absl_sync.cc:" >&2
  echo "$missing" | sed 's/^/  /' >&2
  exit 1
fi
echo "check_tsan_wraps: every Abseil synchronization call of ours is annotated ($(echo "$used" | wc -l) symbols)"
