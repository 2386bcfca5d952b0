#!/usr/bin/env bash
# Smoke version of bench/serving.sh for CI: a 3,000-item version, one round of 1-second points;
# every target must answer with real figures (the real run is the bench command, README
# "Performance"). Needs the built binaries in BUILD_DIR.
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
/usr/bin/python3 - "$TMP/out/serving.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
for name in ("server", "inprocess", "python"):
    t = s["targets"][name]
    assert t["max_qps"] and t["max_qps"] > 0, (name, t)
    assert t["recall_at_k"] and t["recall_at_k"] > 0.5, (name, t)
    assert t["p99_ms@0.5"] and t["p99_ms@0.5"] > 0, (name, t)
# The Python peer encodes requests by its own code (hashed id rows here): it must find what the
# server finds.
r_server, r_python = s["targets"]["server"]["recall_at_k"], s["targets"]["python"]["recall_at_k"]
assert abs(r_server - r_python) < 0.02, (r_server, r_python)
for key in ("stream_max_qps", "unbatched_qps_c32", "batched_qps_c32", "upserts_per_sec"):
    assert s[key] and s[key] > 0, (key, s[key])
print("serving smoke ok")
PY
test -s "$TMP/out/serving.md"
