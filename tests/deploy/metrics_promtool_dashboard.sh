#!/usr/bin/env bash
# MetricsPromtoolAndDashboard: the live /metrics output of recall-server passes
# `promtool check metrics` with no finding, and every metric the Grafana dashboard queries is
# exported by the server (so no panel stays empty).
#
# usage: metrics_promtool_dashboard.sh <recall-train> <recall-server> <recall-cli> <source dir>
set -euo pipefail
# shellcheck disable=SC2034  # TRAIN, SERVER, CLI are read by serve_tiny_model.sh
TRAIN=$1 SERVER=$2 CLI=$3 SRC=$4
PY=/usr/bin/python3  # Debian's interpreter (json); not the python3 on PATH
DASHBOARD=$SRC/deploy/grafana/dashboards/tower-recall.json

if ! command -v promtool > /dev/null; then
  echo "FAIL: promtool is not installed (bash deploy/install-deps.sh installs the prometheus package)"
  exit 1
fi
# shellcheck source-path=SCRIPTDIR source=serve_tiny_model.sh
source "$(dirname "$0")/serve_tiny_model.sh"

echo "== traffic: Recall x3, one refused Recall (k=0), an upsert and a delete"
send_recalls 3
"$CLI" recall --addr="$ADDR" --user_id=1 --k=0 > /dev/null 2>&1 || true
"$CLI" upsert --addr="$ADDR" --item_id=100000 > /dev/null || echo "note: upsert failed"
"$CLI" delete --addr="$ADDR" --ids=100000 > /dev/null || echo "note: delete failed"

curl -sf --max-time 10 "http://127.0.0.1:$METRICS_PORT/metrics" > "$DIR/metrics.txt" || {
  echo "FAIL: GET /metrics failed"
  exit 1
}
echo "/metrics: $(grep -c '^recall_' "$DIR/metrics.txt") recall_ samples"

status=0
echo "== promtool check metrics"
set +e
promtool check metrics < "$DIR/metrics.txt" > "$DIR/promtool.out" 2>&1
rc=$?
set -e
if [ "$rc" -ne 0 ] || [ -s "$DIR/promtool.out" ]; then
  cat "$DIR/promtool.out"
  echo "FAIL: promtool check metrics: exit $rc, findings above"
  status=1
else
  echo "ok: promtool check metrics is clean"
fi

echo "== every metric the dashboard queries is exported"
"$PY" - "$DASHBOARD" "$DIR/metrics.txt" <<'EOF' || status=1
import json, re, sys

dashboard = json.load(open(sys.argv[1]))
types = {}
for line in open(sys.argv[2]):
    m = re.match(r"# TYPE (\S+) (\S+)", line)
    if m:
        types[m.group(1)] = m.group(2)

def exprs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("expr", "query", "definition") and isinstance(v, str):
                yield v
            else:
                yield from exprs(v)
    elif isinstance(node, list):
        for v in node:
            yield from exprs(v)

used = sorted({n for e in exprs(dashboard) for n in re.findall(r"recall_[a-z0-9_]+", e)})
missing = {}  # family -> the suffixes it was queried with
for name in used:
    if name in types:
        continue
    # OpenMetrics-style TYPE lines name a counter without its _total suffix
    if name.endswith("_total") and types.get(name[:-len("_total")]) == "counter":
        continue
    m = re.match(r"(.+)_(bucket|sum|count)$", name)
    if m and types.get(m.group(1)) in ("histogram", "summary") and \
            (m.group(2) != "bucket" or types[m.group(1)] == "histogram"):
        continue
    # report a histogram's series under its family name
    if m:
        missing.setdefault(m.group(1), []).append("_" + m.group(2))
    else:
        missing.setdefault(name, [])
missing = [f"{n} (histogram; queried as {', '.join(s)})" if s else n
           for n, s in sorted(missing.items())]
print(f"dashboard queries {len(used)} names; the server exports {len(types)} families")
if missing:
    print("missing from the server's /metrics:")
    for n in missing:
        print("  " + n)
    print(f"FAIL: {len(missing)} dashboard metric(s) not exported by recall-server")
    sys.exit(1)
print("ok: every dashboard metric is exported")
EOF

exit "$status"
