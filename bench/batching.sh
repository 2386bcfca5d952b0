#!/usr/bin/env bash
# Does request batching pay, and for which index kinds? (issue 5, done-when 4)
#
# In-process (RecallEngine and RecallBatcher, no network: what batching itself changes), all
# pinned to SERVER_CPUS, closed loop at concurrency 1 and 32, on the serving benchmark's
# 1M-item version (bench/serving.sh builds it) and on a copy whose index is exact search over
# the same vectors (bench/flat_version.py):
#   the version's index (the tuner's pick, its own search parameters; EF > 0 sets an HNSW
#   efSearch instead): batching off | on, max wait 0 (the default) | on, max wait 200 us
#   (the runs keep their historical names hnsw-*)
#   Flat:                   batching off | on, max wait 0
# usage: bench/batching.sh [rounds=3]
# env: MODELS (default: the newest run/bench_serving/models-*), EF (0), SERVER_CPUS (0),
#      DURATION (5 s per point), WORK (run/bench_batching), OUT_DIR (bench/results)
# output: $OUT_DIR/batching.json, batching.md
# Requests: bench-requests writes the pool once ($WORK/requests.bin: 4,000 requests of the
# version's dataset users, k 100; client/bench_files.h) and every configuration reads it. No
# exact top-K file: these runs measure throughput only (no recall check), and the Flat copy
# answers exactly anyway.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
EF=${EF:-0}
SERVER_CPUS=${SERVER_CPUS:-0}
DURATION=${DURATION:-5}
WORK=${WORK:-run/bench_batching}
OUT_DIR=${OUT_DIR:-bench/results}
B=${BUILD_DIR:-build}
MODELS=${MODELS:-$(ls -dt run/bench_serving/models-* 2>/dev/null | head -1)}
[ -n "$MODELS" ] && [ -f "$MODELS/1/MANIFEST.json" ] ||
  { echo "no serving version: run bench/serving.sh first or set MODELS"; exit 1; }
[ -n "${SKIP_BUILD:-}" ] || bash deploy/build.sh bench-requests recall-inprocess-bench >/dev/null
mkdir -p "$WORK" "$OUT_DIR"
FLAT="$WORK/flat-$(basename "$MODELS")"
if [ ! -f "$FLAT/1/MANIFEST.json" ]; then
  echo "== exact-search copy of $MODELS/1 -> $FLAT/1"
  /usr/bin/python3 bench/flat_version.py "$MODELS/1" "$FLAT/1"
fi
echo "batching benchmark: $MODELS, cpus $SERVER_CPUS, rounds $ROUNDS"
REQUESTS="$WORK/requests.bin"
"$B/bench/bench-requests" --model_base="$MODELS" --users_from="$MODELS/dataset" --k=100 \
  --requests=4000 --requests_file="$REQUESTS" 2>"$WORK/bench_requests.log" ||
  { echo "bench-requests failed; see $WORK/bench_requests.log"; exit 1; }

# run NAME MODEL_BASE EF BATCHING WAIT_US ROUND
run() {
  taskset -c "$SERVER_CPUS" "$B/bench/recall-inprocess-bench" --mode=closed \
    --concurrency=1,32 --model_base="$2" --requests_file="$REQUESTS" \
    --ef_search="$3" --batching="$4" --batch_max_wait_us="$5" --duration_s="$DURATION" \
    --warmup_s=1 --recall_queries=0 --json_out="$WORK/$1-r$6.json" >/dev/null
}
for r in $(seq 1 "$ROUNDS"); do
  echo "== round $r"
  run hnsw-off "$MODELS" "$EF" false 0 "$r"
  run hnsw-on-wait0 "$MODELS" "$EF" true 0 "$r"
  run hnsw-on-wait200 "$MODELS" "$EF" true 200 "$r"
  run flat-off "$FLAT" 0 false 0 "$r"
  run flat-on-wait0 "$FLAT" 0 true 0 "$r"
done
INDEX=$(/usr/bin/python3 -c 'import json, sys; m = json.load(open(sys.argv[1])); print(m["index_factory"], ",".join(f"{k}={v:g}" for k, v in sorted(m.get("index_search_params", {}).items())))' "$MODELS/1/MANIFEST.json")
/usr/bin/python3 bench/batching_report.py --work="$WORK" --rounds="$ROUNDS" --out_dir="$OUT_DIR" \
  --ef_search="$EF" --index="$INDEX" --cpus="$SERVER_CPUS"
