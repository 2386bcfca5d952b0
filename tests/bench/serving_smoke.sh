#!/usr/bin/env bash
# Smoke version of bench/serving.sh for CI: a 3,000-item version, one round of 1-second points;
# bench-requests writes the requests and exact answers once, recall-bench (gRPC against
# recall-server and the Python peer) and recall-inprocess-bench read them; every target must
# answer with real figures (the real run is the bench command, README "Performance"). Needs the
# built binaries in BUILD_DIR.
set -euo pipefail
SRC=$1
export BUILD_DIR=$2
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cd "$SRC"
BENCH_CPUS=0
[ "$(nproc)" -gt 1 ] && BENCH_CPUS=1
SKIP_BUILD=1 ITEMS=3000 USERS=500 DURATION=1 WARMUP=0.3 CONCURRENCY=1,4,32 K=20 PY_WORKERS=2 \
  UPSERT_RATE=500 SERVER_CPUS=0 BENCH_CPUS=$BENCH_CPUS WORK="$TMP/run" OUT_DIR="$TMP/out" \
  bash bench/serving.sh 1
# bench-requests wrote the request pool and the exact answers every target read.
test -s "$TMP/run/requests.bin"
test -s "$TMP/run/topk.bin"
/usr/bin/python3 - "$TMP/out/serving.json" "$TMP/run/round1/upserts.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
# The write mix under load: upserts (some replacing served items) and deletes, all acknowledged.
w = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
for key in ("writes_per_sec", "upserts_per_sec", "upserted_items", "replaced_items", "deleted_ids"):
    assert w[key] > 0, (key, w)
assert w["upsert_failed_calls"] == 0 and w["delete_failed_calls"] == 0, w
assert w["deleted_present"] == w["deleted_ids"], w
for name in ("server", "inprocess", "python"):
    t = s["targets"][name]
    assert t["max_qps"] and t["max_qps"] > 0, (name, t)
    assert t["recall_at_k"] and t["recall_at_k"] > 0.5, (name, t)
    assert t["p99_ms@0.5"] and t["p99_ms@0.5"] > 0, (name, t)
# The Python peer encodes requests by its own code (hashed id rows here): it must find what the
# server finds.
r_server, r_python = s["targets"]["server"]["recall_at_k"], s["targets"]["python"]["recall_at_k"]
assert abs(r_server - r_python) < 0.02, (r_server, r_python)
for key in ("stream_max_qps", "unbatched_qps_c32", "batched_qps_c32", "upserts_per_sec",
            "writes_per_sec", "server_rss_without_version_bytes", "version_rss_bytes",
            "version_rss_over_bound"):
    assert s[key] and s[key] > 0, (key, s[key])
# The bound: the index file (at least 3,000 x 64 floats), the towers and 64 B per item.
assert s["memory_bound_bytes"] == s["index_file_bytes"] + s["tower_bytes"] + 64 * 3000, s
assert s["index_file_bytes"] >= 3000 * 64 * 4, s["index_file_bytes"]
# The index is the export tuner's pick, and the frontier was reported.
assert s["index"] and "items" not in s["index"], s["index"]
print("serving smoke ok")
PY
test -s "$TMP/out/serving.md"
test -s "$TMP/out/serving_frontier.md"
grep -q "← pick" "$TMP/out/serving_frontier.md"

# bench/batching.sh on the same version: every configuration answers the pool bench-requests
# wrote.
MODELS=$(ls -d "$TMP"/run/models-*) SKIP_BUILD=1 DURATION=1 SERVER_CPUS=0 WORK="$TMP/batching" \
  OUT_DIR="$TMP/out" bash bench/batching.sh 1
test -s "$TMP/batching/requests.bin"
/usr/bin/python3 - "$TMP/out/batching.json" <<'PY'
import json, sys
b = json.load(open(sys.argv[1]))
for name, row in b["rows"].items():
    for key in ("c1_qps", "c32_qps"):
        assert row[key] and row[key] > 0, (name, key, row)
assert set(b["batching_on_off_qps_at_c32"]) == {"hnsw", "flat"}, b
print("batching smoke ok")
PY

# bench/write_load.sh on the same version: a window without and one with writes, each with the
# server's CPU share and answered Recalls.
out=$(SKIP_BUILD=1 DURATION=1 WARMUP=0.3 UPSERT_RATE=500 SERVER_CPUS=0 BENCH_CPUS=$BENCH_CPUS \
  WORK="$TMP/run" bash bench/write_load.sh 100 1)
echo "$out"
test "$(echo "$out" | grep -cE 'server cpu [0-9]+% \| open rate= 100.0 qps= [1-9]')" -eq 2
echo "$out" | grep -q "writes/s 500: server cpu"
echo "write_load smoke ok"

# bench/cpu_per_recall.sh on the same version: one window, its CPU split into the engine's stages
# and the rest, its context switches, and the answered Recalls.
out=$(SKIP_BUILD=1 DURATION=1 WARMUP=0.3 SERVER_CPUS=0 BENCH_CPUS=$BENCH_CPUS \
  WORK="$TMP/run" bash bench/cpu_per_recall.sh 100)
echo "$out"
echo "$out" | grep -qE '^rate 100: server core [0-9]+%, [1-9][0-9]* batches of [0-9.]+ on average, [0-9.]+ context switches per Recall; per Recall: CPU [0-9]+ us = encode [0-9]+ \+ tower [0-9]+ \+ search [0-9]+ \+ rest -?[0-9]+ us$'
echo "$out" | grep -qE 'open rate= 100.0 qps= [1-9]'
echo "cpu_per_recall smoke ok"
