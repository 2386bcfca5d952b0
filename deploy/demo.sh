#!/usr/bin/env bash
# The README's main command: installs dependencies, builds, trains on the embedded synthetic
# dataset, publishes version 1, starts recall-server on loopback, sends Recall requests through
# recall-cli, shows an online upsert/delete and the metrics, then shuts the server down.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${BUILD_DIR:-build}
WORK=${DEMO_DIR:-$ROOT/run/demo}

bash deploy/install-deps.sh
bash deploy/build.sh recall-train recall-server recall-cli

BIN=$ROOT/$BUILD
rm -rf "$WORK"
mkdir -p "$WORK"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. Train on the synthetic dataset (users prefer one of 10 item categories) and publish version 1"
"$BIN/trainer/recall-train" --preset=smoke --dataset=synthetic --model_base="$WORK/models" \
  --export_dataset="$WORK/data" --epochs=${DEMO_EPOCHS:-10} --batch_size=256 \
  --temperature=0.3 --progress=${DEMO_PROGRESS:-auto}
ls -l "$WORK/models/1"

step "2. Start recall-server on loopback"
"$BIN/server/recall-server" --model_base="$WORK/models" --host=127.0.0.1 --port=0 \
  --metrics_port=0 --port_file="$WORK/ports" > "$WORK/server.log" 2>&1 &
SERVER=$!
cleanup() { kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 1 300); do [ -s "$WORK/ports" ] && break; sleep 0.1; done
read -r GRPC_PORT METRICS_PORT < "$WORK/ports"
ADDR=127.0.0.1:$GRPC_PORT
CLI=("$BIN/client/recall-cli")
"${CLI[@]}" health --addr="$ADDR" --wait_for_ready --timeout_ms=30000
"${CLI[@]}" index-info --addr="$ADDR"

step "3. Recall for three users: the results follow each user's category"
# A user's history is their train items (train.txt: "<user> <item> <item> ..."); region is a
# user feature from users.tsv.
for USER in 0 1 2; do
  HISTORY=$(awk -v u="$USER" '$1 == u { $1 = ""; sub(/^ /, ""); gsub(/ /, ","); print; exit }' "$WORK/data/train.txt")
  REGION=$(awk -F'\t' -v u="$USER" 'NR > 1 && $1 == u { print $2; exit }' "$WORK/data/users.tsv")
  echo "-- user $USER (region $REGION)"
  "${CLI[@]}" recall --addr="$ADDR" --user_id="$USER" --history="$HISTORY" --cat="region:$REGION" \
    --k=10 --exclude_history --item_features="$WORK/data/items.tsv"
done

step "4. The same requests on one bidirectional stream"
"${CLI[@]}" stream --addr="$ADDR" --user_id=3 --k=5 --repeat=3

step "5. Online writes: upsert a new item of category c0, then delete it"
"${CLI[@]}" upsert --addr="$ADDR" --item_id=100000 --cat=category:c0
"${CLI[@]}" index-info --addr="$ADDR"
"${CLI[@]}" delete --addr="$ADDR" --ids=100000

step "6. Metrics (Prometheus text format) at http://127.0.0.1:$METRICS_PORT/metrics"
curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | grep -E '^recall_(requests_total|serving_model_version|index_items)' || true

step "7. Stop the server (SIGTERM drains in-flight calls)"
cleanup
trap - EXIT
echo "server log: $WORK/server.log"
echo "done."
