"""What the serving-path CPU benchmarks read from /proc, and their wait loop (bench/serve_cpu_cost.py and
bench/results/2026-12-02-cpu-serve-overhead/run.py import it)."""
import os
import sys
import time


def thread_seconds(pid):
    """CPU seconds of each thread of pid, from schedstat (its first field is nanoseconds on the CPU;
    /proc/PID/stat counts 10 ms ticks, too coarse for a worker that spends ~1 us a token)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            out[tid] = int(open(f"/proc/{pid}/task/{tid}/schedstat").read().split()[0]) / 1e9
        except (OSError, ValueError):
            pass
    return out


def thread_names(pid):
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            out[tid] = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
        except OSError:
            pass
    return out


def wait_for(predicate, what, timeout, poll_s):
    """Polls predicate (an OSError counts as not yet) until it holds; exits naming `what` after timeout s."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(poll_s)
    sys.exit(f"timed out waiting for {what}")
