#!/usr/bin/env python3
"""Medians of the before/after figures of gpu_session.sh ab: python3 summarize.py DIR (DIR holds ab/<variant>_<round>/)."""
import glob, json, os, statistics, sys

FIGURES = [  # (file, figure name, unit, higher is better)
    ("qwen3_throughput", "output_throughput", "tok/s", True),
    ("llama_throughput", "output_throughput", "tok/s", True),
    ("qwen3_latency", "decode_ms_per_token_median", "ms", False),
    ("llama_latency", "decode_ms_per_token_median", "ms", False),
    ("llama_prefill", "prefill_model_tflops_median", "TFLOP/s", True),
    ("kv_transfer_one_gpu", None, "GB/s", True),
]

def value(path, figure):
    data = json.load(open(path))
    records = data if isinstance(data, list) else [data]
    for r in records:
        if figure is None or r.get("figure") == figure:
            return r["value"] if figure else r["gbps"]
    return None

root = sys.argv[1]
print("| figure | before | after | after / before |")
print("| --- | --- | --- | --- |")
for name, figure, unit, higher in FIGURES:
    med = {}
    for v in ("before", "after"):
        vals = [x for x in (value(p, figure) for p in sorted(glob.glob(os.path.join(root, "ab", f"{v}_*", name + ".json")))) if x is not None]
        med[v] = (statistics.median(vals), vals) if vals else (None, [])
    if med["before"][0] and med["after"][0]:
        ratio = med["after"][0] / med["before"][0]
        fmt = lambda m: f"{m[0]:.4g} {unit} ({', '.join(f'{x:.4g}' for x in m[1])})"
        print(f"| {name} {figure or ''} | {fmt(med['before'])} | {fmt(med['after'])} | {ratio:.3f} |")
