#!/usr/bin/env bash
# Where one server core's time goes per Recall at a given offered load: one recall-server on
# serving.sh's version (pinned to SERVER_CPUS), an open loop per rate from recall-bench (on
# BENCH_CPUS), and for each window the server's CPU (/proc/PID/stat) and its own metrics
# (recall_batch_size, recall_stage_duration_seconds), and its threads' context switches
# (/proc/PID/task/*/status). Per Recall: CPU = encode + tower + search
# + rest, where rest is everything outside the engine (gRPC, HTTP/2, protobuf, the batcher's
# hand-offs). The stages are wall time per batch: once the core saturates they include time the
# batch waited for the core, so read the split at loads below saturation.
#
# usage: bench/cpu_per_recall.sh [rates=1700,3400] [recall-server flags...]   (after
#        bench/serving.sh, whose WORK directory holds the version and requests.bin)
# env: WORK (run/bench_serving), SERVER_CPUS (0), BENCH_CPUS (1), DURATION (10), WARMUP (2)
# output: two lines per rate on stdout
set -euo pipefail
cd "$(dirname "$0")/.."
RATES=${1:-1700,3400}
[ $# -eq 0 ] || shift
WORK=${WORK:-run/bench_serving}
SERVER_CPUS=${SERVER_CPUS:-0}
BENCH_CPUS=${BENCH_CPUS:-1}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
B=${BUILD_DIR:-build}
source bench/server_lib.sh
serving_version
[ -n "${SKIP_BUILD:-}" ] || bash deploy/build.sh recall-server recall-bench >/dev/null
start_server "$WORK/cpu_per_recall_server.log" "$B/server/recall-server" --model_base="$MODELS" \
  --port=0 --metrics_port=0 --port_file="$WORK/ports" --poll_interval_s=0 \
  --wal_path="$WORK/wal_cpu_per_recall" --max_k=1000 --recall_probe_interval_s=0 "$@"
METRICS_PORT=$(cut -d' ' -f2 "$WORK/ports")
scrape() { curl -s "http://127.0.0.1:$METRICS_PORT/metrics" >"$1"; }
for rate in ${RATES//,/ }; do
  scrape "$WORK/metrics_before"; c0=$(server_cpu_ticks); s0=$(server_switches); t0=$(date +%s.%N)
  line=$(taskset -c "$BENCH_CPUS" "$B/client/recall-bench" --requests_file="$WORK/requests.bin" \
    --duration_s="$DURATION" --warmup_s="$WARMUP" --mode=open --rate="$rate" --recall_queries=0 \
    --addr="127.0.0.1:$PORT" 2>&1 | grep -E "open rate" | sed 's/  */ /g')
  c1=$(server_cpu_ticks); s1=$(server_switches); t1=$(date +%s.%N); scrape "$WORK/metrics_after"
  # A metric's growth over the window.
  grown() {
    awk -v k="$1" '$1 == k {if (FNR == NR) a = $2; else b = $2} END {print b - a}' \
      "$WORK/metrics_before" "$WORK/metrics_after"
  }
  awk -v n="$(grown recall_batch_size_sum)" -v batches="$(grown recall_batch_size_count)" \
    -v e="$(grown 'recall_stage_duration_seconds_sum{stage="encode"}')" \
    -v tw="$(grown 'recall_stage_duration_seconds_sum{stage="tower"}')" \
    -v s="$(grown 'recall_stage_duration_seconds_sum{stage="search"}')" \
    -v cpu="$(( c1 - c0 ))" -v sw="$(( s1 - s0 ))" -v t0="$t0" -v t1="$t1" -v rate="$rate" 'BEGIN {
      cpu /= 100
      printf "rate %d: server core %.0f%%, %d batches of %.2f on average, %.1f context switches per Recall; per Recall: CPU %.0f us = encode %.0f + tower %.0f + search %.0f + rest %.0f us\n",
        rate, cpu / (t1 - t0) * 100, batches, n / batches, sw / n, cpu / n * 1e6, e / n * 1e6,
        tw / n * 1e6, s / n * 1e6, (cpu - e - tw - s) / n * 1e6 }'
  echo "  $line"
done
rm -f "$WORK/wal_cpu_per_recall" "$WORK/metrics_before" "$WORK/metrics_after"
