#!/usr/bin/env bash
# The replica set's long runs and benchmark (server/REPLICATION.md, README "Replica set").
# CI runs short versions of the same code (ctest -R ReplicaSetTest).
#
#   bash bench/replica_set.sh throughput [rounds=3]  writes/s and visibility lag for the local WAL,
#                                                   JetStream R=1 and R=3 side by side, Recall p99
#                                                   with NATS up vs down -> bench/results/replica_set.md
#   bash bench/replica_set.sh faults [runs=20]        the fault round with 10 kills, `runs` times,
#                                                   a fresh seed each (printed; replay with
#                                                   RECALL_FAULT_SEED=<seed>)
#   bash bench/replica_set.sh long                    read-your-writes x10000, a late replica after
#                                                   100,000 writes, 20 timed pin changes
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-throughput}
bash deploy/build.sh recall-server recall-train replica-set-bench replica_set_test >/dev/null
BUILD=${BUILD_DIR:-build}
case "$what" in
  throughput)
    rounds=${2:-3}
    work=$(mktemp -d /tmp/recall_replica_bench.XXXXXX)
    trap 'rm -rf "$work"' EXIT
    "$BUILD/trainer/recall-train" --preset=smoke --dataset=synthetic --synthetic_users=2000 \
      --synthetic_items=20000 --epochs=1 --skip_eval --index_factory=Flat --progress=none \
      --model_base="$work/models" >/dev/null
    mkdir -p bench/results
    for r in $(seq 1 "$rounds"); do
      echo "== round $r of $rounds" >&2
      "$BUILD/bench/replica-set-bench" --server_bin="$BUILD/server/recall-server" \
        --model_base="$work/models" --work_dir="$work/run" --json_out="$work/round$r.json" \
        | tee "$work/round$r.md"
    done
    /usr/bin/python3 - "$work" "$rounds" <<'PY'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
runs = [json.load(open(f"{work}/round{r}.json")) for r in range(1, rounds + 1)]
rows = []
for i, first in enumerate(runs[0]):
    med = lambda k: statistics.median(run[i][k] for run in runs)
    up, down = med("recall_p99_up_ms"), med("recall_p99_down_ms")
    rows.append(f"| {first['log']} | {med('writes_per_sec'):.0f} | {med('ack_p50_ms'):.2f} / "
                f"{med('ack_p99_ms'):.2f} | {med('lag_p50_ms'):.2f} / {med('lag_p99_ms'):.2f} | "
                + (f"{up:.2f} / {down:.2f} |" if up >= 0 else "- |"))
md = ["Medians of %d rounds (`bash bench/replica_set.sh throughput %d`); each round runs the "
      "three logs one after the other on the same machine. 16 closed-loop writers, one raw-vector "
      "upsert per call, Flat index of 20,000 items; visibility lag = storage in the log to "
      "application on a replica (every replica's histogram, merged); Recall p99 = 4 closed-loop "
      "callers on one replica, no writes, NATS up and then with all 3 NATS nodes killed." % (rounds, rounds),
      "", "| write log | acknowledged writes/s | ack p50 / p99 (ms) | visibility lag p50 / p99 (ms) "
      "| Recall p99 NATS up / down (ms) |", "|---|---|---|---|---|"] + rows
open("bench/results/replica_set.md", "w").write("\n".join(md) + "\n")
json.dump(runs, open("bench/results/replica_set.json", "w"), indent=1)
print("\n".join(md))
PY
    ;;
  faults)
    runs=${2:-20}
    pass=0
    for r in $(seq 1 "$runs"); do
      start=$(date +%s)
      if RECALL_FAULT_EVENTS=10 "$BUILD/tests/server/replica_set_test" \
          --gtest_filter='*FaultRound*' > "/tmp/recall_fault_run$r.log" 2>&1; then
        pass=$((pass + 1)); result=passed
      else
        result=FAILED
      fi
      echo "run $r: $result in $(( $(date +%s) - start )) s; $(grep -m1 -o 'seed [0-9]*: .*' "/tmp/recall_fault_run$r.log" || grep -m1 -o 'seed [0-9]*' "/tmp/recall_fault_run$r.log")"
    done
    echo "$pass of $runs runs passed"
    [ "$pass" -eq "$runs" ]
    ;;
  long)
    RECALL_RYW_TRIES=10000 RECALL_CATCHUP_WRITES=100000 RECALL_PIN_ROUNDS=20 \
      "$BUILD/tests/server/replica_set_test" \
      --gtest_filter='*ReadYourWrites*:*LateReplica*:*PinReaches*'
    ;;
  *) echo "usage: bash bench/replica_set.sh throughput [rounds] | faults [runs] | long" >&2; exit 64 ;;
esac
