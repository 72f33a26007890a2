#!/usr/bin/env python3
"""Summarises run.sh's files: per router mode, the prefix-cache hit rate over the run (the workers'
vllm:prefix_cache_hits_total / vllm:prefix_cache_queries_total, as the frontend's /metrics shows them,
after minus before), its share of the oracle's (prefix-hash), TTFT p50/p99 from the bench result, and
the load balance: the busiest worker's prompt tokens over the mean (1.00 = even)."""
import json
import re
import sys
from pathlib import Path

SERIES = re.compile(r'^(\S+?)\{([^}]*)\}\s+(\S+)$')


def per_worker(path, name):
    out = {}
    for line in Path(path).read_text().splitlines():
        m = SERIES.match(line)
        if not m or m.group(1) != name:
            continue
        worker = re.search(r'worker="([^"]+)"', m.group(2))
        if worker:
            out[worker.group(1)] = float(m.group(3))
    return out


def delta(out, mode, name):
    before = per_worker(out / f'metrics-before-{mode}.txt', name)
    after = per_worker(out / f'metrics-after-{mode}.txt', name)
    return {w: after[w] - before.get(w, 0.0) for w in after}


def find(obj, key):
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        for v in obj.values():
            r = find(v, key)
            if r is not None:
                return r
    elif isinstance(obj, list):
        for v in obj:
            r = find(v, key)
            if r is not None:
                return r
    return None


def main():
    out = Path(sys.argv[1])
    modes = sys.argv[2:]
    rows = {}
    for mode in modes:
        hits = delta(out, mode, 'vllm:prefix_cache_hits_total')
        queries = delta(out, mode, 'vllm:prefix_cache_queries_total')
        q = sum(queries.values())
        result = json.loads((out / f'result-{mode}.json').read_text())
        loads = [v for v in queries.values()]
        rows[mode] = {
            'hit_rate': sum(hits.values()) / q if q else 0.0,
            'ttft_p50': find(result, 'median_ttft_ms'),
            'ttft_p99': find(result, 'p99_ttft_ms'),
            'balance': max(loads) / (sum(loads) / len(loads)) if loads and sum(loads) else 0.0,
            'per_worker': ' / '.join(f'{int(queries[w])}' for w in sorted(queries)),
            'completed': find(result, 'completed'),
        }
    oracle = rows.get('prefix-hash', {}).get('hit_rate')
    print('| mode | prefix-cache hit rate | of the oracle | TTFT p50 (ms) | TTFT p99 (ms) | busiest / mean | prompt tokens per worker | completed |')
    print('|---|---|---|---|---|---|---|---|')
    for mode, r in rows.items():
        share = f"{r['hit_rate'] / oracle:.0%}" if oracle else '-'
        fmt = lambda v: f'{v:.0f}' if isinstance(v, (int, float)) else '-'
        print(f"| {mode} | {r['hit_rate']:.1%} | {share} | {fmt(r['ttft_p50'])} | {fmt(r['ttft_p99'])} | "
              f"{r['balance']:.2f} | {r['per_worker']} | {r['completed']} |")


if __name__ == '__main__':
    main()
