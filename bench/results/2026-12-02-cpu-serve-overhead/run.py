#!/usr/bin/env python3
"""The serving path's CPU cost against the offline engine, over a backend that computes nothing (issue 23).

For each repetition, alternating the two so that the shared machine's load hits both alike:
  offline  build/bench/serve_overhead_bench offline (the real engine over NullBackend, text on, as a worker runs it)
  serve    build/tandem frontend + serve_overhead_bench worker (same engine) + tandem bench serve, streamed
Both at the same shape (--num-prompts x --input-len/--output-len, greedy, ignore_eos, all sent at once).

Reports output tok/s of each, their ratio, and CPU microseconds per output token of every process of the
serve run (CPU time from /proc/PID/task/*/schedstat, so a descheduled process costs nothing), with the busiest thread of
the frontend (its I/O thread) and of the worker (its engine thread) on their own.

An A/B compares builds in one run: each --variant NAME:TANDEM:BENCH (binaries copied aside from a build)
runs once per repetition, in turn, ABAB..., and each gets its own medians.

Usage (repository root, after `ninja -C build tandem serve_overhead_bench`):
  bench/results/2026-12-02-cpu-serve-overhead/run.py [--reps 3] [--num-prompts 256] [--input-len 64]
      [--output-len 128] [--variant NAME:TANDEM:BENCH ...] [--out FILE.jsonl]
"""
import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from proc_cpu import thread_names, thread_seconds, wait_for  # noqa: E402  (bench/proc_cpu.py)


def cpu_seconds(pid):
    return sum(thread_seconds(pid).values())


def busiest_delta(before, after):
    return max((after[t] - before.get(t, 0.0) for t in after), default=0.0)


def named_delta(names, before, after, name):
    return sum(after[t] - before.get(t, 0.0) for t in after if names.get(t) == name)


def run_offline(args, bench):
    cmd = [bench, "offline", "--num-prompts", str(args.num_prompts), "--input-len", str(args.input_len),
           "--output-len", str(args.output_len), "--runs", "2", "--detokenize"] + args.engine_args
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    # The first run warms the allocator; the second is the figure.
    tps = [float(m) for m in re.findall(r"([0-9.]+) output tok/s", out)]
    eng = [float(m) for m in re.findall(r"([0-9.]+) us per output token", out)]
    return {"output_tok_s": tps[-1], "engine_us_per_token": eng[-1]}


def run_serve(args, tmp, tandem, bench):
    ready = os.path.join(tmp, "ready.json")
    if os.path.exists(ready):
        os.remove(ready)
    fe = subprocess.Popen([tandem, "--log-level", "warn", "frontend", "--port", "0", "--ready-file", ready,
                           "--tokenizer", args.tokenizer] + args.frontend_args)
    wait_for(lambda: os.path.getsize(ready) > 0, "the frontend", timeout=60, poll_s=0.05)
    ports = json.load(open(ready))
    http, reg = ports["http_port"], ports["registry_port"]
    wk = subprocess.Popen([bench, "worker", "--frontend", f"127.0.0.1:{reg}", "--tokenizer", args.tokenizer]
                          + args.engine_args, stdout=subprocess.PIPE, text=True)

    def workers():
        text = urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=2).read().decode()
        return sum(float(v) for v in re.findall(r"^tandem_workers\{[^}]*\} ([0-9.]+)", text, re.M)) >= 1
    wait_for(workers, "the worker to register", timeout=60, poll_s=0.05)
    result = os.path.join(tmp, "bench.json")
    base = [tandem, "bench", "serve", "--base-url", f"http://127.0.0.1:{http}", "--model", "null",
            "--tokenizer", args.tokenizer, "--dataset-name", "random", "--random-input-len", str(args.input_len),
            "--random-output-len", str(args.output_len), "--num-prompts", str(args.num_prompts),
            "--request-rate", "inf", "--ignore-eos", "--progress", "none", "--no-server-metrics"]
    client = base + ["--num-warmups", "1", "--save-result", result]
    # A first pass of the same load, unmeasured: the worker's and the frontend's buffers grow to the
    # full batch here, as they would have long before on a server that has been up for a while.
    subprocess.run(base + ["--num-warmups", "0", "--seed", "7"], check=True, stdout=subprocess.DEVNULL)
    fe0, wk0, fe_t0, wk_t0 = cpu_seconds(fe.pid), cpu_seconds(wk.pid), thread_seconds(fe.pid), thread_seconds(wk.pid)
    r0 = os.times()
    subprocess.run(client, check=True, stdout=subprocess.DEVNULL)
    r1 = os.times()
    fe1, wk1, fe_t1, wk_t1 = cpu_seconds(fe.pid), cpu_seconds(wk.pid), thread_seconds(fe.pid), thread_seconds(wk.pid)
    wk_names = thread_names(wk.pid)
    run = json.load(open(result))["runs"][0]
    tokens = run["total_output_tokens"]
    # The worker first (a second signal stops it without draining), then the frontend.
    wk.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    wk.send_signal(signal.SIGTERM)
    out = wk.communicate(timeout=30)[0]
    fe.send_signal(signal.SIGTERM)
    fe.wait(timeout=30)
    eng = [float(m) for m in re.findall(r"([0-9.]+) us per output token", out)]
    per = lambda s: s / tokens * 1e6
    return {
        "output_tok_s": run["output_throughput"], "failed": run["failed"], "tokens": tokens,
        "frontend_us_per_token": per(fe1 - fe0), "frontend_io_thread_us_per_token": per(busiest_delta(fe_t0, fe_t1)),
        "worker_us_per_token": per(wk1 - wk0), "worker_busiest_thread_us_per_token": per(busiest_delta(wk_t0, wk_t1)),
        # Threads named by the code (pthread_setname_np); 0 in a build without the names.
        "worker_engine_thread_us_per_token": per(named_delta(wk_names, wk_t0, wk_t1, "tandem-engine")),
        "worker_outputs_thread_us_per_token": per(named_delta(wk_names, wk_t0, wk_t1, "tandem-outputs")),
        # Includes the warm-up request and the client's start (tokenizer load, prompt making): an upper bound.
        "client_us_per_token": per((r1.children_user + r1.children_system) - (r0.children_user + r0.children_system)),
        "engine_us_per_token": eng[-1] if eng else None,
    }


