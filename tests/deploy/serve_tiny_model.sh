# shellcheck shell=bash
# Sourced by the tests in this folder (bash): trains a tiny synthetic model and starts
# recall-server on loopback with free ports. Needs TRAIN, SERVER, CLI (binaries) set; sets DIR
# (a fresh temp dir, removed on exit), ADDR, GRPC_PORT, METRICS_PORT, SERVER_PID, and installs
# an EXIT trap that runs every command in CLEANUP (last added first) and then removes DIR.

DIR=$(mktemp -d "${TMPDIR:-/tmp}/recall-deploy-test.XXXXXX")
CLEANUP=()
SERVER_PID=""
run_cleanup() {
  local rc=$?
  local i
  for ((i = ${#CLEANUP[@]} - 1; i >= 0; i--)); do eval "${CLEANUP[i]}" || true; done
  rm -rf "$DIR"
  exit "$rc"
}
trap run_cleanup EXIT
trap 'exit 143' TERM INT

# Stops a background process by pid: SIGTERM, then SIGKILL after 10 s.
stop_pid() {
  local pid=$1
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

echo "== train a tiny synthetic model into $DIR/models"
"$TRAIN" --preset=smoke --dataset=synthetic --synthetic_users=300 --synthetic_items=200 --epochs=1 \
  --model_base="$DIR/models" --progress=none --index_factory=Flat > "$DIR/train.log" 2>&1 || {
  cat "$DIR/train.log"
  echo "FAIL: recall-train failed"
  exit 1
}

echo "== start recall-server on loopback (free ports)"
"$SERVER" --model_base="$DIR/models" --host=127.0.0.1 --port=0 --metrics_host=127.0.0.1 \
  --metrics_port=0 --port_file="$DIR/ports" > "$DIR/server.log" 2>&1 &
SERVER_PID=$!
# shellcheck disable=SC2016  # evaluated by the EXIT trap
CLEANUP+=('stop_pid "$SERVER_PID"')
for _ in $(seq 1 300); do  # at most 30 s
  [ -s "$DIR/ports" ] && break
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    cat "$DIR/server.log"
    echo "FAIL: recall-server exited before listening"
    exit 1
  fi
  sleep 0.1
done
if [ ! -s "$DIR/ports" ]; then
  cat "$DIR/server.log"
  echo "FAIL: recall-server wrote no port file within 30 s"
  exit 1
fi
read -r GRPC_PORT METRICS_PORT < "$DIR/ports"
ADDR=127.0.0.1:$GRPC_PORT
echo "grpc $ADDR, metrics http://127.0.0.1:$METRICS_PORT/metrics"
"$CLI" health --addr="$ADDR" --wait_for_ready --timeout_ms=30000 || {
  cat "$DIR/server.log"
  echo "FAIL: recall-server is not SERVING"
  exit 1
}

# send_recalls N: N Recall calls (different users), each must succeed.
send_recalls() {
  local n=$1 i
  for ((i = 1; i <= n; i++)); do
    "$CLI" recall --addr="$ADDR" --user_id="$i" --history=1,2,3 --k=5 > /dev/null || {
      echo "FAIL: Recall call $i failed"
      exit 1
    }
  done
}
