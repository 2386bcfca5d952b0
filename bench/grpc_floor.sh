#!/usr/bin/env bash
# What recall-server costs per Recall beyond the engine: a small version (default: the demo's
# 1,000-item Flat version, `bash deploy/demo.sh`), where the tower and the search are nearly
# free, served by recall-server (gRPC) and by the in-process engine, each pinned to SERVER_CPUS,
# the load generator on BENCH_CPUS; closed loop at CONCURRENCY, k = 100, 20-50 history items.
# 1/QPS at each one's maximum is the CPU per Recall on that core; the difference is gRPC,
# HTTP/2 over loopback TCP and the hand-off to the batch worker (README "Performance"). The
# server is measured twice: unary Recall, and RecallStream (one stream per virtual user, one
# request in flight on each), where a request is a message on an open call.
# usage: bench/grpc_floor.sh   env: MODEL_BASE (run/demo/models), SERVER_CPUS (0),
#        BENCH_CPUS (1), CONCURRENCY (1,4,16,32), DURATION (8), WORK (run/grpc_floor),
#        SERVER_FLAGS (more recall-server flags, for side-by-side runs of an option)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL_BASE=${MODEL_BASE:-run/demo/models}
SERVER_CPUS=${SERVER_CPUS:-0}
BENCH_CPUS=${BENCH_CPUS:-1}
CONCURRENCY=${CONCURRENCY:-1,4,16,32}
DURATION=${DURATION:-8}
WORK=${WORK:-run/grpc_floor}
B=${BUILD_DIR:-build}
[ -f "$MODEL_BASE/1/MANIFEST.json" ] || { echo "no version at $MODEL_BASE/1 (run deploy/demo.sh)"; exit 1; }
rm -rf "$WORK"; mkdir -p "$WORK"; cp -r "$MODEL_BASE/1" "$WORK/1"
"$B/bench/bench-requests" --model_base="$WORK" --k=100 --requests=4000 --topk_queries=0 \
  --requests_file="$WORK/requests.bin" 2>"$WORK/bench_requests.log"
source bench/server_lib.sh
start_server "$WORK/server.log" "$B/server/recall-server" --model_base="$WORK" --port=0 \
  --metrics_port=-1 --port_file="$WORK/ports" --poll_interval_s=0 --wal_path="$WORK/wal" \
  --recall_probe_interval_s=0 ${SERVER_FLAGS:-}
for target in "grpc:unary Recall" "stream:RecallStream"; do
  echo "== recall-server (${target#*:}), $MODEL_BASE version 1"
  taskset -c "$BENCH_CPUS" "$B/client/recall-bench" --requests_file="$WORK/requests.bin" \
    --target="${target%%:*}" --addr="127.0.0.1:$PORT" --mode=closed \
    --concurrency="$CONCURRENCY" --duration_s="$DURATION" --warmup_s=1 --recall_queries=0 \
    2>&1 | grep "closed c"
done
stop_server
echo "== in-process engine"
taskset -c "$SERVER_CPUS" "$B/bench/recall-inprocess-bench" --model_base="$WORK" \
  --requests_file="$WORK/requests.bin" --mode=closed --concurrency="$CONCURRENCY" \
  --duration_s="$DURATION" --warmup_s=1 --recall_queries=0 2>&1 | grep "closed c"
