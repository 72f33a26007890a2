#!/usr/bin/env python3
"""SLO attainment and goodput of `tandem bench serve` result files under SLOs other than the ones the
run was given (every request's TTFT and TPOT are in the file), as the tables of docs/disaggregation.md.

    tools/study/slo_attainment.py [--slo TTFT_MS:TPOT_MS ...] [--markdown] RESULT.json[.xz] ...

For each file (one layout and workload) and each request rate in it: the share of requests that
succeeded within both bounds (attainment), and good requests per second of the run (goodput, as the
benchmark reports it). Capacity: the highest rate whose attainment is at least --min-attainment (90%),
the goodput definition of DistServe (OSDI '24).
"""
import argparse
import json
import lzma
import os


def load(path):
    opener = lzma.open if path.endswith(".xz") else open
    with opener(path, "rt") as f:
        return json.load(f)


def name_of(path):
    base = os.path.basename(path)
    for suffix in (".xz", ".json"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    return base


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slo", action="append", help="TTFT_MS:TPOT_MS (repeatable; default 1000:50 1000:20 1000:15)")
    ap.add_argument("--min-attainment", type=float, default=0.9)
    ap.add_argument("--markdown", action="store_true", help="print Markdown tables")
    ap.add_argument("results", nargs="+")
    args = ap.parse_args()
    slos = [tuple(float(x) for x in s.split(":")) for s in (args.slo or ["1000:50", "1000:20", "1000:15"])]

    table = {}  # name -> rate -> [(attainment, goodput) per SLO]
    names = [name_of(p) for p in args.results]
    for path in args.results:
        name = name_of(path)
        if names.count(name) > 1:  # the same layout from two sweeps: name it by its folder too
            name = os.path.basename(os.path.dirname(os.path.abspath(path))) + "/" + name
        result = load(path)
        for run in result["runs"]:
            requests = run["requests"]
            cells = []
            for ttft, tpot in slos:
                good = sum(1 for q in requests
                           if q.get("success") and q.get("ttft_ms") is not None and q["ttft_ms"] <= ttft
                           and (q.get("tpot_ms") or 0.0) <= tpot)
                cells.append((good / len(requests) if requests else 0.0, good / run["duration"] if run["duration"] else 0.0))
            table.setdefault(name, {})[run["request_rate"]] = cells

    rates = sorted({r for per in table.values() for r in per})
    for i, (ttft, tpot) in enumerate(slos):
        title = f"SLO TTFT <= {ttft:g} ms, TPOT <= {tpot:g} ms: attainment % (goodput req/s)"
        header = ["layout_workload"] + [f"{r:g} req/s" for r in rates] + [f"capacity (>= {args.min_attainment:.0%})"]
        rows = []
        for name in sorted(table):
            per = table[name]
            row = [name]
            for r in rates:
                row.append(f"{100 * per[r][i][0]:.0f} ({per[r][i][1]:.2f})" if r in per else "-")
            ok = [r for r in sorted(per) if per[r][i][0] >= args.min_attainment]
            row.append(f"{max(ok):g}" if ok else "< " + f"{min(per):g}")
            rows.append(row)
        if args.markdown:
            print(f"\n**{title}**\n")
            print("| " + " | ".join(header) + " |")
            print("|" + "---|" * len(header))
            for row in rows:
                print("| " + " | ".join(row) + " |")
        else:
            print("\n" + title)
            print("\t".join(header))
            for row in rows:
                print("\t".join(row))


if __name__ == "__main__":
    main()
