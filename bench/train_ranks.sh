#!/usr/bin/env bash
# Data-parallel training throughput on one machine: 1 rank x 2 threads against 2 ranks x 1
# thread (recall-train --world_size=2 on loopback), the same global batch, side by side in one
# invocation; rounds alternate the two so drift on a shared machine hits both alike. Each
# side reports examples/s of the global batch after 5 warm-up steps; the 2-rank side also
# reports rank 0's share of the step spent inside collectives (the bucketed gradient
# all-reduce, the gathers of in-batch columns and queue keys).
#
# usage: bench/train_ranks.sh [rounds=3] [steps=40]
# env: DATA (LightGCN split dir; default ../shared/data/gowalla, else synthetic), BATCH (2048),
#      PRESET (default), EXTRA (more recall-train flags), OUT (bench/results/train_ranks.json)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
STEPS=${2:-40}
BATCH=${BATCH:-2048}
PRESET=${PRESET:-default}
OUT=${OUT:-bench/results/train_ranks.json}
BIN=${BUILD_DIR:-build}/trainer/recall-train
[ -x "$BIN" ] || bash deploy/build.sh recall-train
DATA=${DATA:-../shared/data/gowalla}
if [ -f "$DATA/train.txt" ]; then
  DATASET=lightgcn:$DATA
else
  echo "no Gowalla split; using the synthetic set"
  DATASET=synthetic
fi
# shellcheck disable=SC2206
COMMON=(--preset="$PRESET" --dataset="$DATASET" --batch_size="$BATCH" --benchmark_steps="$STEPS"
        --progress=none ${EXTRA:-})
echo "dataset=$DATASET preset=$PRESET batch=$BATCH steps=$STEPS rounds=$ROUNDS"
field() { sed -n "s/.*\"$1\": \([0-9.]*\).*/\1/p" | tail -1; }
one=(); two=(); share=()
for r in $(seq 1 "$ROUNDS"); do
  a=$("$BIN" "${COMMON[@]}" --threads=2 2>/dev/null | field examples_per_sec)
  port=$(( 20000 + RANDOM % 20000 ))
  "$BIN" "${COMMON[@]}" --threads=1 --world_size=2 --rank=1 --master_port=$port \
    --rank_host=127.0.0.1 >/dev/null 2>&1 &
  out=$("$BIN" "${COMMON[@]}" --threads=1 --world_size=2 --rank=0 --master_port=$port \
    --rank_host=127.0.0.1 2>/dev/null)
  wait
  b=$(echo "$out" | field examples_per_sec)
  s=$(echo "$out" | field collective_share)
  echo "round $r: 1 rank x 2 threads $a ex/s | 2 ranks x 1 thread $b ex/s (collectives $s of rank 0's step)"
  one+=("$a"); two+=("$b"); share+=("$s")
done
/usr/bin/python3 - "$OUT" "$DATASET" "$BATCH" "$STEPS" "${one[*]}" "${two[*]}" "${share[*]}" <<'PY'
import json, statistics, sys
out, dataset, batch, steps = sys.argv[1:5]
one, two, share = ([float(x) for x in a.split()] for a in sys.argv[5:8])
res = {
    "dataset": dataset, "global_batch": int(batch), "steps": int(steps), "rounds": len(one),
    "one_rank_two_threads_ex_per_s": one, "two_ranks_one_thread_ex_per_s": two,
    "collective_share_rank0": share,
    "median_one_rank": statistics.median(one), "median_two_ranks": statistics.median(two),
    "median_ratio_two_over_one": statistics.median(b / a for a, b in zip(one, two)),
    "median_collective_share": statistics.median(share),
}
json.dump(res, open(out, "w"), indent=1)
print(json.dumps({k: v for k, v in res.items() if k.startswith("median")}))
PY
