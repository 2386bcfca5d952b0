#!/usr/bin/env bash
# What online writes cost Recall latency on one server core, side by side: for each offered
# Recall rate, a fresh recall-server on serving.sh's version, then an open loop without writes
# and the same open loop with the write load of serving.sh (UPSERT_RATE writes/s, batches of 50
# raw vectors, REPLACE_FRACTION replacements, DELETE_FRACTION deletes), REPS times. Also the
# server's CPU share (/proc/PID/stat) in each window, so the cost of the writes alone shows.
#
# usage: bench/write_load.sh [rates=1700,3400] [reps=2]   (after bench/serving.sh, whose WORK
#        directory holds the version, requests.bin and topk.bin)
# env: WORK (run/bench_serving), SERVER_CPUS (0), BENCH_CPUS (1), DURATION (10), WARMUP (2),
#      UPSERT_RATE (5000), REPLACE_FRACTION (0.2), DELETE_FRACTION (0.1), WAL_SYNC (always),
#      SERVER_FLAGS (more recall-server flags, e.g. "--batch_max_wait_us=300", for side-by-side
#      runs of an option)
# output: one line per window on stdout
set -euo pipefail
cd "$(dirname "$0")/.."
RATES=${1:-1700,3400}
REPS=${2:-2}
WORK=${WORK:-run/bench_serving}
SERVER_CPUS=${SERVER_CPUS:-0}
BENCH_CPUS=${BENCH_CPUS:-1}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
UPSERT_RATE=${UPSERT_RATE:-5000}
REPLACE_FRACTION=${REPLACE_FRACTION:-0.2}
DELETE_FRACTION=${DELETE_FRACTION:-0.1}
WAL_SYNC=${WAL_SYNC:-always}
B=${BUILD_DIR:-build}
source bench/server_lib.sh
serving_version
[ -n "${SKIP_BUILD:-}" ] || bash deploy/build.sh recall-server recall-bench >/dev/null

echo "server on cpus $SERVER_CPUS, load on cpus $BENCH_CPUS; writes: $UPSERT_RATE/s, WAL sync $WAL_SYNC"
for rep in $(seq 1 "$REPS"); do
  for rate in ${RATES//,/ }; do
    rm -f "$WORK/wal_write_load"
    start_server "$WORK/write_load_server.log" "$B/server/recall-server" --model_base="$MODELS" \
      --port=0 --metrics_port=-1 --port_file="$WORK/ports" --poll_interval_s=0 \
      --wal_path="$WORK/wal_write_load" --wal_sync="$WAL_SYNC" --max_k=1000 ${SERVER_FLAGS:-}
    for writes in 0 "$UPSERT_RATE"; do
      t0=$(date +%s.%N); c0=$(server_cpu_ticks)
      line=$(taskset -c "$BENCH_CPUS" "$B/client/recall-bench" --requests_file="$WORK/requests.bin" \
        --topk_file="$WORK/topk.bin" --duration_s="$DURATION" --warmup_s="$WARMUP" --mode=open \
        --rate="$rate" --recall_queries=0 --addr="127.0.0.1:$PORT" --upsert_rate="$writes" \
        --upsert_replace_fraction="$REPLACE_FRACTION" --delete_fraction="$DELETE_FRACTION" 2>&1 |
        grep -E "open rate" | sed 's/  */ /g')
      c1=$(server_cpu_ticks); t1=$(date +%s.%N)
      share=$(awk -v a="$c0" -v b="$c1" -v s="$t0" -v e="$t1" \
        'BEGIN {printf "%.0f", (b - a) / 100 / (e - s) * 100}')
      echo "rep $rep rate $rate writes/s $writes: server cpu ${share}% |$line"
    done
    stop_server
  done
done
rm -f "$WORK/wal_write_load"
