#!/usr/bin/env bash
# Two recall-server variants, alternated on the same machine in one run: a build directory
# and/or extra flags each. Per round and variant: grpc_floor.sh (the demo version's peaks),
# then cpu_per_recall.sh at RATES and write_load.sh at WRITE_RATE (serving.sh's version), so
# every figure has its baseline minutes away (README "Performance").
# usage: bench/side_by_side.sh [rounds=2]   (after deploy/demo.sh and bench/serving.sh)
# env: A_BUILD / B_BUILD (build; another build directory, or one holding server/recall-server
#      with client/ and bench/ linked to build's), A_FLAGS / B_FLAGS (none),
#      RATES (1700,3400,5100), WRITE_RATE (3400), FLOOR (1: run grpc_floor.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-2}
RATES=${RATES:-1700,3400,5100}
WRITE_RATE=${WRITE_RATE:-3400}
bash deploy/build.sh recall-server recall-bench bench-requests recall-inprocess-bench >/dev/null
for round in $(seq 1 "$ROUNDS"); do
  for v in A B; do
    build_var=${v}_BUILD flags_var=${v}_FLAGS
    build=${!build_var:-build} flags=${!flags_var:-}
    echo "#### round $round, $v: BUILD_DIR=$build, flags: ${flags:-none}"
    if [ "${FLOOR:-1}" = 1 ]; then
      BUILD_DIR=$build SERVER_FLAGS="$flags" DURATION=6 CONCURRENCY=1,32 bash bench/grpc_floor.sh
    fi
    # shellcheck disable=SC2086
    SKIP_BUILD=1 BUILD_DIR=$build bash bench/cpu_per_recall.sh "$RATES" $flags
    SKIP_BUILD=1 BUILD_DIR=$build SERVER_FLAGS="$flags" bash bench/write_load.sh "$WRITE_RATE" 1 \
      | grep rep
  done
done
