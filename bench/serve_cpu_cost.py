#!/usr/bin/env python3
"""CPU cost of the serving path per streamed output token, with no model math (issue 23).

`tandem serve --engine fake` (the frontend, a prefill worker and a decode worker, as issue 23's H200
run lays them out; the fake engine emits one token per running request every --fake-step-ms) loaded
by `tandem bench serve` (--num-prompts streams, all sent at once, --ignore-eos). Each repetition runs an
unmeasured pass first (buffers grow to the full batch, as on a server that has been up a while), then
the measured pass, reading every process's CPU time before and after it from
/proc/PID/task/*/schedstat (nanoseconds of CPU actually run, so a descheduled process accrues none).

Reported per variant (medians over --reps): output tok/s, and CPU microseconds per output token of the
frontend (whole process and its busiest thread, the HTTP I/O thread), of the decode worker (whole
process, and its threads named tandem-engine / tandem-outputs where the build names them), of the
prefill worker, and of the client (an upper bound: includes its start and the warm-up request).

A/B: each --variant NAME:TANDEM names a tandem binary (copy builds aside first); the variants run in
turn within each repetition (ABAB...), so the shared machine's load hits them alike.

Usage (repository root, after `ninja -C build tandem`):
  bench/serve_cpu_cost.py [--reps 5] [--num-prompts 256] [--input-len 512] [--output-len 512]
      [--fake-step-ms 10] [--variant NAME:TANDEM ...] [--out FILE.jsonl]
"""
import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import urllib.request

from proc_cpu import thread_names, thread_seconds, wait_for


def children(pid):
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            out += [int(c) for c in open(f"/proc/{pid}/task/{tid}/children").read().split()]
        except OSError:
            pass
    return out


def cmdline(pid):
    return open(f"/proc/{pid}/cmdline").read().split("\0")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_processes(serve_pid):
    """{'frontend': pid, 'decode': pid, 'prefill': pid} among the children of `tandem serve`."""
    found = {}
    for pid in children(serve_pid):
        argv = cmdline(pid)
        if "frontend" in argv:
            found["frontend"] = pid
        elif "--worker-id" in argv:
            role = argv[argv.index("--worker-id") + 1].split("-")[0]
            found[role] = pid
    return found


def run_once(args, tandem, tmp):
    port = free_port()
    log = open(os.path.join(tmp, "serve.log"), "w")
    serve = subprocess.Popen(
        [tandem, "serve", "--engine", "fake", "--model", args.model, "--tokenizer", args.tokenizer, "--port", str(port),
         "--child-log-level", "warn", f"--worker-arg=--fake-step-ms={args.fake_step_ms}"] + args.serve_args,
        stdout=log, stderr=subprocess.STDOUT)
    try:
        def workers():
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
            n = sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("tandem_workers{"))
            return n >= args.num_workers
        wait_for(workers, "the workers to register", timeout=120, poll_s=0.1)
        procs = find_processes(serve.pid)
        result = os.path.join(tmp, "bench.json")
        base = [tandem, "bench", "serve", "--base-url", f"http://127.0.0.1:{port}", "--tokenizer", args.tokenizer,
                "--dataset-name", "random", "--random-input-len", str(args.input_len),
                "--random-output-len", str(args.output_len), "--num-prompts", str(args.num_prompts),
                "--request-rate", "inf", "--ignore-eos", "--progress", "none", "--no-server-metrics"]
        subprocess.run(base + ["--num-warmups", "0", "--seed", "7"], check=True, stdout=subprocess.DEVNULL)
        before = {k: thread_seconds(p) for k, p in procs.items()}
        r0 = os.times()
        subprocess.run(base + ["--num-warmups", "1", "--save-result", result], check=True, stdout=subprocess.DEVNULL)
        r1 = os.times()
        after = {k: thread_seconds(p) for k, p in procs.items()}
        names = {k: thread_names(p) for k, p in procs.items()}
        run = json.load(open(result))["runs"][0]
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()
    tokens = run["total_output_tokens"]
    per = lambda s: s / tokens * 1e6
    delta = lambda k, t: after[k][t] - before[k].get(t, 0.0)
    row = {"output_tok_s": run["output_throughput"], "failed": run["failed"], "tokens": tokens,
           "client_us": per((r1.children_user + r1.children_system) - (r0.children_user + r0.children_system))}
    for k in procs:
        row[f"{k}_us"] = per(sum(delta(k, t) for t in after[k]))
        row[f"{k}_busiest_thread_us"] = per(max((delta(k, t) for t in after[k]), default=0.0))
    for thread in ("tandem-engine", "tandem-outputs"):
        row[f"decode_{thread[7:]}_thread_us"] = per(sum(delta("decode", t) for t in after["decode"]
                                                        if names["decode"].get(t) == thread))
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--num-prompts", type=int, default=256)
    p.add_argument("--input-len", type=int, default=512)
    p.add_argument("--output-len", type=int, default=512)
    p.add_argument("--fake-step-ms", type=int, default=10, help="decode step time (issue 23's H200 run: ~10.7 ms at 256)")
    p.add_argument("--model", default="random:qwen3-0.6b", help="only its vocabulary and EOS ids are used")
    p.add_argument("--tokenizer", default="data/tokenizers/qwen3")
    p.add_argument("--num-workers", type=int, default=2, help="workers `tandem serve` starts (to wait for)")
    p.add_argument("--serve-arg", dest="serve_args", action="append", default=[], help="more `tandem serve` flags")
    p.add_argument("--variant", action="append", default=[], help="NAME:TANDEM (default: current:build/tandem)")
    p.add_argument("--out", help="append each variant's summary and runs as one JSON line here")
    args = p.parse_args()
    variants = [v.split(":", 1) for v in (args.variant or ["current:build/tandem"])]
    rows = {name: [] for name, _ in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for name, tandem in variants:
                rows[name].append(run_once(args, tandem, tmp))
                print(f"rep {rep} {name}: " + json.dumps({k: round(v, 2) for k, v in rows[name][-1].items()}), flush=True)
    for name, _ in variants:
        summary = {"variant": name, "shape": f"{args.num_prompts} x {args.input_len}/{args.output_len}",
                   "fake_step_ms": args.fake_step_ms, "reps": args.reps, "load_average": os.getloadavg()[0]}
        for k in rows[name][0]:
            summary[k] = round(statistics.median(r[k] for r in rows[name]), 2)
        print(json.dumps(summary))
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps({"summary": summary, "runs": rows[name]}) + "\n")


if __name__ == "__main__":
    main()
