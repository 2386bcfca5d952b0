#!/usr/bin/env bash
# Smoke version of bench/train_throughput.sh for CI: a small exported synthetic dataset, a few
# steps of recall-train --benchmark_steps and of the PyTorch peer; both must print a positive
# examples/s. (The real comparison is the bench command; CI only proves both sides run.)
set -euo pipefail
BIN=$1
SRC=$2
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$BIN" --dataset=synthetic --synthetic_users=300 --synthetic_items=200 --epochs=0 \
  --export_dataset="$WORK/data" --progress=none --preset=smoke >/dev/null 2>&1
FLAGS=(--batch_size=64 --history_length=10 --queue_size=128 --logq)
cpp=$("$BIN" --preset=smoke --dataset=lightgcn:"$WORK/data" "${FLAGS[@]}" --threads=1 --benchmark_steps=3 --progress=none 2>/dev/null)
echo "recall-train: $cpp"
if [ ! -x /usr/bin/python3 ] || ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
  echo "skipping the PyTorch peer: Debian's python3-torch is not installed"
else
  py=$(/usr/bin/python3 "$SRC/bench/baselines/train_pytorch.py" --data="$WORK/data" "${FLAGS[@]}" \
        --threads=1 --steps=3 --warmup_steps=1)
  echo "pytorch: $py"
  echo "$py" | grep -Eq '"examples_per_sec": [1-9]'
fi
echo "$cpp" | grep -Eq '"examples_per_sec": [1-9]'
