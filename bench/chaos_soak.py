#!/usr/bin/env python3
"""Chaos soak (issue 20): a whole cluster on loopback under load while its processes are killed.

Starts a real etcd and nats-server, two frontends, two prefill and two decode CPU workers on the demo
model (tiny-qwen3 shape, random weights, the Qwen3 tokenizer), loads every frontend with
`tandem bench serve`, and every few seconds hits one random process (a worker, a frontend, etcd or NATS)
with SIGKILL, SIGTERM or SIGSTOP (then SIGCONT) and restarts what died. It checks, continuously and at
each idle point between rounds:

  request_deadline    every request ends (success or an error) within the frontend's deadline
                      (--request-timeout-s) plus the time its frontend was stopped plus a grace
  stream_hang         no request is ended by the client's own, much longer, timeout
  stream_cut          a stream that ends without [DONE] or an error event only when its frontend was
                      killed (SIGKILL) while it ran
  unexpected_status   no HTTP status other than 200, 429, 503 and 504
  unexpected_exit     no process exits unless signalled
  term_hang           a SIGTERM'd process exits within its drain timeout
  rejoin              a restarted worker (and every worker after a frontend or etcd restart) is listed
                      by every frontend, with its new pid, within --rejoin-timeout
  kv_leak             once idle, every worker's used KV blocks, reservations and prefills in flight
                      return to 0 and no frontend holds a request
  resource_growth     each tandem process's RSS, open fds and threads at an idle point stay within
                      bounds of the same process's first idle point (and a restarted process's fds and
                      threads within bounds of its role's first idle point); one frontend, one prefill
                      and one decode worker (--long-lived) are only ever stopped, never ended, so that
                      they live through the whole run

It exits 0 when all held, 1 naming each violated invariant, 2 on a setup failure, 77 (ctest's skip)
when etcd or nats-server is missing and $CI is not set. Python 3 standard library only.

  bench/chaos_soak.py --tandem build/tandem --duration 60
  nice -n 19 bench/chaos_soak.py --tandem build/tandem --duration 1800 --round 300 --summary soak.json
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

WORKER_IDS = ["prefill-0", "prefill-1", "decode-0", "decode-1"]
OK_STATUSES = {200, 429, 503, 504}


def log(msg):
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port, path, timeout=2.0):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except Exception:  # refused, reset, timed out: the process is down or stopped
        return 0, ""


def parse_metrics(text):
    """Prometheus text -> list of (name, {label: value}, value)."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})?\s+(\S+)$', line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        try:
            out.append((m.group(1), labels, float(m.group(4))))
        except ValueError:
            pass
    return out


def proc_resources(pid):
    """(rss_kib, threads, fds) of a live process, or None."""
    try:
        rss = threads = None
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("Threads:"):
                    threads = int(line.split()[1])
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        return rss, threads, fds
    except (OSError, ValueError):
        return None


class Proc:
    """One supervised process: started, signalled and restarted by the soak with the same arguments."""

    def __init__(self, name, kind, argv, workdir, env, ready_check):
        self.name, self.kind, self.argv, self.workdir, self.env = name, kind, argv, workdir, env
        self.ready_check = ready_check
        self.popen = None
        self.incarnation = 0
        self.expected_exit = False  # set before the soak signals it to die
        self.stopped = False
        self.log_path = os.path.join(workdir, f"{name}.log")

    def start(self):
        self.incarnation += 1
        self.expected_exit = False
        self.stopped = False
        logf = open(self.log_path, "ab")
        logf.write(f"\n==== {self.name} incarnation {self.incarnation} at {time.strftime('%H:%M:%S')}\n".encode())
        logf.flush()
        self.popen = subprocess.Popen(self.argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      env=self.env, start_new_session=True)
        logf.close()
        self.started_at = time.monotonic()

    @property
    def pid(self):
        return self.popen.pid if self.popen else None

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                return False
            if self.ready_check(self):
                return True
            time.sleep(0.1)
        return False

    def send(self, sig):
        if self.alive():
            try:
                os.kill(self.popen.pid, sig)
            except ProcessLookupError:
                pass

    def wait_exit(self, timeout):
        try:
            self.popen.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop_for_good(self):
        if self.stopped:
            self.send(signal.SIGCONT)
        self.expected_exit = True
        self.send(signal.SIGKILL)
        if self.popen:
            self.popen.wait()


