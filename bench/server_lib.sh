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
# server_cpu_ticks: the running server's user + system CPU so far, in clock ticks (1/100 s).
server_cpu_ticks() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }
# server_switches: context switches of all the running server's threads so far (voluntary and
# involuntary; a thread that exited no longer counts).
server_switches() {
  cat /proc/"$SERVER_PID"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {s += $2} END {print s}'
}
# serving_version: sets MODELS to the version bench/serving.sh left under WORK, with its
# requests.bin (the drivers that measure more on that version); exits if there is none.
serving_version() {
  MODELS=$(ls -d "$WORK"/models-* 2>/dev/null | head -1)
  [ -n "$MODELS" ] && [ -s "$WORK/requests.bin" ] || { echo "run bench/serving.sh first"; exit 1; }
}
