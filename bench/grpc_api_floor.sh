#!/usr/bin/env bash
# gRPC's own cost per unary Recall by server API, side by side (bench/grpc_api_floor.cc): a
# server that answers a canned 100-item response with no engine behind it, under the callback
# API (recall-server's today), the completion-queue API, and the completion-queue Recall beside
# callback methods ("mixed"). Server pinned to SERVER_CPUS under SCHED_BATCH (what
# recall-server's --cpu_sched=auto picks there), recall-bench on BENCH_CPUS. For each API and
# round: closed loop at CONCURRENCY (1/QPS at the peak is the server core's time per call), then
# an open loop at each of RATES with the server's CPU and context switches per call.
# usage: bench/grpc_api_floor.sh [rounds=2]   env: APIS (callback,async,mixed), RATES
#        (1700,3400), CONCURRENCY (1,4,16,32), DURATION (6), SERVER_CPUS (0), BENCH_CPUS (1)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-2}
APIS=${APIS:-callback,async,mixed}
RATES=${RATES:-1700,3400}
CONCURRENCY=${CONCURRENCY:-1,4,16,32}
DURATION=${DURATION:-6}
SERVER_CPUS=${SERVER_CPUS:-0}
BENCH_CPUS=${BENCH_CPUS:-1}
WORK=${WORK:-run/grpc_api_floor}
B=${BUILD_DIR:-build}
[ -n "${SKIP_BUILD:-}" ] || bash deploy/build.sh grpc-api-floor recall-bench bench-requests >/dev/null
mkdir -p "$WORK"
REQUESTS=${REQUESTS:-run/grpc_floor/requests.bin}
[ -s "$REQUESTS" ] || { echo "no $REQUESTS (run bench/grpc_floor.sh once)"; exit 1; }
source bench/server_lib.sh
for round in $(seq 1 "$ROUNDS"); do
  for api in ${APIS//,/ }; do
    start_server "$WORK/server_$api.log" chrt -b 0 "$B/bench/grpc-api-floor" --api="$api" \
      --port_file="$WORK/ports"
    echo "== round $round, --api=$api"
    taskset -c "$BENCH_CPUS" "$B/client/recall-bench" --requests_file="$REQUESTS" \
      --target=grpc --addr="127.0.0.1:$PORT" --mode=closed --concurrency="$CONCURRENCY" \
      --duration_s="$DURATION" --warmup_s=1 --recall_queries=0 2>&1 | grep "closed c" || true
    for rate in ${RATES//,/ }; do
      c0=$(server_cpu_ticks); s0=$(server_switches); t0=$(date +%s.%N)
      line=$(taskset -c "$BENCH_CPUS" "$B/client/recall-bench" --requests_file="$REQUESTS" \
        --target=grpc --addr="127.0.0.1:$PORT" --mode=open --rate="$rate" \
        --duration_s="$DURATION" --warmup_s=0 --recall_queries=0 2>&1 | grep "open rate" \
        | sed 's/  */ /g')
      c1=$(server_cpu_ticks); s1=$(server_switches); t1=$(date +%s.%N)
      awk -v c="$(( c1 - c0 ))" -v s="$(( s1 - s0 ))" -v t="$t0" -v u="$t1" -v r="$rate" 'BEGIN {
        n = r * (u - t); printf "  open %d/s: server core %.0f%%, %.0f us CPU and %.1f switches per call\n",
          r, c / (u - t), c / 100 / n * 1e6, s / n }'
      echo "   $line"
    done
    stop_server
  done
done
