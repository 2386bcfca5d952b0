#!/usr/bin/env bash
# Gowalla ablation: trains each variant of the contrastive loss on the same split with the same
# base flags and writes a table of exact full-ranking figures (plus Recall@20 through the HNSW
# index) to bench/results/ablation.{md,json}.
#
# usage: bench/ablation.sh [variant ...]   (default: all; names in VARIANTS below)
#        bench/ablation.sh --table        (rebuild the table from bench/results/ablation/)
# env: DATA (../shared/data/gowalla), EPOCHS (max epochs per variant, default 40: each stops
#      early on validation; the first rows ran with 12, which only logq_queue reached),
#      BASE (extra flags appended to every run), OUT_DIR (bench/results)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/gowalla}
EPOCHS=${EPOCHS:-40}
OUT_DIR=${OUT_DIR:-bench/results}
BIN=${BUILD_DIR:-build}/trainer/recall-train
if [ ! -f "$DATA/train.txt" ]; then
  echo "ablation: the Gowalla split is not at $DATA (it lives in ../shared/data/gowalla); nothing to do"
  exit 0
fi
[ -x "$BIN" ] || bash deploy/build.sh recall-train
# Base: plain in-batch InfoNCE (the smoke preset's plain method, no logQ); every variant adds to
# it (TRAINING.md explains each option).
BASE_FLAGS=(--preset=smoke --index_factory=HNSW32 --dataset=lightgcn:"$DATA" --batch_size=2048 --lr=2e-3 --history_length=100
            --validation_users=5000 --patience=2 --epochs="$EPOCHS" --progress=none ${BASE:-})
declare -A VARIANTS=(
  [inbatch]="--temperature=0.1"
  [logq]="--temperature=0.1 --logq"
  [logq_queue]="--temperature=0.1 --logq --queue_size=8192 --momentum=0.99"
  [logq_mixed]="--temperature=0.1 --logq --global_negatives=2048"
  [logq_tau0.05]="--temperature=0.05 --logq"
  [logq_tau0.2]="--temperature=0.2 --logq"
  [logq_no_l2]="--temperature=0.1 --logq --nol2_normalize"
  [logq_item_ssl]="--temperature=0.1 --logq --item_ssl_weight=0.1"
  [logq_user_ssl]="--temperature=0.1 --logq --user_ssl_weight=0.1"
  [logq_hd0.5]="--temperature=0.1 --logq --history_dropout=0.5"
  [logq_hd0.75]="--temperature=0.1 --logq --history_dropout=0.75"
  [logq_hd0.5_user_ssl]="--temperature=0.1 --logq --history_dropout=0.5 --user_ssl_weight=0.3"
  [logq_hd0.5_item_ssl]="--temperature=0.1 --logq --history_dropout=0.5 --item_ssl_weight=0.1"
  [logq_hd0.5_item_ssl0.3]="--temperature=0.1 --logq --history_dropout=0.5 --item_ssl_weight=0.3"
)
ALL=(inbatch logq logq_queue logq_mixed logq_tau0.05 logq_tau0.2 logq_no_l2 logq_item_ssl logq_user_ssl
     logq_hd0.5 logq_hd0.75 logq_hd0.5_user_ssl logq_hd0.5_item_ssl logq_hd0.5_item_ssl0.3)
ORDER=("${ALL[@]}")
[ $# -gt 0 ] && ORDER=("$@")
[ "${1:-}" = "--table" ] && ORDER=()  # only rebuild the table from the results so far
mkdir -p "$OUT_DIR/ablation"
for v in "${ORDER[@]}"; do
  [ -n "${VARIANTS[$v]+x}" ] || { echo "unknown variant $v"; exit 64; }
  out="$OUT_DIR/ablation/$v.json"
  echo "== $v: ${VARIANTS[$v]}"
  start=$(date +%s)
  # shellcheck disable=SC2086
  "$BIN" "${BASE_FLAGS[@]}" ${VARIANTS[$v]} --metrics_out="$out" 2>&1 | grep -E "^eval|wall" || true
  echo "{\"variant\": \"$v\", \"flags\": \"${VARIANTS[$v]}\", \"wall_sec\": $(( $(date +%s) - start ))}" > "$out.meta"
done
# The table lists every variant measured so far (runs of single variants accumulate).
/usr/bin/python3 - "$OUT_DIR" "${ALL[@]}" <<'PYEOF'
import json, os, sys
out_dir, order = sys.argv[1], sys.argv[2:]
rows = []
for v in order:
    p = os.path.join(out_dir, "ablation", v + ".json")
    if not os.path.exists(p):
        continue
    m, meta = json.load(open(p)), json.load(open(p + ".meta"))
    rows.append({**meta, **m})
json.dump(rows, open(os.path.join(out_dir, "ablation.json"), "w"), indent=2)
with open(os.path.join(out_dir, "ablation.md"), "w") as f:
    f.write("| variant | flags | best epoch | Recall@20 | NDCG@20 | Recall@50 | HNSW Recall@20 | wall s |\n")
    f.write("|---|---|---|---|---|---|---|---|\n")
    for r in rows:
        f.write(f"| {r['variant']} | `{r['flags']}` | {int(r.get('best_epoch', 0))} | "
                f"{r['recall@20']:.4f} | {r['ndcg@20']:.4f} | {r['recall@50']:.4f} | "
                f"{r.get('ann_recall@20', float('nan')):.4f} | {r['wall_sec']} |\n")
print(open(os.path.join(out_dir, "ablation.md")).read())
PYEOF
