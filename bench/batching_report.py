#!/usr/bin/python3
"""Aggregates bench/batching.sh rounds into medians: batching.json and batching.md."""
import argparse
import json
import os

from serving_report import closed_point, load, med

CONFIGS = [
    ("hnsw-off", "HNSW32", "off"),
    ("hnsw-on-wait0", "HNSW32", "on, max wait 0 (default)"),
    ("hnsw-on-wait200", "HNSW32", "on, max wait 200 µs"),
    ("flat-off", "Flat", "off"),
    ("flat-on-wait0", "Flat", "on, max wait 0 (default)"),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--out_dir", required=True)
    ap.add_argument("--ef_search", type=int, default=0)
    ap.add_argument("--index", default="HNSW32", help="the version's index (label)")
    ap.add_argument("--cpus", required=True)
    a = ap.parse_args()
    rows = {}
    items = None
    for name, index, batching in CONFIGS:
        index = a.index if index == "HNSW32" else index
        runs = [load(os.path.join(a.work, f"{name}-r{r}.json")) for r in range(1, a.rounds + 1)]
        items = items or next((run["items"] for run in runs if run), None)
        row = {"index": index, "batching": batching}
        for c in (1, 32):
            stats = [closed_point(run, c) for run in runs]
            for key in ("qps", "p50_ms", "p99_ms"):
                row[f"c{c}_{key}"] = med([s[key] if s else None for s in stats])
        rows[name] = row
    ratio = {kind: rows[f"{kind}-on-wait0"]["c32_qps"] / rows[f"{kind}-off"]["c32_qps"]
             for kind in ("hnsw", "flat")}
    out = {"items": items, "rounds": a.rounds, "ef_search": a.ef_search, "cpus": a.cpus,
           "rows": rows, "batching_on_off_qps_at_c32": ratio}
    with open(os.path.join(a.out_dir, "batching.json"), "w") as f:
        json.dump(out, f, indent=1)
    lines = [
        f"In-process (engine + batcher, no network) on cpus {a.cpus}, {items:,} items, k = 100, "
        f"closed loop; HNSW32 at efSearch {a.ef_search}; medians of {a.rounds} rounds.",
        "",
        "| index | batching | QPS c=1 | p50 / p99 ms c=1 | QPS c=32 | p50 / p99 ms c=32 |",
        "|---|---|---|---|---|---|",
    ]
    for name, _, _ in CONFIGS:
        r = rows[name]
        lines.append(f"| {r['index']} | {r['batching']} | {r['c1_qps']:.1f} | "
                     f"{r['c1_p50_ms']:.2f} / {r['c1_p99_ms']:.2f} | {r['c32_qps']:.1f} | "
                     f"{r['c32_p50_ms']:.2f} / {r['c32_p99_ms']:.2f} |")
    lines += ["",
              f"- batching on / off, QPS at concurrency 32: {a.index} {ratio['hnsw']:.2f}x, "
              f"Flat {ratio['flat']:.2f}x"]
    with open(os.path.join(a.out_dir, "batching.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
