#!/usr/bin/env bash
# Training throughput: recall-train vs the PyTorch (Python) script of the same model, batch,
# loss and thread count (bench/baselines/train_pytorch.py), side by side in one invocation.
# The Python peer runs twice per round: with its default allocator (glibc malloc) and with the
# trainer's (tcmalloc, LD_PRELOAD); the ratio is taken against the faster of the two.
# Rounds alternate the three so drift on a shared machine hits all alike; medians are reported.
#
# usage: bench/train_throughput.sh [rounds=3] [steps=60]
# env: DATA (LightGCN split dir; default ../shared/data/gowalla, else an exported synthetic set),
#      BATCH (2048), QUEUE (8192), HISTORY (50), THREADS (2), OUT (bench/results/train_throughput.json)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
STEPS=${2:-60}
BATCH=${BATCH:-2048}
QUEUE=${QUEUE:-8192}
HISTORY=${HISTORY:-50}
THREADS=${THREADS:-2}
OUT=${OUT:-bench/results/train_throughput.json}
BIN=${BUILD_DIR:-build}/trainer/recall-train
PY=/usr/bin/python3
[ -x "$BIN" ] || bash deploy/build.sh recall-train
DATA=${DATA:-../shared/data/gowalla}
if [ ! -f "$DATA/train.txt" ]; then
  DATA=$(mktemp -d)/synthetic
  echo "no Gowalla split; exporting a synthetic dataset to $DATA"
  "$BIN" --dataset=synthetic --synthetic_users=30000 --synthetic_items=40000 --epochs=0 \
    --export_dataset="$DATA" --progress=none >/dev/null 2>&1
fi
TCMALLOC=$(ldconfig -p | awk '/libtcmalloc_minimal.so.4 /{p = $NF} END {print p}')
COMMON=(--batch_size="$BATCH" --history_length="$HISTORY" --temperature=0.1 --lr=2e-3
        --queue_size="$QUEUE" --momentum=0.99 --logq)
# recall-train starts from the smoke preset (the plain method: no history dropout, validation
# or offset), so both sides train the same model; the Python peer reads COMMON only.
CPP_BASE=(--preset=smoke)
echo "data=$DATA batch=$BATCH queue=$QUEUE history=$HISTORY threads=$THREADS steps=$STEPS rounds=$ROUNDS"
echo "blas: $(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3)"
rate() { sed -n 's/.*"examples_per_sec": \([0-9.]*\).*/\1/p' | tail -1; }
cpp=(); py_glibc=(); py_tc=()
for r in $(seq 1 "$ROUNDS"); do
  c=$("$BIN" "${CPP_BASE[@]}" --dataset=lightgcn:"$DATA" "${COMMON[@]}" --threads="$THREADS" \
        --benchmark_steps="$STEPS" --progress=none 2>/dev/null | rate)
  g=$(env -u LD_PRELOAD "$PY" bench/baselines/train_pytorch.py --data="$DATA" "${COMMON[@]}" \
        --threads="$THREADS" --steps="$STEPS" | rate)
  t=$(LD_PRELOAD="$TCMALLOC" "$PY" bench/baselines/train_pytorch.py --data="$DATA" "${COMMON[@]}" \
        --threads="$THREADS" --steps="$STEPS" | rate)
  echo "round $r: recall-train $c ex/s | pytorch (glibc malloc) $g ex/s | pytorch (tcmalloc) $t ex/s"
  cpp+=("$c"); py_glibc+=("$g"); py_tc+=("$t")
done
mkdir -p "$(dirname "$OUT")"
"$PY" - "$OUT" "${cpp[*]}" "${py_glibc[*]}" "${py_tc[*]}" <<'PYEOF'
import json, statistics, sys
out, cpp, g, t = sys.argv[1], *[list(map(float, a.split())) for a in sys.argv[2:]]
m = {"recall_train": statistics.median(cpp), "pytorch_glibc": statistics.median(g),
     "pytorch_tcmalloc": statistics.median(t)}
best_py = max(m["pytorch_glibc"], m["pytorch_tcmalloc"])
res = {"median_examples_per_sec": m, "runs": {"recall_train": cpp, "pytorch_glibc": g,
       "pytorch_tcmalloc": t}, "ratio_vs_faster_pytorch": m["recall_train"] / best_py}
json.dump(res, open(out, "w"), indent=2)
print(f"median ex/s: recall-train {m['recall_train']:.0f}, pytorch glibc {m['pytorch_glibc']:.0f}, "
      f"pytorch tcmalloc {m['pytorch_tcmalloc']:.0f}; ratio vs faster pytorch "
      f"{res['ratio_vs_faster_pytorch']:.2f}x  -> {out}")
PYEOF
