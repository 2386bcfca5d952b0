#!/usr/bin/env bash
# PrometheusScrapesServer: a real Prometheus scrapes a live recall-server on loopback, the
# Recall calls sent show up in recall_requests_total{method="Recall"}, and every PromQL
# expression of the Grafana dashboard evaluates without error against that Prometheus.
#
# usage: prometheus_scrape.sh <recall-train> <recall-server> <recall-cli> <source dir>
# Skips (exit 0) only when the prometheus binary is missing.
set -euo pipefail
# shellcheck disable=SC2034  # TRAIN, SERVER, CLI are read by serve_tiny_model.sh
TRAIN=$1 SERVER=$2 CLI=$3 SRC=$4
PY=/usr/bin/python3  # Debian's interpreter (json); not the python3 on PATH
CALLS=5

if ! command -v prometheus > /dev/null; then
  echo "skipping: prometheus not installed (bash deploy/install-deps.sh installs it)"
  exit 0
fi
# shellcheck source-path=SCRIPTDIR source=serve_tiny_model.sh
source "$(dirname "$0")/serve_tiny_model.sh"

PROM_PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
PROM=http://127.0.0.1:$PROM_PORT
cat > "$DIR/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: recall-server
    scrape_interval: 1s
    scrape_timeout: 1s
    static_configs:
      - targets: ["127.0.0.1:$METRICS_PORT"]
EOF
echo "== start prometheus on $PROM"
prometheus --config.file="$DIR/prometheus.yml" --storage.tsdb.path="$DIR/tsdb" \
  --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn > "$DIR/prometheus.log" 2>&1 &
PROM_PID=$!
# shellcheck disable=SC2016  # evaluated by the EXIT trap
CLEANUP+=('stop_pid "$PROM_PID"')
for _ in $(seq 1 300); do  # at most 30 s
  curl -sf --max-time 2 "$PROM/-/ready" > /dev/null 2>&1 && break
  if ! kill -0 "$PROM_PID" 2>/dev/null; then
    cat "$DIR/prometheus.log"
    echo "FAIL: prometheus exited"
    exit 1
  fi
  sleep 0.1
done
curl -sf --max-time 2 "$PROM/-/ready" > /dev/null || {
  cat "$DIR/prometheus.log"
  echo "FAIL: prometheus not ready within 30 s"
  exit 1
}

echo "== send $CALLS Recall calls"
send_recalls "$CALLS"

echo "== poll recall_requests_total{method=\"Recall\"} (at most 60 s)"
value=""
deadline=$((SECONDS + 60))
while ((SECONDS < deadline)); do
  curl -s --max-time 5 "$PROM/api/v1/query?query=recall_requests_total" > "$DIR/query.json" || true
  value=$("$PY" - "$DIR/query.json" <<'EOF'
import json, sys
try:
    data = json.load(open(sys.argv[1]))
except ValueError:
    sys.exit(0)
total = None
for r in data.get("data", {}).get("result", []):
    if r["metric"].get("method") == "Recall" and r["metric"].get("job") == "recall-server":
        total = (total or 0) + float(r["value"][1])
if total is not None:
    print(int(total))
EOF
)
  if [ -n "$value" ] && [ "$value" -ge "$CALLS" ]; then break; fi
  sleep 1
done
if [ -z "$value" ] || [ "$value" -lt "$CALLS" ]; then
  echo "last answer: $(cat "$DIR/query.json" 2>/dev/null)"
  curl -s --max-time 5 "$PROM/api/v1/targets" || true
  echo
  echo "FAIL: recall_requests_total{method=\"Recall\"} = '${value:-none}', want >= $CALLS"
  exit 1
fi
echo "ok: Prometheus sees recall_requests_total{method=\"Recall\"} = $value (>= $CALLS sent)"

echo "== every dashboard expression evaluates"
"$PY" - "$SRC/deploy/grafana/dashboards/tower-recall.json" "$PROM" <<'EOF'
import json, re, sys, urllib.parse, urllib.request

dashboard, prom = json.load(open(sys.argv[1])), sys.argv[2]

def exprs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "expr" and isinstance(v, str):
                yield v
            else:
                yield from exprs(v)
    elif isinstance(node, list):
        for v in node:
            yield from exprs(v)

bad = 0
all_exprs = list(exprs(dashboard))
for e in all_exprs:
    q = e.replace("$__rate_interval", "4s").replace("$__interval", "1s").replace("$__range", "1m")
    q = re.sub(r"\$\{?[A-Za-z_]\w*\}?", ".*", q)
    url = prom + "/api/v1/query?" + urllib.parse.urlencode({"query": q})
    try:
        answer = json.load(urllib.request.urlopen(url, timeout=10))
    except Exception as err:  # HTTP 400 carries the parse error
        body = getattr(err, "read", lambda: b"")().decode(errors="replace")
        answer = {"status": "error", "error": f"{err} {body}"}
    if answer.get("status") != "success":
        bad += 1
        print(f"FAIL: {q}\n  {answer.get('error')}")
if bad:
    sys.exit(1)
print(f"ok: {len(all_exprs)} dashboard expressions evaluate")
EOF
