#!/usr/bin/env bash
# libFuzzer runs of the fuzz targets in tests/fuzz (issue 6):
#   bash deploy/fuzz.sh [seconds_per_target (default 60)] [target ...]
# Configures build-fuzz/ once (clang-14, -DRECALL_FUZZ=ON with ASan+UBSan, no gtest), builds
# only the fuzz targets, then runs each for the given seconds with leak detection on. Each run
# mutates a fresh working corpus in a temp dir; the committed seeds in tests/fuzz/corpus/<name>/
# are passed as a second, read-only corpus dir (libFuzzer only writes new inputs to the first).
# Prints the total execs per target. Exits non-zero if any target crashed, leaked, tripped a
# sanitizer or an invariant; the crashing inputs are copied to the findings dir it names
# (fuzz-findings/<timestamp>/ at the top of the checkout; FUZZ_FINDINGS overrides).
# Environment: JOBS (build parallelism, default 2), FUZZ_JOBS (fuzzers run at once, default
# the number of cores), FUZZ_FINDINGS, FUZZ_ARGS (extra libFuzzer flags, e.g. "-max_len=8192").
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
seconds=${1:-60}
[ $# -eq 0 ] || shift
if [ $# -gt 0 ]; then targets=("$@"); else targets=(request wal manifest); fi
dir=build-fuzz

if ! command -v clang++-14 >/dev/null; then
  echo "fuzz: clang++-14 missing (bash deploy/install-deps.sh installs clang-14 and libclang-rt-14-dev)" >&2
  exit 2
fi
if [ ! -f "$dir/build.ninja" ]; then
  CC=clang-14 CXX=clang++-14 cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g1" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" \
    -DRECALL_FUZZ=ON -DRECALL_SANITIZE_ADDRESS=ON -DRECALL_BUILD_TESTS=OFF
fi
ninja -C "$dir" -j"${JOBS:-2}" $(printf '%s_fuzzer ' "${targets[@]}")

stamp=$(date +%Y%m%d-%H%M%S)
findings=${FUZZ_FINDINGS:-$root/fuzz-findings/$stamp}
work=$(mktemp -d /tmp/recall-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT

# LSan: leaks on; the suppressions cover only third-party process-lifetime allocations.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:halt_on_error=1:allocator_may_return_null=1:detect_stack_use_after_return=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export LSAN_OPTIONS="suppressions=$root/tests/sanitizers/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
# LibTorch and OpenMP threads are not needed for one-row tensors; fewer threads, faster runs.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

# One fuzzer is one process on one core: run up to FUZZ_JOBS (default: the cores) at once, so
# each still gets a core of its own for its seconds.
run_one() {
  local t=$1 bin="$dir/tests/fuzz/$1_fuzzer" seeds="tests/fuzz/corpus/$1"
  local corpus="$work/$t/corpus" artifacts="$work/$t/artifacts/"
  mkdir -p "$corpus" "$artifacts"
  echo "fuzz: $t for ${seconds}s (seeds: $seeds, log: $work/$t/fuzz.log)"
  local rc=0
  # shellcheck disable=SC2086
  "$bin" "$corpus" "$seeds" -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 \
    -print_final_stats=1 -artifact_prefix="$artifacts" ${FUZZ_ARGS:-} >"$work/$t/fuzz.log" 2>&1 ||
    rc=$?
  echo "$rc" >"$work/$t/rc"
}
jobs_max=${FUZZ_JOBS:-$(nproc)}
running=0
for t in "${targets[@]}"; do
  if [ "$running" -ge "$jobs_max" ]; then wait -n || true; running=$((running - 1)); fi
  run_one "$t" &
  running=$((running + 1))
done
wait

failed=()
summary=()
for t in "${targets[@]}"; do
  log="$work/$t/fuzz.log"
  artifacts="$work/$t/artifacts/"
  rc=$(cat "$work/$t/rc" 2>/dev/null || echo "?")
  # Final stats: "stat::number_of_executed_units: N"; older builds print "Done N runs in S".
  execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -1)
  [ -n "$execs" ] || execs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -1)
  cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[^ ]+' "$log" | tail -1 || true)
  line="$t: ${execs:-?} execs in ${seconds}s (${cov:-no stats}), exit $rc"
  summary+=("$line")
  if [ "$rc" != 0 ] || grep -qE '^==[0-9]+==ERROR|runtime error:|invariant violated' "$log"; then
    failed+=("$t")
    mkdir -p "$findings/$t"
    cp "$log" "$findings/$t/"
    cp "$artifacts"* "$findings/$t/" 2>/dev/null || true
    echo "fuzz: $t FAILED (exit $rc); log and crashing inputs in $findings/$t" >&2
    grep -E -m5 '^==[0-9]+==ERROR|runtime error:|invariant violated|SUMMARY' "$log" >&2 || true
  fi
done

echo "fuzz: summary"
printf '  %s\n' "${summary[@]}"
if ((${#failed[@]})); then
  echo "fuzz: findings in ${failed[*]} -> $findings" >&2
  exit 1
fi
echo "fuzz: no findings"
