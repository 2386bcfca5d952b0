#!/usr/bin/python3
"""Aggregates bench/serving.sh rounds: medians, the ratios of issue 5, a Markdown table, a JSON
file and a PNG of p99 latency against offered load (gnuplot)."""
import argparse
import json
import os
import statistics
import subprocess
import sys


def load(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.loads(f.read().strip().splitlines()[-1])


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def open_point(run, fraction):
    for p in (run or {}).get("open_loop", []):
        if abs(p["fraction"] - fraction) < 1e-6:
            return p
    return None


def closed_point(run, c):
    for p in (run or {}).get("closed_loop", []):
        if p["concurrency"] == c:
            return p["stats"]
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--out_dir", required=True)
    ap.add_argument("--index", required=True, help="factory and search parameters served")
    ap.add_argument("--manifest", default="", help="the version's MANIFEST.json (its frontier)")
    ap.add_argument("--index_bytes", type=int, required=True)
    ap.add_argument("--tower_bytes", type=int, required=True)
    ap.add_argument("--wal_sync", default="always")
    ap.add_argument("--items", type=int, required=True)
    ap.add_argument("--k", type=int, required=True)
    ap.add_argument("--server_cpus", default="")
    ap.add_argument("--bench_cpus", default="")
    a = ap.parse_args()
    rounds = [os.path.join(a.work, f"round{r}") for r in range(1, a.rounds + 1)]
    runs = {name: [load(os.path.join(r, name + ".json")) for r in rounds]
            for name in ("server", "inprocess", "python", "stream", "nobatch", "upserts")}
    rss = {name: [int(open(os.path.join(r, name + "_rss_kib")).read()) * 1024
                  for r in rounds if os.path.exists(os.path.join(r, name + "_rss_kib"))]
           for name in ("server", "server_load", "python")}
    empty_path = os.path.join(a.work, "server_empty_rss_kib")
    empty_rss = int(open(empty_path).read()) * 1024 if os.path.exists(empty_path) else None
    # What a version may add to the process: its index, its towers, and id maps (label -> id
    # table, id -> label set: index/id_map.h; IVF direct map) at up to 64 bytes per item.
    bound_bytes = a.index_bytes + a.tower_bytes + 64 * a.items
    fractions = (0.25, 0.5, 0.75)
    rows = {}
    for name in ("server", "inprocess", "python"):
        rs = runs[name]
        row = {"max_qps": med([r.get("max_qps") for r in rs if r]),
               "recall_at_k": med([r.get("recall_at_k") for r in rs if r])}
        for f in fractions:
            pts = [open_point(r, f) for r in rs]
            row[f"p50_ms@{f}"] = med([p["stats"]["p50_ms"] for p in pts if p])
            row[f"p99_ms@{f}"] = med([p["stats"]["p99_ms"] for p in pts if p])
            row[f"rate@{f}"] = med([p["rate"] for p in pts if p])
            row[f"errors@{f}"] = med([p["stats"]["errors"] for p in pts if p])
        rows[name] = row
    rows["server"]["rss_bytes"] = med(rss["server"])
    rows["python"]["rss_bytes"] = med(rss["python"])
    s, c, p = rows["server"], rows["inprocess"], rows["python"]
    stream_qps = med([r.get("max_qps") for r in runs["stream"] if r])
    batched32 = med([(closed_point(r, 32) or {}).get("qps") for r in runs["server"]])
    unbatched32 = med([(closed_point(r, 32) or {}).get("qps") for r in runs["nobatch"]])
    upsert_p99 = med([(open_point(r, 0.0) or (r.get("open_loop") or [None])[0] or {})
                      .get("stats", {}).get("p99_ms") for r in runs["upserts"] if r])
    upsert_rate = med([r.get("upserts_per_sec") for r in runs["upserts"] if r])
    write_rate = med([r.get("writes_per_sec") for r in runs["upserts"] if r])

    def ratio(x, y):
        return x / y if x is not None and y else None

    summary = {
        "items": a.items, "k": a.k, "index": a.index, "rounds": a.rounds, "wal_sync": a.wal_sync,
        "server_cpus": a.server_cpus, "bench_cpus": a.bench_cpus,
        "index_file_bytes": a.index_bytes, "targets": rows,
        "server_over_inprocess_qps": ratio(s["max_qps"], c["max_qps"]),
        "server_over_python_qps": ratio(s["max_qps"], p["max_qps"]),
        "python_p99_over_server_p99_at_half_load": ratio(p["p99_ms@0.5"], s["p99_ms@0.5"]),
        "stream_max_qps": stream_qps, "stream_over_unary_qps": ratio(stream_qps, s["max_qps"]),
        "batched_qps_c32": batched32, "unbatched_qps_c32": unbatched32,
        "batching_gain_c32": ratio(batched32, unbatched32),
        "upserts_per_sec": upsert_rate, "writes_per_sec": write_rate,
        "p99_ms_at_half_load_with_upserts": upsert_p99,
        "upsert_p99_over_steady": ratio(upsert_p99, s["p99_ms@0.5"]),
        "server_rss_over_index_file": ratio(s.get("rss_bytes"), a.index_bytes),
        "tower_bytes": a.tower_bytes, "memory_bound_bytes": bound_bytes,
        "server_rss_after_load_bytes": med(rss["server_load"]),
        "server_rss_without_version_bytes": empty_rss,
        "version_rss_bytes": s["rss_bytes"] - empty_rss if s.get("rss_bytes") and empty_rss else None,
        "version_rss_over_bound": ratio(
            s["rss_bytes"] - empty_rss if s.get("rss_bytes") and empty_rss else None, bound_bytes),
    }
    os.makedirs(a.out_dir, exist_ok=True)
    with open(os.path.join(a.out_dir, "serving.json"), "w") as f:
        json.dump(summary, f, indent=2)

    def fmt(x, spec=".1f"):
        return "–" if x is None else format(x, spec)

    lines = [
        f"{a.items:,} items, k = {a.k}, {a.index} (the tuner's pick); server on cpus "
        f"{a.server_cpus}, load generator on cpus {a.bench_cpus}; medians of {a.rounds} rounds.",
        "",
        "| target | max QPS | p50 / p99 ms at 25% | p50 / p99 ms at 50% | p50 / p99 ms at 75% "
        f"| recall@{a.k} | RSS MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, label in (("server", "recall-server (gRPC)"), ("inprocess", "in-process ceiling"),
                        ("python", "Python gRPC peer")):
        r = rows[name]
        lat = " | ".join(f"{fmt(r[f'p50_ms@{f}'], '.2f')} / {fmt(r[f'p99_ms@{f}'], '.2f')}"
                         for f in fractions)
        mib = r.get("rss_bytes")
        lines.append(f"| {label} | {fmt(r['max_qps'])} | {lat} | {fmt(r['recall_at_k'], '.4f')} | "
                     f"{fmt(mib / 2**20 if mib else None, '.0f')} |")
    lines += [
        "",
        f"- recall-server / in-process ceiling QPS: {fmt(summary['server_over_inprocess_qps'], '.2f')}",
        f"- recall-server / Python QPS: {fmt(summary['server_over_python_qps'], '.2f')}; Python p99 / "
        f"recall-server p99 at 50% of each one's max: {fmt(summary['python_p99_over_server_p99_at_half_load'], '.2f')}",
        f"- RecallStream max QPS {fmt(stream_qps)} = {fmt(summary['stream_over_unary_qps'], '.2f')} x unary",
        f"- batching at concurrency 32: {fmt(batched32)} QPS on vs {fmt(unbatched32)} off "
        f"({fmt(summary['batching_gain_c32'], '.2f')}x)",
        f"- {fmt(write_rate, '.0f')} writes/s applied ({fmt(upsert_rate, '.0f')} upserted items/s, "
        f"the rest deletes; batches of 50, WAL sync `{a.wal_sync}`): p99 at 50% load "
        f"{fmt(upsert_p99, '.2f')} ms vs {fmt(s['p99_ms@0.5'], '.2f')} ms steady "
        f"({fmt(summary['upsert_p99_over_steady'], '.2f')}x)",
        f"- server RSS {fmt((s.get('rss_bytes') or 0) / 2**20, '.0f')} MiB after the sweep "
        f"({fmt((summary['server_rss_after_load_bytes'] or 0) / 2**20, '.0f')} after load); with no "
        f"version loaded {fmt((empty_rss or 0) / 2**20, '.0f')} MiB, so the version adds "
        f"{fmt((summary['version_rss_bytes'] or 0) / 2**20, '.0f')} MiB against a bound of "
        f"{bound_bytes / 2**20:.0f} MiB = items.faiss {a.index_bytes / 2**20:.0f} + towers "
        f"{a.tower_bytes / 2**20:.0f} + 64 B x {a.items:,} items {64 * a.items / 2**20:.0f} "
        f"({fmt(summary['version_rss_over_bound'], '.2f')}x)",
    ]
    if a.manifest:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from frontier_report import frontier  # noqa: E402
        lines += ["", "The index (serving_frontier.png: recall against single-thread QPS):", "",
                  frontier(a.manifest, os.path.join(a.out_dir, "serving_frontier"))]
    md = "\n".join(lines) + "\n"
    with open(os.path.join(a.out_dir, "serving.md"), "w") as f:
        f.write(md)
    print(md)

    # p99 against offered load (requests/s), one line per target.
    dat = os.path.join(a.out_dir, "serving_p99.dat")
    with open(dat, "w") as f:
        for name in ("server", "inprocess", "python"):
            f.write(f"# {name}\n")
            for fr in fractions:
                r = rows[name]
                if r[f"rate@{fr}"] is not None and r[f"p99_ms@{fr}"] is not None:
                    f.write(f"{r[f'rate@{fr}']} {r[f'p99_ms@{fr}']}\n")
            f.write("\n\n")
    png = os.path.join(a.out_dir, "serving.png")
    script = (f"set terminal pngcairo size 800,500; set output '{png}'; set logscale y; "
              "set xlabel 'offered load (requests/s)'; set ylabel 'p99 latency (ms)'; "
              "set key top left; "
              f"plot '{dat}' index 0 with linespoints title 'recall-server', "
              f"'' index 1 with linespoints title 'in-process ceiling', "
              f"'' index 2 with linespoints title 'Python gRPC peer'")
    try:
        subprocess.run(["gnuplot", "-e", script], check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"plot skipped: {e}")


if __name__ == "__main__":
    main()
