# Sourced by the bench drivers: one server process at a time, pinned, on a port it picks.
# Needs WORK (its port file is $WORK/ports) and SERVER_CPUS; the server is stopped on exit.
SERVER_PID=""
stop_server() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  SERVER_PID=""
}
trap stop_server EXIT
# start_server LOG CMD...: runs CMD (which must write --port_file=$WORK/ports) pinned to
# SERVER_CPUS, waits for its port file; sets SERVER_PID and PORT.
start_server() {
  local log=$1; shift
  rm -f "$WORK/ports"
  taskset -c "$SERVER_CPUS" "$@" >"$log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 600); do
    [ -s "$WORK/ports" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "server died; see $log"; exit 1; }
    sleep 0.5
  done
  PORT=$(cut -d' ' -f1 "$WORK/ports")
}