class Soak:
    def __init__(self, a):
        self.a = a
        self.rng = random.Random(a.seed)
        self.violations = []  # (invariant, detail)
        self.vlock = threading.Lock()
        self.stats = {"requests": 0, "succeeded": 0, "failures": {}, "rejected_429": 0, "bench_runs": 0,
                      "bench_runs_refused": 0, "kills": {}, "rounds": 0}
        self.slock = threading.Lock()
        self.down = {}  # frontend name -> list of [start, end or None] when it could not answer (killed or stopped)
        self.kills_at = {}  # frontend name -> times of SIGKILL
        self.stop_load = threading.Event()
        self.stop_chaos = threading.Event()
        self.action_lock = threading.Lock()  # the monitor skips processes the chaos thread is handling
        self.acting_on = None
        self.baselines = {}  # (name, incarnation) -> first idle sample
        self.role_baselines = {}  # kind -> first idle sample of that kind
        self.samples = []  # every idle sample, for the summary

    # -- violations and figures --------------------------------------------------------------------
    def violate(self, invariant, detail):
        with self.vlock:
            self.violations.append((invariant, detail))
        log(f"VIOLATION {invariant}: {detail}")

    def count(self, key, sub=None, n=1):
        with self.slock:
            if sub is None:
                self.stats[key] = self.stats.get(key, 0) + n
            else:
                self.stats[key][sub] = self.stats[key].get(sub, 0) + n

    # -- the cluster ------------------------------------------------------------------------------
    def setup(self):
        a = self.a
        self.dir = tempfile.mkdtemp(prefix="tandem-soak-")
        log(f"working directory {self.dir}")
        env = dict(os.environ)
        env["OMP_WAIT_POLICY"] = "passive"  # 2 cores shared by 4 workers: spinning OpenMP threads starve the rest
        env.pop("TANDEM_API_KEY", None)
        self.env = env
        model = os.path.join(self.dir, "model")
        r = subprocess.run([a.tandem, "make-model", "--preset", "tiny-qwen3", "--out", model, "--seed", "0"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"make-model failed: {r.stderr.strip()}")
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(a.data_dir, "tokenizers", "qwen3", f), model)
        self.model = model

        self.etcd_port, etcd_peer = free_port(), free_port()
        self.nats_port, self.nats_monitor = free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{self.etcd_port}"
        peer_url = f"http://127.0.0.1:{etcd_peer}"
        self.procs = {}
        self.procs["etcd"] = Proc("etcd", "etcd", [
            a.etcd, "--name", "soak", "--data-dir", os.path.join(self.dir, "etcd-data"), "--listen-client-urls", etcd_url,
            "--advertise-client-urls", etcd_url, "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", "soak=" + peer_url, "--logger", "zap", "--log-level", "warn"], self.dir, env,
            lambda p: http_get(self.etcd_port, "/health")[0] == 200)
        self.procs["nats"] = Proc("nats", "nats", [
            a.nats_server, "-js", "-a", "127.0.0.1", "-p", str(self.nats_port), "-m", str(self.nats_monitor),
            "-sd", os.path.join(self.dir, "nats-store")], self.dir, env,
            lambda p: http_get(self.nats_monitor, "/healthz")[0] == 200)
        cluster = ["--registry", f"etcd://127.0.0.1:{self.etcd_port}", "--namespace", "soak",
                   "--prefill-queue", f"nats://127.0.0.1:{self.nats_port}"]
        self.http_ports = {}
        for i in range(2):
            name = f"frontend-{i}"
            port = free_port()
            self.http_ports[name] = port
            self.procs[name] = Proc(name, "frontend", [
                a.tandem, "--log-level", "info", "frontend", "--port", str(port), *cluster, "--frontend-id", name,
                "--tokenizer", model, "--max-local-prefill", "48", "--max-prefill-queue", "8",
                "--request-timeout-s", str(a.request_timeout_s), "--remote-prefill-timeout-ms", "4000",
                "--heartbeat-timeout-ms", "3000", "--drain-timeout-ms", str(int(a.request_timeout_s * 1000) + 5000),
                "--max-pending-requests", "64"], self.dir, env,
                lambda p, port=port: http_get(port, "/health")[0] in (200, 503))
        for wid in WORKER_IDS:
            role = wid.split("-")[0]
            self.procs[wid] = Proc(wid, role, [
                a.tandem, "--log-level", "info", "worker", "--role", role, "--model", model, "--served-model-name", "tiny",
                *cluster, "--lease-ttl", "3", "--prefill-queue-ack-wait-ms", "3000", "--worker-id", wid,
                "--heartbeat-ms", "200", "--threads", "1", "--num-kv-blocks", "256", "--drain-timeout-ms", "8000",
                "--remote-prefill-timeout-ms", "4000"], self.dir, env, lambda p: True)

        for name in ("etcd", "nats"):
            self.procs[name].start()
            if not self.procs[name].wait_ready(30):
                raise RuntimeError(f"{name} did not start (log {self.procs[name].log_path})")
        for name in ("frontend-0", "frontend-1", *WORKER_IDS):
            self.procs[name].start()
        for name in ("frontend-0", "frontend-1"):
            if not self.procs[name].wait_ready(30):
                raise RuntimeError(f"{name} did not start (log {self.procs[name].log_path})")
        if not self.wait_all_listed(60):
            raise RuntimeError("the workers were not listed by both frontends within 60 s")
        log("cluster up: " + ", ".join(f"{n}={p.pid}" for n, p in self.procs.items()))

    def frontend_metrics(self, name, timeout=2.0):
        status, body = http_get(self.http_ports[name], "/metrics", timeout)
        return parse_metrics(body) if status == 200 else None

    def listed_everywhere(self):
        """True when every running frontend lists every worker with its current pid, not draining."""
        for fe in ("frontend-0", "frontend-1"):
            if not self.procs[fe].alive() or self.procs[fe].stopped:
                continue
            m = self.frontend_metrics(fe)
            if m is None:
                return False
            listed = {l.get("worker"): (l.get("pid"), l.get("draining")) for n, l, v in m if n == "tandem_worker_info"}
            for wid in WORKER_IDS:
                if listed.get(wid) != (str(self.procs[wid].pid), "false"):
                    return False
        return True

    def wait_all_listed(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.listed_everywhere():
                return True
            time.sleep(0.2)
        return False

    # -- load --------------------------------------------------------------------------------------
    def load_loop(self, fe):
        a = self.a
        n = 0
        while not self.stop_load.is_set():
            n += 1
            out = os.path.join(self.dir, f"bench-{fe}-{n}.json")
            num = max(2, int(a.rate * a.batch_s))
            argv = [a.tandem, "bench", "serve", "--base-url", f"http://127.0.0.1:{self.http_ports[fe]}", "--model", "tiny",
                    "--tokenizer", self.model, "--dataset-name", "random", "--random-input-len", "48",
                    "--random-output-len", "16", "--random-range-ratio", "0.5", "--num-prompts", str(num),
                    "--request-rate", str(a.rate), "--ignore-eos", "--seed", str(self.rng.randrange(1 << 30)),
                    "--request-timeout", str(self.deadline_s() + 30), "--save-result", out, "--progress", "none",
                    "--no-server-metrics", "--num-warmups", "0"]
            launched = time.monotonic()
            try:
                r = subprocess.run(argv, capture_output=True, text=True, env=self.env,
                                   timeout=a.batch_s + self.deadline_s() + 60)
            except subprocess.TimeoutExpired:
                self.violate("stream_hang", f"tandem bench serve against {fe} did not finish within "
                             f"{a.batch_s + self.deadline_s() + 60:.0f} s")
                continue
            if r.returncode != 0 or not os.path.exists(out):
                # The frontend was down when the run began (bench serve checks /v1/models first).
                self.count("bench_runs_refused")
                time.sleep(0.3)
                continue
            self.count("bench_runs")
            with open(out) as f:
                result = json.load(f)
            os.remove(out)
            self.check_requests(fe, launched, result)

    def deadline_s(self):
        return self.a.request_timeout_s + self.a.grace_s

    def stopped_seconds(self, fe, t0, t1):
        total = 0.0
        for start, end in self.down.get(fe, []):
            end = end if end is not None else time.monotonic()
            total += max(0.0, min(end, t1) - max(start, t0))
        return total

    def killed_between(self, fe, t0, t1):
        return any(t0 - 1 <= t <= t1 + 1 for t in self.kills_at.get(fe, []))

    def check_requests(self, fe, launched, result):
        for run in result.get("runs", [result]):
            for q in run.get("requests", []):
                self.count("requests")
                start = launched + (q.get("start_s") or 0)
                end = launched + (q.get("end_s") or 0)
                took = (q.get("end_s") or 0) - (q.get("start_s") or 0)
                # The run's clock starts after bench serve's own set-up: the window is padded by 2 s.
                allowed = self.deadline_s() + self.stopped_seconds(fe, start - 2, end + 2)
                if took > allowed:
                    self.violate("request_deadline", f"{fe}: a request took {took:.1f} s > {allowed:.1f} s "
                                 f"({q.get('error') or 'succeeded'})")
                if q.get("success"):
                    self.count("succeeded")
                    continue
                err = q.get("error", "")
                status = q.get("http_status", 0)
                reason = self.reason(err, status)
                self.count("failures", reason)
                if reason == "http_429":
                    self.count("rejected_429")
                if "--request-timeout" in err:
                    self.violate("stream_hang", f"{fe}: the client's own timeout ended a request: {err}")
                elif status and status not in OK_STATUSES:
                    self.violate("unexpected_status", f"{fe}: HTTP {status}: {err[:160]}")
                elif reason in ("stream_cut", "connection_lost") and not self.killed_between(fe, start - 2, end + 2):
                    self.violate("stream_cut", f"{fe}: {err[:160]} with no SIGKILL of {fe} while it ran")

    @staticmethod
    def reason(err, status):
        if err.startswith("HTTP "):
            return f"http_{status}"
        if err.startswith("server sent an error event"):
            msg = err.split(":", 1)[1].strip().lower()
            msg = re.sub(r"[0-9a-f]{8,}|\d+(\.\d+)?", "N", msg)
            return "error_event: " + msg[:60]
        if "no [DONE]" in err:
            return "stream_cut"
        if "refused" in err.lower():
            return "connection_refused"
        if "reset" in err.lower() or "end of file" in err.lower() or "broken pipe" in err.lower():
            return "connection_lost"
        return "other: " + err[:60]

    # -- chaos ------------------------------------------------------------------------------------
    def chaos_loop(self):
        targets = ["prefill-0", "prefill-1", "decode-0", "decode-1", "frontend-0", "frontend-1", "etcd", "nats"]
        actions = ["SIGKILL", "SIGTERM", "SIGSTOP"]
        while not self.stop_chaos.wait(self.rng.uniform(self.a.kill_interval * 0.5, self.a.kill_interval * 1.5)):
            name, action = self.rng.choice(targets), self.rng.choice(actions)
            if name in self.a.long_lived:
                action = "SIGSTOP"  # stopped, never ended: its growth is judged over the whole run
            self.hit(name, action)

    def hit(self, name, action):
        p = self.procs[name]
        with self.action_lock:
            self.acting_on = name
        log(f"{action} {name} (pid {p.pid})")
        self.count("kills", f"{action} {p.kind}")
        now = time.monotonic()
        if action == "SIGSTOP":
            pause = self.rng.uniform(0.5, self.a.max_stop_s)
            p.stopped = True
            self.down.setdefault(name, []).append([now, None])
            p.send(signal.SIGSTOP)
            time.sleep(pause)
            p.send(signal.SIGCONT)
            p.stopped = False
            self.down[name][-1][1] = time.monotonic()
        else:
            p.expected_exit = True
            self.down.setdefault(name, []).append([now, None])
            if action == "SIGKILL":
                self.kills_at.setdefault(name, []).append(now)
                p.send(signal.SIGKILL)
                p.wait_exit(10)
            else:
                p.send(signal.SIGTERM)
                limit = {"frontend": self.a.request_timeout_s + 5, "prefill": 8, "decode": 8}.get(p.kind, 5) + 10
                if not p.wait_exit(limit):
                    self.violate("term_hang", f"{name} still running {limit:.0f} s after SIGTERM")
                    p.send(signal.SIGKILL)
                    p.wait_exit(10)
            time.sleep(self.rng.uniform(0.2, 1.0))
            p.start()
            if not p.wait_ready(60):
                self.violate("unexpected_exit", f"{name} did not come back after {action} (log {p.log_path})")
            self.down[name][-1][1] = time.monotonic()
        # Every worker must be listed again by every frontend (a restarted one with its new pid).
        if not self.wait_all_listed(self.a.rejoin_timeout):
            self.violate("rejoin", f"after {action} {name}, not every worker was listed by every frontend within "
                         f"{self.a.rejoin_timeout:.0f} s: {self.listing_summary()}")
        with self.action_lock:
            self.acting_on = None

    def listing_summary(self):
        parts = []
        for fe in ("frontend-0", "frontend-1"):
            m = self.frontend_metrics(fe)
            if m is None:
                parts.append(f"{fe}: no /metrics")
                continue
            listed = sorted(f"{l.get('worker')}:{l.get('pid')}{'(draining)' if l.get('draining') == 'true' else ''}"
                            for n, l, v in m if n == "tandem_worker_info")
            parts.append(f"{fe} lists {listed}")
        parts.append("pids " + " ".join(f"{w}:{self.procs[w].pid}" for w in WORKER_IDS))
        return "; ".join(parts)

    def monitor_loop(self):
        """Processes that exit without being signalled."""
        while not self.stop_chaos.wait(0.5):
            for name, p in self.procs.items():
                with self.action_lock:
                    busy = self.acting_on == name
                if busy or p.expected_exit or p.alive():
                    continue
                self.violate("unexpected_exit", f"{name} (pid {p.pid}) exited with {p.popen.returncode} "
                             f"(log {p.log_path})")
                p.start()
                p.wait_ready(60)

    # -- idle points ------------------------------------------------------------------------------
    def idle_check(self, label):
        """With no load and no chaos: KV back to 0 everywhere, then one resource sample per process."""
        deadline = time.monotonic() + self.a.idle_timeout
        bad = ""
        while time.monotonic() < deadline:
            bad = self.kv_in_use()
            if not bad:
                break
            time.sleep(0.3)
        if bad:
            self.violate("kv_leak", f"{label}: {self.a.idle_timeout:.0f} s after the load stopped: {bad}")
        sample = {"label": label, "at": time.monotonic(), "procs": {}}
        for name, p in self.procs.items():
            res = proc_resources(p.pid) if p.alive() else None
            if res is None:
                continue
            rss, threads, fds = res
            sample["procs"][name] = {"pid": p.pid, "incarnation": p.incarnation, "kind": p.kind,
                                     "rss_mib": round(rss / 1024, 1), "threads": threads, "fds": fds}
        self.samples.append(sample)
        self.check_growth(sample)
        log(f"idle point '{label}': " + ", ".join(
            f"{n} {s['rss_mib']}MiB/{s['threads']}t/{s['fds']}fd" for n, s in sample["procs"].items()))

    def kv_in_use(self):
        for fe in ("frontend-0", "frontend-1"):
            m = self.frontend_metrics(fe)
            if m is None:
                return f"{fe} does not answer /metrics"
            held = [f"{n}{{{l.get('worker', '')}}}={v:g}" for n, l, v in m if v != 0 and n in (
                "tandem_worker_kv_blocks_used", "tandem_worker_kv_reservations", "tandem_worker_prefills_in_flight",
                "tandem_requests_active")]
            if held:
                return f"{fe}: " + ", ".join(held)
        return ""

    def check_growth(self, sample):
        a = self.a
        for name, s in sample["procs"].items():
            if s["kind"] in ("etcd", "nats"):
                continue  # not ours: reported, not judged
            key = (name, s["incarnation"])
            base = self.baselines.setdefault(key, s)
            role = self.role_baselines.setdefault(s["kind"], s)
            if base is not s:
                if s["rss_mib"] - base["rss_mib"] > a.max_rss_growth_mib:
                    self.violate("resource_growth", f"{name} RSS {base['rss_mib']} -> {s['rss_mib']} MiB")
                if s["fds"] - base["fds"] > a.max_fd_growth:
                    self.violate("resource_growth", f"{name} open fds {base['fds']} -> {s['fds']}")
                if s["threads"] - base["threads"] > a.max_thread_growth:
                    self.violate("resource_growth", f"{name} threads {base['threads']} -> {s['threads']}")
            elif role is not s:
                if s["fds"] - role["fds"] > a.max_fd_growth:
                    self.violate("resource_growth", f"{name} (restarted) open fds {s['fds']} vs its role's {role['fds']}")
                if s["threads"] - role["threads"] > a.max_thread_growth:
                    self.violate("resource_growth",
                                 f"{name} (restarted) threads {s['threads']} vs its role's {role['threads']}")

    # -- the run ----------------------------------------------------------------------------------
    def run_load(self, seconds, chaos):
        self.stop_load.clear()
        self.stop_chaos.clear()
        threads = [threading.Thread(target=self.load_loop, args=(fe,), daemon=True) for fe in ("frontend-0", "frontend-1")]
        threads.append(threading.Thread(target=self.monitor_loop, daemon=True))
        if chaos:
            threads.append(threading.Thread(target=self.chaos_loop, daemon=True))
        for t in threads:
            t.start()
        time.sleep(seconds)
        self.stop_chaos.set()  # the chaos thread finishes (and restarts) what it is doing
        for t in threads[2:]:
            t.join()
        self.stop_load.set()
        for t in threads[:2]:
            t.join()
        if not self.wait_all_listed(self.a.rejoin_timeout):
            self.violate("rejoin", f"at the end of a round: {self.listing_summary()}")

    def run(self):
        a = self.a
        started = time.monotonic()
        log(f"warm-up: {a.warmup:.0f} s of load without chaos")
        self.run_load(a.warmup, chaos=False)
        self.idle_check("warm-up")
        remaining = a.duration
        while remaining > 0:
            this = min(a.round, remaining)
            self.stats["rounds"] += 1
            log(f"round {self.stats['rounds']}: {this:.0f} s of load and chaos")
            self.run_load(this, chaos=True)
            remaining -= this
            self.idle_check(f"after round {self.stats['rounds']}")
        self.stats["wall_s"] = round(time.monotonic() - started, 1)

    def teardown(self):
        for p in self.procs.values():
            p.stop_for_good()
        if not self.a.keep and not self.violations:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            log(f"logs kept in {self.dir}")

    def summary(self):
        growth = {}
        for name in self.procs:
            seen = [(smp["label"], smp["procs"][name]) for smp in self.samples if name in smp["procs"]]
            by_inc = {}
            for label, s in seen:
                by_inc.setdefault(s["incarnation"], []).append(s)
            first_inc = min(by_inc) if by_inc else None
            growth[name] = {
                "incarnations": self.procs[name].incarnation,
                "idle_samples": [{"label": label, **{k: s[k] for k in ("incarnation", "rss_mib", "threads", "fds")}}
                                 for label, s in seen],
            }
            if first_inc is not None and len(by_inc[first_inc]) > 1:
                f, l = by_inc[first_inc][0], by_inc[first_inc][-1]
                growth[name]["longest_lived_growth"] = {"rss_mib": round(l["rss_mib"] - f["rss_mib"], 1),
                                                        "threads": l["threads"] - f["threads"], "fds": l["fds"] - f["fds"]}
        return {"stats": self.stats, "violations": [{"invariant": i, "detail": d} for i, d in self.violations],
                "processes": growth,
                "settings": {k: v for k, v in vars(self.a).items() if k not in ("tandem", "etcd", "nats_server")}}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tandem", default=os.path.join(here, "..", "build", "tandem"))
    ap.add_argument("--data-dir", default=os.environ.get("TANDEM_DATA_DIR", os.path.join(here, "..", "data")))
    ap.add_argument("--duration", type=float, default=60, help="seconds of load under chaos (after the warm-up)")
    ap.add_argument("--round", type=float, default=0, help="seconds between idle checks (default: --duration)")
    ap.add_argument("--warmup", type=float, default=10, help="seconds of load before the first idle point")
    ap.add_argument("--kill-interval", type=float, default=4, help="mean seconds between two hits")
    ap.add_argument("--max-stop-s", type=float, default=3, help="longest SIGSTOP before SIGCONT")
    ap.add_argument("--rate", type=float, default=1.0, help="requests per second per frontend")
    ap.add_argument("--batch-s", type=float, default=8, help="seconds of arrivals per bench serve run")
    ap.add_argument("--request-timeout-s", type=float, default=10, help="the frontends' --request-timeout-s")
    ap.add_argument("--grace-s", type=float, default=6, help="beyond the deadline before a request counts as late")
    ap.add_argument("--rejoin-timeout", type=float, default=30)
    ap.add_argument("--idle-timeout", type=float, default=30)
    ap.add_argument("--max-rss-growth-mib", type=float, default=64)
    ap.add_argument("--max-fd-growth", type=int, default=8)
    ap.add_argument("--max-thread-growth", type=int, default=4)
    ap.add_argument("--long-lived", default="frontend-1,prefill-1,decode-1",
                    help="processes only ever SIGSTOPped, so that their RSS, fds and threads are compared over the "
                         "whole run ('' for none)")
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--summary", help="write the figures here (JSON)")
    ap.add_argument("--keep", action="store_true", help="keep the working directory (logs) even when all held")
    a = ap.parse_args()
    if a.round <= 0:
        a.round = a.duration
    a.long_lived = [n for n in a.long_lived.split(",") if n]
    a.tandem = os.path.abspath(a.tandem)
    a.etcd = shutil.which("etcd") or ""
    a.nats_server = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin:/usr/local/bin") or ""
    missing = [n for n, p in (("etcd", a.etcd), ("nats-server", a.nats_server)) if not p]
    if not os.path.exists(os.path.join(a.data_dir, "tokenizers", "qwen3", "tokenizer.json")):
        missing.append("the Qwen3 tokenizer (scripts/fetch_data.sh)")
    if missing:
        ci = os.environ.get("CI", "")
        print(f"chaos_soak: missing {', '.join(missing)} (scripts/setup.sh installs etcd and nats-server)", file=sys.stderr)
        return 2 if ci not in ("", "0", "false") else 77
    log(f"seed {a.seed}")
    soak = Soak(a)
    try:
        soak.setup()
    except Exception as e:  # noqa: BLE001 - any set-up failure ends the run with its reason
        print(f"chaos_soak: set-up failed: {e}", file=sys.stderr)
        if hasattr(soak, "procs"):
            soak.a.keep = True
            soak.teardown()
        return 2
    try:
        soak.run()
    finally:
        soak.teardown()
    s = soak.summary()
    if a.summary:
        with open(a.summary, "w") as f:
            json.dump(s, f, indent=1)
    st = s["stats"]
    log(f"requests {st['requests']}, succeeded {st['succeeded']}, failures {json.dumps(st['failures'], sort_keys=True)}")
    log(f"hits {json.dumps(st['kills'], sort_keys=True)}; bench runs {st['bench_runs']} "
        f"(+{st['bench_runs_refused']} refused at start)")
    for name, g in s["processes"].items():
        if "longest_lived_growth" in g:
            log(f"{name}: growth over its longest-lived incarnation {g['longest_lived_growth']}")
    if soak.violations:
        names = sorted({i for i, _ in soak.violations})
        print(f"chaos_soak: FAILED, violated: {', '.join(names)}", file=sys.stderr)
        for i, d in soak.violations:
            print(f"  {i}: {d}", file=sys.stderr)
        return 1
    if st["succeeded"] == 0:
        print("chaos_soak: FAILED, violated: progress (no request succeeded)", file=sys.stderr)
        return 1
    log("all invariants held")
    return 0


if __name__ == "__main__":
    sys.exit(main())
