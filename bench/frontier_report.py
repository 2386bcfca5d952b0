#!/usr/bin/python3
"""The tuner's frontier of one version (ModelManifest.index_tuning, index/TUNING.md): a
Markdown table of each kind's cheapest point meeting the target (else its best recall) and a
PNG of recall@k against single-thread QPS, one line per kind, the pick circled (gnuplot).

  bench/frontier_report.py --manifest=MODELS/1/MANIFEST.json --out_prefix=bench/results/x
"""
import argparse
import json
import subprocess


def params_text(params):
    return ",".join(f"{k}={v:g}" for k, v in sorted(params.items()))


def frontier(manifest_path, out_prefix, title=""):
    """Writes OUT_PREFIX.md and OUT_PREFIX.png; returns the Markdown."""
    with open(manifest_path) as f:
        m = json.load(f)
    t = m.get("index_tuning")
    if not t:
        return f"version {m.get('version')}: fixed factory {m.get('index_factory')} (not tuned)\n"
    k, target = t.get("k", 0), t.get("recall_target", 0)
    points = t.get("points", [])
    chosen = t.get("chosen", -1)
    kinds = []
    for p in points:
        if p["factory"] not in kinds:
            kinds.append(p["factory"])
    lines = [
        f"{title}{int(t.get('num_items', 0)):,} items, recall@{k} target {target} on "
        f"{t.get('num_queries', 0)} queries ({t.get('queries', '')}); tuned in "
        f"{t.get('seconds', 0):.0f} s; pick: **{m.get('index_factory')} "
        f"{params_text(m.get('index_search_params', {}))}**"
        + ("" if t.get("target_met") else " (TARGET NOT MET: best recall)"),
        "",
        f"| kind | cheapest setting meeting the target (else best recall) | recall@{k} "
        "| distances / query | QPS, 1 thread | MiB | build s | insert µs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind in kinds:
        pts = [(i, p) for i, p in enumerate(points) if p["factory"] == kind]
        measured = [(i, p) for i, p in pts if not p.get("note")]
        if not measured:
            lines.append(f"| {kind} | {pts[0][1].get('note', '')} | | | | | | |")
            continue
        met = [(i, p) for i, p in measured if p.get("meets_target")]
        i, p = (min(met, key=lambda ip: ip[1].get("distances_per_query", 0)) if met
                else max(measured, key=lambda ip: ip[1].get("recall", 0)))
        mark = " ← pick" if i == chosen else ""
        budget = "" if p.get("within_budget", True) else " (over memory budget)"
        lines.append(
            f"| {kind}{mark} | {params_text(p.get('params', {}))}{budget} | {p.get('recall', 0):.4f} | "
            f"{p.get('distances_per_query', 0):,.0f} | {p.get('qps_one_thread', 0):,.0f} | "
            f"{int(p.get('bytes', 0)) / 2**20:.0f} | {p.get('build_seconds', 0):.1f} | "
            f"{p.get('insert_us', 0):.1f} |")
    md = "\n".join(lines) + "\n"
    with open(out_prefix + ".md", "w") as f:
        f.write(md)
    dat = out_prefix + ".dat"
    with open(dat, "w") as f:
        for kind in kinds:
            f.write(f"# {kind}\n")
            rows = sorted((p["recall"], p.get("qps_one_thread", 0)) for p in points
                          if p["factory"] == kind and not p.get("note"))
            for r, q in rows:
                f.write(f"{r} {q}\n")
            f.write("\n\n")
        f.write("# pick\n")
        if 0 <= chosen < len(points):
            f.write(f"{points[chosen]['recall']} {points[chosen].get('qps_one_thread', 0)}\n")
    plots = [f"'{dat}' index {n} with linespoints title '{kind}'" for n, kind in enumerate(kinds)]
    plots.append(f"'{dat}' index {len(kinds)} with points pt 6 ps 3 lc rgb 'black' title 'pick'")
    script = (f"set terminal pngcairo size 900,560; set output '{out_prefix}.png'; "
              f"set logscale y; set xlabel 'recall@{k} against exact search'; "
              "set ylabel 'queries/s, one thread, one query per call'; set key bottom left; "
              f"set arrow from {target}, graph 0 to {target}, graph 1 nohead dt 2; "
              "plot " + ", ".join(plots))
    try:
        subprocess.run(["gnuplot", "-e", script], check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"frontier plot skipped: {e}")
    return md


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--out_prefix", required=True)
    ap.add_argument("--title", default="")
    a = ap.parse_args()
    print(frontier(a.manifest, a.out_prefix, a.title))


if __name__ == "__main__":
    main()