def summarize(name, offline, serve, args):
    med = lambda rows, k: statistics.median(r[k] for r in rows if r[k] is not None)
    summary = {"variant": name, "shape": f"{args.num_prompts} x {args.input_len}/{args.output_len}",
               "reps": args.reps, "offline_tok_s": med(offline, "output_tok_s"),
               "offline_engine_us_per_token": med(offline, "engine_us_per_token"),
               "serve_tok_s": med(serve, "output_tok_s")}
    for k in ("frontend_us_per_token", "frontend_io_thread_us_per_token", "worker_us_per_token",
              "worker_busiest_thread_us_per_token", "worker_engine_thread_us_per_token",
              "worker_outputs_thread_us_per_token", "client_us_per_token", "engine_us_per_token"):
        summary["serve_" + k] = med(serve, k)
    summary["serve_over_offline"] = summary["serve_tok_s"] / summary["offline_tok_s"]
    summary["load_average"] = os.getloadavg()[0]
    return summary


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--num-prompts", type=int, default=256)
    p.add_argument("--input-len", type=int, default=64)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--variant", action="append", default=[],
                   help="NAME:TANDEM:BENCH (default: current:build/tandem:build/bench/serve_overhead_bench)")
    p.add_argument("--tokenizer", default="data/tokenizers/qwen3")
    p.add_argument("--engine-arg", dest="engine_args", action="append", default=[], help="more engine flags, both modes")
    p.add_argument("--frontend-arg", dest="frontend_args", action="append", default=[])
    p.add_argument("--out", help="append each variant's summary and runs as one JSON line here")
    args = p.parse_args()
    variants = [v.split(":") for v in (args.variant or ["current:build/tandem:build/bench/serve_overhead_bench"])]
    results = {name: ([], []) for name, _, _ in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for name, tandem, bench in variants:
                offline, serve = results[name]
                offline.append(run_offline(args, bench))
                serve.append(run_serve(args, tmp, tandem, bench))
                print(f"rep {rep} {name}: offline {offline[-1]}\n    serve {serve[-1]}", flush=True)
    for name, _, _ in variants:
        offline, serve = results[name]
        summary = summarize(name, offline, serve, args)
        print(json.dumps(summary, indent=1))
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps({"summary": summary, "engine_args": args.engine_args, "offline": offline,
                                    "serve": serve}) + "\n")


if __name__ == "__main__":
    main()
