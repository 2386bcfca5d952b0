#!/usr/bin/env bash
# Smoke version of bench/train_ranks.sh for CI: one round of a few steps on the synthetic set;
# both sides must report a positive examples/s and the 2-rank side a collective share in (0, 1].
# (The real comparison is the bench command; CI only proves the driver runs.)
set -euo pipefail
SRC=$1
BUILD=$2
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
cd "$SRC"
BUILD_DIR=$BUILD DATA=/nonexistent PRESET=smoke BATCH=128 OUT=$OUT bash bench/train_ranks.sh 1 3
/usr/bin/python3 - "$OUT" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["median_one_rank"] > 0 and r["median_two_ranks"] > 0, r
assert 0 < r["median_collective_share"] <= 1, r
PY
