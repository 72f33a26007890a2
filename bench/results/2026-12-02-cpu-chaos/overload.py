#!/usr/bin/env python3
"""Overload (issue 20): ten times the sustainable request rate for 60 s against a frontend with
--max-pending-requests, on the demo model's shape (CPU workers).

1. Starts a frontend (embedded registry, --max-pending-requests N) and one prefill and one decode CPU
   worker on the demo model (tiny-qwen3 shape, random weights, the Qwen3 tokenizer).
2. Calibrates: a closed loop of --max-pending clients (as many as the frontend admits) measures the
   saturated throughput; the sustainable rate X is --sustainable-fraction (0.8) of it, a rate the
   cluster serves without a queue that grows (Poisson bursts at the saturated rate itself would be
   refused in part).
3. Before: X for --phase-s seconds (open loop, Poisson arrivals).
4. Overload: 10 X for --overload-s seconds.
5. After: X again for --phase-s seconds, started the moment the overload's arrivals end.
Each phase is one `tandem bench serve` run; from their per-request records it reports, per phase:
admitted requests and their TTFT p50/p99, 429s and their latency p50/p99, other failures, and the
peak RSS of each process (sampled from /proc every 0.2 s). Exits non-zero when an expectation fails:
a process died, admitted TTFT p99 over --max-ttft-s, a 429 slower than --max-reject-ms at p99, or the
after phase completing a smaller share of its requests than the before phase (less 5 points).

  nice -n 0 python3 overload.py --tandem ../../../build/tandem --out result.json
Standard library only.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read().decode()
    except Exception:  # noqa: BLE001 - not up yet
        return 0, ""


def rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.normpath(os.path.join(here, "..", "..", ".."))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tandem", default=os.path.join(root, "build", "tandem"))
    ap.add_argument("--data-dir", default=os.path.join(root, "data"))
    ap.add_argument("--max-pending", type=int, default=16, help="the frontend's --max-pending-requests")
    ap.add_argument("--sustainable-fraction", type=float, default=0.8)
    ap.add_argument("--calibrate-prompts", type=int, default=96)
    ap.add_argument("--phase-s", type=float, default=20, help="seconds of the before and after phases")
    ap.add_argument("--overload-s", type=float, default=60)
    ap.add_argument("--factor", type=float, default=10)
    ap.add_argument("--input-len", type=int, default=64)
    ap.add_argument("--output-len", type=int, default=16)
    ap.add_argument("--max-ttft-s", type=float, default=30)
    ap.add_argument("--max-reject-ms", type=float, default=250)
    ap.add_argument("--out", default="result.json")
    a = ap.parse_args()

    work = tempfile.mkdtemp(prefix="tandem-overload-")
    env = dict(os.environ, OMP_WAIT_POLICY="passive")
    model = os.path.join(work, "model")
    subprocess.run([a.tandem, "make-model", "--preset", "tiny-qwen3", "--out", model, "--seed", "0"], check=True,
                   capture_output=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(a.data_dir, "tokenizers", "qwen3", f), model)
    http_port, reg_port = free_port(), free_port()
    procs = {}

    def start(name, argv):
        log = open(os.path.join(work, name + ".log"), "wb")
        procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    start("frontend", [a.tandem, "frontend", "--host", "127.0.0.1", "--port", str(http_port), "--registry-port",
                       str(reg_port), "--tokenizer", model, "--max-pending-requests", str(a.max_pending),
                       "--max-local-prefill", "48"])
    for role in ("prefill", "decode"):
        start(role, [a.tandem, "worker", "--role", role, "--model", model, "--served-model-name", "tiny",
                     "--frontend", f"127.0.0.1:{reg_port}", "--worker-id", f"{role}-0", "--threads", "1",
                     "--num-kv-blocks", "1024"])
    deadline = time.time() + 120
    while time.time() < deadline and get(http_port, "/health")[0] != 200:
        time.sleep(0.2)
    if get(http_port, "/health")[0] != 200:
        print(f"overload: the cluster did not come up (logs in {work})", file=sys.stderr)
        return 2

    peaks = {name: 0.0 for name in procs}
    sampling = threading.Event()
    phase_peaks = {}

    def sample():
        while not sampling.wait(0.2):
            for name, p in procs.items():
                peaks[name] = max(peaks[name], rss_mib(p.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    def bench(label, rate, num, concurrency=0):
        for name in peaks:
            peaks[name] = rss_mib(procs[name].pid)
        out = os.path.join(work, f"{label}.json")
        argv = [a.tandem, "bench", "serve", "--base-url", f"http://127.0.0.1:{http_port}", "--model", "tiny",
                "--tokenizer", model, "--dataset-name", "random", "--random-input-len", str(a.input_len),
                "--random-output-len", str(a.output_len), "--random-range-ratio", "0.5", "--ignore-eos",
                "--num-prompts", str(num), "--request-rate", str(rate) if rate else "inf", "--progress", "none",
                "--num-warmups", "0", "--request-timeout", "300", "--save-result", out, "--seed", "7"]
        if concurrency:
            argv += ["--max-concurrency", str(concurrency)]
        subprocess.run(argv, env=env, capture_output=True, text=True)
        with open(out) as f:
            run = json.load(f)["runs"][0]
        phase_peaks[label] = {n: round(v, 1) for n, v in peaks.items()}
        return run

    def summarize(label, run, rate):
        reqs = run["requests"]
        ok = [q for q in reqs if q["success"]]
        rejected = [q for q in reqs if not q["success"] and q.get("http_status") == 429]
        other = [q for q in reqs if not q["success"] and q.get("http_status") != 429]
        ttft = [q["ttft_ms"] / 1e3 for q in ok]
        reject_ms = [(q["end_s"] - q["start_s"]) * 1e3 for q in rejected]
        # Completions per second over the phase (seconds from the first arrival).
        per_s = {}
        for q in ok:
            per_s[int(q["end_s"])] = per_s.get(int(q["end_s"]), 0) + 1
        s = {"phase": label, "offered_rate": rate, "requests": len(reqs), "admitted_ok": len(ok),
             "rejected_429": len(rejected), "other_failures": len(other),
             "other_failure_reasons": sorted({q.get("error", "")[:80] for q in other}),
             "duration_s": round(run["duration"], 1), "completed_per_s": round(len(ok) / max(run["duration"], 1e-9), 2),
             "ttft_p50_s": pct(ttft, 50), "ttft_p99_s": pct(ttft, 99), "ttft_max_s": max(ttft) if ttft else None,
             "reject_latency_p50_ms": pct(reject_ms, 50), "reject_latency_p99_ms": pct(reject_ms, 99),
             "reject_latency_max_ms": max(reject_ms) if reject_ms else None,
             "completions_by_second": [per_s.get(i, 0) for i in range(int(run["duration"]) + 1)],
             "peak_rss_mib": phase_peaks[label]}
        for k, v in list(s.items()):
            if isinstance(v, float):
                s[k] = round(v, 3)
        print(json.dumps({k: v for k, v in s.items() if k != "completions_by_second"}), flush=True)
        return s

    results = {}
    cal = bench("calibrate", 0, a.calibrate_prompts, a.max_pending)
    saturated = cal["request_throughput"]
    x = saturated * a.sustainable_fraction
    results["calibrate"] = summarize("calibrate", cal, None)
    print(f"saturated {saturated:.2f} req/s (closed loop, {a.max_pending} clients); sustainable rate X = {x:.2f} req/s",
          flush=True)
    for label, rate, secs in (("before", x, a.phase_s), ("overload", x * a.factor, a.overload_s), ("after", x, a.phase_s)):
        run = bench(label, rate, max(1, int(rate * secs)))
        results[label] = summarize(label, run, round(rate, 2))
    sampling.set()
    died = [n for n, p in procs.items() if p.poll() is not None]
    for p in procs.values():
        p.kill()
        p.wait()

    problems = []
    if died:
        problems.append(f"died: {died}")
    o = results["overload"]
    if o["ttft_p99_s"] is None or o["ttft_p99_s"] > a.max_ttft_s:
        problems.append(f"admitted TTFT p99 {o['ttft_p99_s']} s > {a.max_ttft_s} s")
    if o["rejected_429"] == 0:
        problems.append("no request was rejected at 10x")
    elif o["reject_latency_p99_ms"] > a.max_reject_ms:
        problems.append(f"429 latency p99 {o['reject_latency_p99_ms']} ms > {a.max_reject_ms} ms")
    before, after = results["before"], results["after"]
    share = lambda r: r["admitted_ok"] / max(1, r["requests"])  # noqa: E731
    if share(after) < share(before) - 0.05:
        problems.append(f"after: {after['admitted_ok']} of {after['requests']} completed, "
                        f"before: {before['admitted_ok']} of {before['requests']}")
    summary = {"saturated_rate": round(saturated, 3), "sustainable_rate": round(x, 3), "max_pending_requests": a.max_pending, "factor": a.factor,
               "phases": results, "problems": problems}
    with open(a.out, "w") as f:
        json.dump(summary, f, indent=1)
    print("problems: " + ("; ".join(problems) if problems else "none"))
    if not problems:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"logs kept in {work}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
