"""API load: concurrent readers while a sweep runs, and GET /sweeps/{id} at 1,000 trials x 1,000 points.

Two parts (issue 4), both on 127.0.0.1 only, both bounded (they stop by themselves):

1. **Read load while a sweep runs.** A temp SWEEPD_HOME with the built-in synthetic data,
   `sweepd token create`, `sweepd serve --port <free>` as a subprocess (API + supervisor; the
   supervisor runs the sweep with its controller, Ray Tune and DeepSpeed trials), a small version of
   examples/demo.yaml POSTed as YAML. Once the sweep is running and a trial has metric points,
   `--clients` (50) asyncio clients (one httpx.AsyncClient, a connection each) loop for
   `--duration` (20 s) over
       GET /api/v1/sweeps/{id}
       GET /api/v1/sweeps/{id}/trials
       GET /api/v1/trials/{tid}/metrics?max_points=200   (tid: a random trial of the last list)
       GET /api/v1/sweeps?limit=20
   with a bearer token of their own (reads need one: SWEEPD_PUBLIC_READ is off) that was never used
   before, so the service's once-a-minute write of the token's last_used_at (`repo.verify_token`)
   happens inside the window, as it does every minute in real use (`--warm-token`: used once just
   before, so no such write in a 20 s window). An error is a non-2xx status or an exception
   (timeouts included; the clients wait 45 s, longer than the service's own 30 s pool and SQLite
   waits, so its answer is what gets counted). Printed: requests, requests/s, errors, p50/p95/p99
   per route and overall (client-side: send to last byte, so queueing in the server included), the
   server's own mean per route (from its /metrics histogram), requests slower than 5 s, the
   service log's pool timeouts and "database is locked" errors, and whether the sweep was still
   running when the load stopped. Then a **burst** (`--burst` 50): that many new clients start at
   the same instant and read GET /sweeps/{id} in a loop for 5 s with a token never used before
   (the last_used_at write due at once). Then the sweep is cancelled and the service stopped
   (SIGTERM); descendants of the service still alive 20 s later are reported and sent SIGTERM.

2. **Detail latency at scale.** One sweep with `--trials` (1,000) trials x `--points` (1,000)
   metric points, seeded into a fresh database on SQLite and on PostgreSQL (a throwaway server
   from scripts/postgres.sh, stopped afterwards). The sweep is *running* (so the best trial is
   computed live, the costlier path), two thirds of its trials completed, a third stopped with a
   decision event each. Sweep, trials, events, ledger and token go through the store repository;
   trial 1's points through `repo.add_metric_points` (timed); the other 999,000 points through the
   driver's bulk path (sqlite3 executemany / PostgreSQL COPY) into the same table and columns,
   because add_metric_points builds and compiles one multi-row VALUES statement per batch (0.15 to
   0.7 s per 1,000 points on this machine: several minutes per backend for a million).
   PostgreSQL gets an ANALYZE after the load (what autovacuum does within a minute). Then
   `sweepd serve --no-supervise` serves it (a subprocess: the client does not share its
   interpreter) and GET /api/v1/sweeps/{id} is timed: `--warmup`
   requests, `--sequential` (300) one after another on a keep-alive connection, then
   `--concurrent` (10) clients x `--per-client` (50). Target: p95 < 50 ms for the sequential
   requests (one request's latency; with 10 clients on one server process the latency is mostly
   queueing, ~10 / throughput, printed next to it). Finally the route is profiled in-process: its
   SQL statements (through the real app with httpx's ASGITransport, no network) counted and timed
   with SQLAlchemy `before/after_cursor_execute` events, and the route's work without the framework
   split into SQL and the rest (the stored spec is read as it is, never re-validated: #15).

The machine is shared: before each part the load average is printed, and during each measured
window /proc/stat says how many cores *other* processes (not this benchmark, its service, the
sweep's processes or its PostgreSQL) kept busy; above 0.25 of a core the window is marked
"contended".

Run: `make bench`, or `.venv/bin/python benchmarks/api_load.py [--part load|detail|all]
[--duration 20] [--clients 50] [--burst 50] [--warm-token] [--trials 1000] [--points 1000]
[--no-postgres] [--keep] [--out FILE]`. Writes benchmarks/results/api_load.json.
A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DS_ACCELERATOR", "cpu")

import httpx  # noqa: E402
import yaml  # noqa: E402

from benchmarks.throwaway_postgres import with_postgres  # noqa: E402

API = "/api/v1"
TARGET_P95_MS = 50.0
CONTENDED_CORES = 0.25
CLIENT_TIMEOUT_S = 45.0  # longer than the service's own 30 s waits (pool checkout, SQLite busy): its answer is seen
STALL_S = 5.0
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
NCPU = os.cpu_count() or 1
LOAD_ROUTES = ("sweep", "trials", "metrics", "list")
ROUTE_PATHS = {
    "sweep": "GET /api/v1/sweeps/{id}",
    "trials": "GET /api/v1/sweeps/{id}/trials",
    "metrics": "GET /api/v1/trials/{tid}/metrics?max_points=200",
    "list": "GET /api/v1/sweeps?limit=20",
}
SERVER_TEMPLATES = {
    "sweep": "/api/v1/sweeps/{sweep_id}",
    "trials": "/api/v1/sweeps/{sweep_id}/trials",
    "metrics": "/api/v1/trials/{trial_id}/metrics",
    "list": "/api/v1/sweeps",
}


def log(msg: str = "") -> None:
    print(msg, flush=True)


def note(msg: str) -> None:
    print(f"  .. {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------ the shared machine


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(ppid, utime + stime + cutime + cstime) of a process, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            f = fh.read().rsplit(")", 1)[1].split()
        return int(f[1]), int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    except (OSError, ValueError, IndexError):
        return None


def process_tree(roots: list[int]) -> dict[int, int]:
    """{pid: cpu jiffies} of the roots and all their descendants (reaped children's time is in
    their parent's cutime/cstime)."""
    stats: dict[int, tuple[int, int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _proc_stat(int(name))
            if st is not None:
                stats[int(name)] = st
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    out: dict[int, int] = {}
    todo = [r for r in roots if r in stats]
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        out[pid] = stats[pid][1]
        todo += children.get(pid, [])
    return out


class CpuWatch:
    """How many cores the whole machine, and the processes that are not ours, kept busy."""

    def __init__(self, extra_roots: list[int] | None = None):
        self.roots = [os.getpid(), *(extra_roots or [])]

    @staticmethod
    def _busy() -> int:
        with open("/proc/stat") as fh:
            v = [int(x) for x in fh.readline().split()[1:]]
        return sum(v[:8]) - v[3] - v[4]  # user nice system idle iowait irq softirq steal

    def __enter__(self) -> CpuWatch:
        self.result: dict[str, Any] = {}
        try:
            self.t0, self.b0, self.tree0 = time.perf_counter(), self._busy(), process_tree(self.roots)
            self.ok = True
        except OSError:
            self.ok = False
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.ok:
            return
        t1, b1, tree1 = time.perf_counter(), self._busy(), process_tree(self.roots)
        dt = t1 - self.t0
        # processes that exited in the window took their time with them (unless reaped by one of
        # ours): a slight overestimate of "others" at worst
        ours = sum(j - self.tree0.get(pid, 0) for pid, j in tree1.items())
        busy = b1 - self.b0
        self.result = {
            "seconds": round(dt, 2),
            "busy_cores": round(busy / CLK_TCK / dt, 2),
            "our_cores": round(ours / CLK_TCK / dt, 2),
            "client_cores": round((tree1.get(os.getpid(), 0) - self.tree0.get(os.getpid(), 0)) / CLK_TCK / dt, 2),
            "other_cores": round(max(0.0, (busy - ours) / CLK_TCK / dt), 2),
            "load_average": loadavg(),
        }
        self.result["contended"] = self.result["other_cores"] > CONTENDED_CORES

    def describe(self) -> str:
        r = self.result
        if not r:
            return "cpu: n/a"
        flag = "  ** CONTENDED: other processes used the CPUs **" if r["contended"] else ""
        return (f"cpu over {r['seconds']:.0f} s: machine {r['busy_cores']:.2f} of {NCPU} cores busy, this "
                f"benchmark + its service {r['our_cores']:.2f} (the clients' process {r['client_cores']:.2f}), "
                f"others {r['other_cores']:.2f}; "
                f"load average {r['load_average']}{flag}")


# ------------------------------------------------------------------------------------ helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile (q in 0..1) of a non-empty list."""
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(round(q * len(v) + 0.5)) - 1))
    return v[k]


def summary(latencies_s: list[float]) -> dict[str, Any]:
    if not latencies_s:
        return {"n": 0}
    ms = [1000 * x for x in latencies_s]
    return {"n": len(ms), "p50_ms": round(quantile(ms, 0.50), 2), "p95_ms": round(quantile(ms, 0.95), 2),
            "p99_ms": round(quantile(ms, 0.99), 2), "mean_ms": round(statistics.fmean(ms), 2),
            "max_ms": round(max(ms), 2)}


def fmt_ms(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:.1f} ms" if x < 100 else f"{x:.0f} ms"


def sweepd_cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sweepd.cli", *args], env=env, cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout)


def start_serve(env: dict[str, str], port: int, log_path: Path, *extra: str) -> subprocess.Popen:
    fh = open(log_path, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "sweepd.cli", "serve", "--host", "127.0.0.1",
                             "--port", str(port), *extra],
                            env=env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    fh.close()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"sweepd serve exited at start-up:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.3)
    stop_process(proc)
    raise RuntimeError(f"sweepd serve did not become healthy in 90 s:\n{log_path.read_text()[-3000:]}")


def stop_process(proc: subprocess.Popen, timeout: float = 60) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


def server_route_stats(base: str, headers: dict[str, str]) -> dict[str, tuple[int, float]]:
    """{route template: (count, seconds)} of GET requests, from the service's Prometheus /metrics."""
    out: dict[str, tuple[int, float]] = {}
    try:
        text = httpx.get(f"{base}/metrics", headers=headers, timeout=10).text
    except httpx.HTTPError:
        return out
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for line in text.splitlines():
        if not line.startswith("sweepd_http_request_duration_seconds_") or 'method="GET"' not in line:
            continue
        name, _, value = line.rpartition(" ")
        route = name.split('route="', 1)[1].split('"', 1)[0]
        if name.startswith("sweepd_http_request_duration_seconds_sum"):
            sums[route] = float(value)
        elif name.startswith("sweepd_http_request_duration_seconds_count"):
            counts[route] = int(float(value))
    for route, n in counts.items():
        out[route] = (n, sums.get(route, 0.0))
    return out


def server_means(before: dict, after: dict, templates: dict[str, str]) -> dict[str, float | None]:
    """Mean server-side time (ms) per route between two /metrics scrapes."""
    out: dict[str, float | None] = {}
    for key, tpl in templates.items():
        n0, s0 = before.get(tpl, (0, 0.0))
        n1, s1 = after.get(tpl, (0, 0.0))
        out[key] = round(1000 * (s1 - s0) / (n1 - n0), 2) if n1 > n0 else None
    return out


# ------------------------------------------------------------ part 1: load while a sweep runs


def small_demo_spec(data: Path, trials: int, max_samples: int) -> str:
    spec = yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text())
    spec["name"] = "api-load"
    spec["data"]["train"] = [{"path": str(data / "train.jsonl")}]
    spec["data"]["eval"] = [{"path": str(data / "eval.jsonl")}]
    spec["search"]["num_trials"] = trials
    spec["budget"] = {"max_samples": max_samples}
    spec["fixed"] = {"eval": {"max_items": 30}}
    return yaml.safe_dump(spec)


async def read_load(base: str, headers: dict[str, str], sweep_id: str, trial_ids: list[str], *,
                    clients: int, duration: float, max_requests: int) -> tuple[list[tuple], float]:
    """`clients` loops over the four routes until `duration` has passed (or `max_requests` were
    sent in all). Returns ([(route, latency_s, status_or_error)], elapsed_s)."""
    records: list[tuple[str, float, str]] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    t0 = time.perf_counter()
    deadline = t0 + duration
    sent = 0

    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits,
                                 timeout=httpx.Timeout(CLIENT_TIMEOUT_S)) as client:

        async def one(route: str, url: str, params: dict | None = None) -> httpx.Response | None:
            nonlocal sent
            sent += 1
            t = time.perf_counter()
            try:
                r = await client.get(url, params=params)
                await r.aread()
            except Exception as exc:  # noqa: BLE001 - every failure is counted, by kind
                records.append((route, time.perf_counter() - t, type(exc).__name__))
                return None
            records.append((route, time.perf_counter() - t, str(r.status_code)))
            return r

        async def worker(i: int) -> None:
            rng = random.Random(i)
            ids = list(trial_ids)
            await asyncio.sleep(rng.random() * 0.2)  # don't all start on the same tick
            while True:
                for route in LOAD_ROUTES:
                    if time.perf_counter() >= deadline or sent >= max_requests:
                        return
                    if route == "sweep":
                        await one(route, f"{API}/sweeps/{sweep_id}")
                    elif route == "trials":
                        r = await one(route, f"{API}/sweeps/{sweep_id}/trials")
                        if r is not None and r.status_code == 200:
                            ids = [t["id"] for t in r.json()["items"]] or ids
                    elif route == "metrics":
                        await one(route, f"{API}/trials/{rng.choice(ids)}/metrics", {"max_points": 200})
                    else:
                        await one(route, f"{API}/sweeps", {"limit": 20})

        await asyncio.gather(*(worker(i) for i in range(clients)))
    return records, time.perf_counter() - t0


async def burst(base: str, headers: dict[str, str], path: str, n: int, seconds: float) -> list[tuple[float, str]]:
    """n new clients start at once and GET `path` in a loop for `seconds`: [(latency_s, status)]."""
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    out: list[tuple[float, str]] = []
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits,
                                 timeout=httpx.Timeout(CLIENT_TIMEOUT_S)) as client:
        deadline = time.perf_counter() + seconds

        async def loop() -> None:
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                try:
                    r = await client.get(path)
                    out.append((time.perf_counter() - t, str(r.status_code)))
                except Exception as exc:  # noqa: BLE001
                    out.append((time.perf_counter() - t, type(exc).__name__))

        await asyncio.gather(*(loop() for _ in range(n)))
    return out


def _has_points(base: str, headers: dict[str, str], sweep_id: str) -> tuple[str, list[str], int]:
    """(sweep state, trial ids, points of the trial with most points among the first few)."""
    sweep = httpx.get(f"{base}{API}/sweeps/{sweep_id}", headers=headers, timeout=10).json()
    trials = httpx.get(f"{base}{API}/sweeps/{sweep_id}/trials", headers=headers, timeout=10).json()["items"]
    most = 0
    for t in trials:
        if t["state"] in ("running", "completed", "stopped"):
            pts = httpx.get(f"{base}{API}/trials/{t['id']}/metrics", params={"max_points": 2},
                            headers=headers, timeout=10).json()["points"]
            most = max(most, len(pts))
    return sweep["state"], [t["id"] for t in trials], most


def part_load(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from trainer.synthetic import make_data

    log(f"== part 1: {args.clients} clients reading while a sweep runs ==")
    log(f"load average before: {loadavg()} ({NCPU} cores)")
    data = tmp / "data"
    make_data(data, seed=0)
    env = dict(os.environ, SWEEPD_HOME=str(tmp / "home"), SWEEPD_DATA_ROOTS=str(tmp), DS_ACCELERATOR="cpu",
               PYTHONUNBUFFERED="1")
    for k in ("SWEEPD_DATABASE_URL", "SWEEPD_PUBLIC_READ", "SWEEPD_RAY_ADDRESS"):
        env.pop(k, None)
    created = sweepd_cli("token", "create", "api-load", env=env)
    if created.returncode != 0:
        raise RuntimeError(f"sweepd token create failed: {created.stderr[-2000:]}")
    token = created.stdout.strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {token}"}
    # The readers' own token: never used before the load, so the service's once-a-minute write of
    # its last_used_at (repo.verify_token) falls inside the window, as it does every minute in use.
    created = sweepd_cli("token", "create", "api-load-readers", env=env)
    if created.returncode != 0:
        raise RuntimeError(f"sweepd token create failed: {created.stderr[-2000:]}")
    readers = {"Authorization": f"Bearer {created.stdout.strip().splitlines()[-1]}"}
    created = sweepd_cli("token", "create", "api-load-burst", env=env)
    if created.returncode != 0:
        raise RuntimeError(f"sweepd token create failed: {created.stderr[-2000:]}")
    burst_headers = {"Authorization": f"Bearer {created.stdout.strip().splitlines()[-1]}"}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    serve_log = tmp / "serve-load.log"
    t_start = time.perf_counter()
    proc = start_serve(env, port, serve_log)
    result: dict[str, Any] = {"clients": args.clients, "duration_s": args.duration}
    tree_pids: set[int] = set()
    try:
        spec = small_demo_spec(data, args.sweep_trials, args.sweep_samples)
        r = httpx.post(f"{base}{API}/sweeps", content=spec, timeout=30,
                       headers={**headers, "Content-Type": "application/yaml"})
        if r.status_code != 201:
            raise RuntimeError(f"POST /sweeps: {r.status_code} {r.text[:500]}")
        sweep_id = r.json()["id"]
        note(f"sweep {sweep_id} submitted; waiting for it to run and report metric points")
        deadline = time.monotonic() + args.start_timeout
        state, ids, most = "queued", [], 0
        while time.monotonic() < deadline:
            state, ids, most = _has_points(base, headers, sweep_id)
            if state in ("succeeded", "failed", "cancelled"):
                raise RuntimeError(f"the sweep ended ({state}) before the load started; see {serve_log}")
            if state == "running" and most >= 1:
                break
            if proc.poll() is not None:
                raise RuntimeError(f"sweepd serve exited; see {serve_log}")
            time.sleep(1.0)
        else:
            raise RuntimeError(f"the sweep was not running with metric points after {args.start_timeout} s "
                               f"(state {state}); see {serve_log}")
        ready_s = time.perf_counter() - t_start
        log(f"sweep {sweep_id} running with metric points {ready_s:.0f} s after `sweepd serve` started "
            f"({len(ids)} trials so far)")

        if args.warm_token:  # its last_used_at written now: no such write for the next minute
            httpx.get(f"{base}{API}/sweeps?limit=1", headers=readers, timeout=30).raise_for_status()
        result["token_touch_in_window"] = not args.warm_token
        before = server_route_stats(base, headers)
        with CpuWatch() as cpu:
            records, elapsed = asyncio.run(read_load(base, readers, sweep_id, ids, clients=args.clients,
                                                     duration=args.duration, max_requests=args.max_requests))
            tree_pids = set(process_tree([proc.pid]))
        after = server_route_stats(base, headers)
        sweep = httpx.get(f"{base}{API}/sweeps/{sweep_id}", headers=headers, timeout=30).json()

        per_route: dict[str, Any] = {}
        for route in LOAD_ROUTES:
            mine = [rec for rec in records if rec[0] == route]
            errors: dict[str, int] = {}
            for _, _, st in mine:
                if not (st.isdigit() and 200 <= int(st) < 300):
                    errors[st] = errors.get(st, 0) + 1
            per_route[route] = {"path": ROUTE_PATHS[route], **summary([rec[1] for rec in mine]),
                                "errors": sum(errors.values()), "errors_by_kind": errors}
        means = server_means(before, after, SERVER_TEMPLATES)
        for route in LOAD_ROUTES:
            per_route[route]["server_mean_ms"] = means[route]
        total_errors = sum(v["errors"] for v in per_route.values())
        stalled = sum(1 for rec in records if rec[1] > STALL_S)
        serve_text = serve_log.read_text(errors="replace")
        server_errors = {"pool_timeouts": serve_text.count("QueuePool limit"),
                         "database_locked": serve_text.count("database is locked")}
        result.update(stalled=stalled, server_log=server_errors)
        result.update(
            sweep_id=sweep_id, ready_after_s=round(ready_s, 1), elapsed_s=round(elapsed, 2),
            requests=len(records), errors=total_errors, requests_per_s=round(len(records) / elapsed, 1),
            overall=summary([rec[1] for rec in records]), routes=per_route, cpu=cpu.result,
            sweep_state_after=sweep["state"], progress_after=sweep["progress"],
        )
        log(f"{len(records)} requests in {elapsed:.1f} s from {args.clients} clients: "
            f"{len(records) / elapsed:.0f} req/s, {total_errors} errors")
        log(f"  {'route':50s} {'n':>6s} {'errors':>6s} {'p50':>9s} {'p95':>9s} {'p99':>9s} {'server mean':>12s}")
        for route in LOAD_ROUTES:
            v = per_route[route]
            log(f"  {v['path']:50s} {v.get('n', 0):6d} {v['errors']:6d} {fmt_ms(v.get('p50_ms')):>9s} "
                f"{fmt_ms(v.get('p95_ms')):>9s} {fmt_ms(v.get('p99_ms')):>9s} {fmt_ms(v['server_mean_ms']):>12s}")
        o = result["overall"]
        log(f"  {'all':50s} {o['n']:6d} {total_errors:6d} {fmt_ms(o['p50_ms']):>9s} {fmt_ms(o['p95_ms']):>9s} "
            f"{fmt_ms(o['p99_ms']):>9s}")
        for route in LOAD_ROUTES:
            if per_route[route]["errors"]:
                log(f"  errors on {ROUTE_PATHS[route]}: {per_route[route]['errors_by_kind']}")
        log(f"  requests over {STALL_S:.0f} s: {stalled}; the service's log: {server_errors['pool_timeouts']} "
            f"connection-pool timeouts, {server_errors['database_locked']} 'database is locked'; readers' token "
            + ("used for the first time in the window (its last_used_at written then)" if not args.warm_token
               else "used just before the window (no last_used_at write in it)"))
        p = sweep["progress"]
        log(f"sweep after the load: {sweep['state']} ({p['finished']} of {p['planned']} trials finished, "
            f"{p['running']} running)")
        log(cpu.describe())

        if args.burst:
            # the same clients, all at one instant, with a token whose last_used_at write is due
            shots = asyncio.run(burst(base, burst_headers, f"{API}/sweeps/{sweep_id}", args.burst, 5.0))
            statuses: dict[str, int] = {}
            for _, st in shots:
                statuses[st] = statuses.get(st, 0) + 1
            lat = [x for x, _ in shots]
            result["burst"] = {"requests": len(shots), "statuses": statuses, **summary(lat),
                               "errors": sum(n for st, n in statuses.items() if st != "200")}
            b = result["burst"]
            log(f"burst: {args.burst} new clients starting at once, GET {API}/sweeps/{{id}} for 5 s with a token "
                f"never used before (its last_used_at write due): {len(shots)} requests, {b['errors']} errors "
                f"{statuses}, p50 {fmt_ms(b['p50_ms'])}, slowest {fmt_ms(b['max_ms'])}")

        r = httpx.post(f"{base}{API}/sweeps/{sweep_id}/cancel", headers=headers, timeout=30)
        result["cancel_status"] = r.status_code
        note(f"cancel: {r.status_code}")
    finally:
        if proc.poll() is None:
            tree_pids |= set(process_tree([proc.pid]))
        rc = stop_process(proc)
        result["serve_exit"] = rc
        deadline = time.monotonic() + 20  # the controller, Ray and trials go down with the service
        left = [pid for pid in tree_pids - {proc.pid} if _proc_stat(pid) is not None]
        while left and time.monotonic() < deadline:
            time.sleep(0.5)
            left = [pid for pid in left if _proc_stat(pid) is not None]
        names = []
        for pid in left:  # the service's own descendants only, by pid
            try:
                names.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()[:100])
                os.kill(pid, signal.SIGTERM)
            except (OSError, ProcessLookupError):
                pass
        result["leftover_processes"] = names
        log(f"sweepd serve stopped ({'SIGTERM' if rc == -signal.SIGTERM else f'exit {rc}'}); "
             + (f"{len(left)} of its descendants still alive 20 s later, sent SIGTERM: {names}" if left
                else "none of its descendants left"))
    return result


# ------------------------------------------------------- part 2: GET /sweeps/{id} at scale


def curve(n_points: int, seed: int) -> list[tuple]:
    """(step, samples, tokens, loss, grad_norm, lr, seconds) for one trial, cheap and plausible."""
    rng = random.Random(seed)
    batch = (8, 16, 32, 64)[seed % 4]
    loss0, decay = 2.5 + rng.random(), 0.002 + 0.004 * rng.random()
    out = []
    loss, gn = loss0, 2.0 + rng.random()
    for step in range(1, n_points + 1):
        loss = loss * (1 - decay) + decay * 0.8 + (rng.random() - 0.5) * 0.01
        gn = gn * 0.998 + (rng.random() - 0.5) * 0.05
        out.append((step, step * batch, step * batch * 133, round(loss, 5), round(abs(gn), 5), 1e-4, step * 0.05))
    return out


COLS = ("step", "samples", "tokens", "loss", "grad_norm", "lr", "seconds")


def seed_database(url: str, n_trials: int, n_points: int) -> dict[str, Any]:
    """One running sweep of n_trials x n_points; returns sweep id, token and timings."""
    from sqlalchemy import text

    from sweepd.engine.ledger import TrialCost, compute_ledger
    from sweepd.spec import Capacity, parse_spec
    from sweepd.store import make_engine, repo, session_scope, upgrade

    t0 = time.perf_counter()
    upgrade(url)
    raw = yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text())
    raw["name"] = f"scale-{n_trials}x{n_points}"
    raw["search"]["num_trials"] = n_trials
    spec = json.loads(parse_spec(raw, check_paths=False, capacity=Capacity.unlimited()).model_dump_json())
    engine = make_engine(url)
    costs = []
    with session_scope(engine) as s:
        _, token = repo.create_token(s, "api-load")
        sweep_id = repo.create_sweep(s, name=spec["name"], spec=spec).id
        repo.set_sweep_state(s, sweep_id, "running")
        for n in range(n_trials):
            pts = curve(n_points, n)
            last = pts[-1]
            stopped = n % 3 == 2
            reason = (f"stopped at {last[1]:,} samples: grad norm {last[4]:.3f} is 3rd of 3 at this rung; "
                      "the top 1 continues") if stopped else None
            repo.upsert_trial(
                s, sweep_id, n + 1,
                config={"effective_batch_size": (8, 16, 32, 64)[n % 4], "learning_rate": 1e-5 * 1.007 ** n,
                        "warmup_steps": (0, 10)[n % 2], "lr_scheduler": ("constant", "cosine")[n % 2]},
                state="stopped" if stopped else "completed",
                objective=None if stopped else round(last[3] - 0.05, 5),
                metrics_final=None if stopped else {"eval_loss": round(last[3] - 0.05, 5), "train_loss": last[3]},
                stopped_at=float(last[1]) if stopped else None, reason=reason, attempts=1,
                samples=last[1], tokens=last[2], seconds=last[6],
            )
            if stopped:
                repo.add_event(s, sweep_id, "decision", reason, trial_id=repo.trial_id_for(sweep_id, n + 1),
                               payload={"action": "stop", "trial_number": n + 1})
            costs.append(TrialCost("stopped" if stopped else "completed", last[1], last[2], last[6],
                                   n_points * last[1] // last[0]))
        repo.update_ledger(s, sweep_id, compute_ledger(costs), replace=True)
    t_trials = time.perf_counter() - t0

    # trial 1 through the repository's own write path, timed
    t = time.perf_counter()
    with session_scope(engine) as s:
        first = repo.trial_id_for(sweep_id, 1)
        repo.add_metric_points(s, first, [dict(zip(COLS, p)) for p in curve(n_points, 0)], batch_size=1000)
    t_repo = time.perf_counter() - t

    # the rest in bulk, through the driver
    t = time.perf_counter()
    cols = ("trial_id", *COLS)
    with engine.begin() as conn:
        raw_conn = conn.connection.driver_connection
        if engine.dialect.name == "sqlite":
            cur = raw_conn.cursor()
            sql = f"INSERT INTO sweepd_metric_points ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
            for n in range(1, n_trials):
                tid = repo.trial_id_for(sweep_id, n + 1)
                cur.executemany(sql, [(tid, *p) for p in curve(n_points, n)])
            cur.close()
        else:
            with raw_conn.cursor() as cur, cur.copy(f"COPY sweepd_metric_points ({', '.join(cols)}) FROM STDIN") as cp:
                for n in range(1, n_trials):
                    tid = repo.trial_id_for(sweep_id, n + 1)
                    for p in curve(n_points, n):
                        cp.write_row((tid, *p))
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")
    t_bulk = time.perf_counter() - t
    with session_scope(engine) as s:
        n_rows = s.execute(text("SELECT COUNT(*) FROM sweepd_metric_points")).scalar()
    engine.dispose()
    return {"sweep_id": sweep_id, "token": token, "metric_points": n_rows, "trials_s": round(t_trials, 1),
            "add_metric_points_1000_s": round(t_repo, 2), "bulk_points_s": round(t_bulk, 1),
            "seed_s": round(time.perf_counter() - t0, 1)}


async def concurrent_gets(base: str, path: str, headers: dict[str, str], clients: int,
                          per_client: int) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal errors
            for _ in range(per_client):
                t = time.perf_counter()
                try:
                    r = await client.get(path)
                    await r.aread()
                    ok = r.status_code == 200
                except Exception:  # noqa: BLE001
                    ok = False
                latencies.append(time.perf_counter() - t)
                errors += not ok

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return latencies, errors, time.perf_counter() - t0


def profile_detail(url: str, home: Path, sweep_id: str, token: str, n: int = 100) -> dict[str, Any]:
    """GET /sweeps/{id} in-process. Requests through the real app (httpx's ASGITransport: routing,
    middleware, dependencies, response validation; no network), their SQL statements counted with
    SQLAlchemy's before/after_cursor_execute events; then the route's own work timed without the
    framework (token check, sweep, its SweepDetail, JSON), split into SQL and the rest (the stored
    spec is read as it is: no re-validation since #15)."""
    from sqlalchemy import event

    from api import views
    from api.app import create_app
    from sweepd.settings import Settings
    from sweepd.store import repo

    app = create_app(Settings(home=home, database_url=url, public_read=False))
    engine = app.state.engine
    current: list[tuple[str, float]] = []

    def before(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        conn.info.setdefault("t", []).append(time.perf_counter())

    def after(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        current.append((" ".join(statement.split()), time.perf_counter() - conn.info["t"].pop()))

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    headers = {"Authorization": f"Bearer {token}"}
    route_statements: list[str] = []
    asgi_ms: list[float] = []

    async def through_asgi() -> None:  # the real route and its dependencies, no network
        nonlocal route_statements
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://in-process", headers=headers) as client:
            for i in range(n + 10):
                current.clear()
                t = time.perf_counter()
                r = await client.get(f"{API}/sweeps/{sweep_id}")
                dt = time.perf_counter() - t
                assert r.status_code == 200, r.text
                route_statements = [sql for sql, _ in current]
                if i >= 10:
                    asgi_ms.append(1000 * dt)

    asyncio.run(through_asgi())

    def work() -> None:  # what the route does, without the framework
        with app.state.sessionmaker() as session:
            assert repo.verify_token(session, token) is not None
            detail = views.sweep_detail(session, views.sweep_or_404(session, sweep_id))
            detail.model_dump_json()
            session.commit()

    per_request: list[tuple[float, list[tuple[str, float]]]] = []
    for i in range(n + 10):
        current.clear()
        t = time.perf_counter()
        work()
        dt = time.perf_counter() - t
        if i >= 10:
            per_request.append((dt, list(current)))
    event.remove(engine, "before_cursor_execute", before)
    event.remove(engine, "after_cursor_execute", after)

    by_stmt: dict[str, list[float]] = {}
    for _, stmts in per_request:
        for sql, dt in stmts:
            by_stmt.setdefault(sql, []).append(dt)
    sql_ms = statistics.median(1000 * sum(dt for _, dt in stmts) for _, stmts in per_request)
    work_ms = statistics.median(1000 * dt for dt, _ in per_request)
    statements = sorted(
        ({"sql": sql[:200] + (" ..." if len(sql) > 200 else ""), "per_request": round(len(v) / len(per_request), 2),
          "median_ms": round(1000 * statistics.median(v), 3)} for sql, v in by_stmt.items()),
        key=lambda d: -d["median_ms"] * d["per_request"])
    engine.dispose()
    return {"route_statements": len(route_statements), "route_sql": route_statements,
            "asgi_request_ms_median": round(statistics.median(asgi_ms), 2), "work_runs": len(per_request),
            "work_ms_median": round(work_ms, 2), "sql_ms_median": round(sql_ms, 2),
            "other_ms": round(max(0.0, work_ms - sql_ms), 2),
            "statements": statements}


def measure_backend(name: str, url: str, args: argparse.Namespace, tmp: Path,
                    extra_roots: list[int]) -> dict[str, Any]:
    home = tmp / f"home-{name}"
    home.mkdir(parents=True, exist_ok=True)
    note(f"{name}: seeding {args.trials} trials x {args.points} points")
    seeded = seed_database(url, args.trials, args.points)
    log(f"{name}: seeded {seeded['metric_points']:,} metric points in {seeded['seed_s']:.0f} s "
        f"(sweep, trials, events, ledger via the repository {seeded['trials_s']:.1f} s; trial 1's "
        f"{args.points} points via repo.add_metric_points {seeded['add_metric_points_1000_s']:.2f} s; "
        f"the rest in bulk {seeded['bulk_points_s']:.1f} s)")
    env = dict(os.environ, SWEEPD_HOME=str(home), SWEEPD_DATABASE_URL=url, SWEEPD_DATA_ROOTS=str(tmp),
               PYTHONUNBUFFERED="1")
    env.pop("SWEEPD_PUBLIC_READ", None)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {seeded['token']}"}
    path = f"{API}/sweeps/{seeded['sweep_id']}"
    proc = start_serve(env, port, tmp / f"serve-{name}.log", "--no-supervise")
    result: dict[str, Any] = {"seed": {k: v for k, v in seeded.items() if k != "token"}}
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            for _ in range(args.warmup):
                client.get(path).raise_for_status()
            body = client.get(path)
            result["response_bytes"] = len(body.content)
            result["progress"] = body.json()["progress"]
            before = server_route_stats(base, headers)
            seq: list[float] = []
            errors = 0
            with CpuWatch(extra_roots) as cpu_seq:
                for _ in range(args.sequential):
                    t = time.perf_counter()
                    r = client.get(path)
                    seq.append(time.perf_counter() - t)
                    errors += r.status_code != 200
            mid = server_route_stats(base, headers)
        with CpuWatch(extra_roots) as cpu_conc:
            conc, conc_errors, conc_s = asyncio.run(
                concurrent_gets(base, path, headers, args.concurrent, args.per_client))
        after = server_route_stats(base, headers)
    finally:
        stop_process(proc)
    tpl = {"sweep": SERVER_TEMPLATES["sweep"]}
    result["sequential"] = {**summary(seq), "errors": errors, "server_mean_ms": server_means(before, mid, tpl)["sweep"],
                            "cpu": cpu_seq.result}
    result["concurrent"] = {**summary(conc), "clients": args.concurrent, "errors": conc_errors,
                            "requests_per_s": round(len(conc) / conc_s, 1),
                            "server_mean_ms": server_means(mid, after, tpl)["sweep"], "cpu": cpu_conc.result}
    s, c = result["sequential"], result["concurrent"]
    # The target is on one request's latency (sequential). With N clients on one server process the
    # latency is mostly queueing (~ N / throughput); those figures are printed next to it.
    result["target_met"] = s["p95_ms"] < TARGET_P95_MS
    log(f"{name}: GET {API}/sweeps/{{id}} ({result['response_bytes']:,} bytes)")
    log(f"  sequential  {s['n']:4d} requests: p50 {fmt_ms(s['p50_ms'])}, p95 {fmt_ms(s['p95_ms'])}, "
        f"p99 {fmt_ms(s['p99_ms'])} (server mean {fmt_ms(s['server_mean_ms'])}), {errors} errors")
    log(f"    {cpu_seq.describe()}")
    log(f"  {args.concurrent} clients  {c['n']:4d} requests: p50 {fmt_ms(c['p50_ms'])}, p95 {fmt_ms(c['p95_ms'])}, "
        f"p99 {fmt_ms(c['p99_ms'])} (server mean {fmt_ms(c['server_mean_ms'])}), {c['requests_per_s']:.0f} req/s, "
        f"{conc_errors} errors")
    log(f"    {cpu_conc.describe()}")

    prof = profile_detail(url, home, seeded["sweep_id"], seeded["token"])
    result["profile"] = prof
    log(f"  profile (medians): {prof['route_statements']} SQL statements per request; served (uvicorn, server "
        f"side) {fmt_ms(s['server_mean_ms'])} mean, in-process through the app "
        f"{fmt_ms(prof['asgi_request_ms_median'])}, "
        f"the route's work alone {fmt_ms(prof['work_ms_median'])} = SQL {fmt_ms(prof['sql_ms_median'])} + the rest "
        f"(SQLAlchemy statement building, ORM rows, pydantic, JSON) {fmt_ms(prof['other_ms'])}")
    for st in prof["statements"]:
        log(f"    {st['median_ms']:6.2f} ms x{st['per_request']:g}  {st['sql'][:120]}")
    return result


def part_detail(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    log(f"== part 2: GET {API}/sweeps/{{id}} with {args.trials:,} trials x {args.points:,} points stored ==")
    log(f"load average before: {loadavg()} ({NCPU} cores)")
    out: dict[str, Any] = {"trials": args.trials, "points": args.points}
    out["sqlite"] = measure_backend("sqlite", f"sqlite:///{tmp / 'scale.db'}", args, tmp, [])
    if args.no_postgres:
        return out
    out["postgresql_version"] = subprocess.run(
        ["bash", "-c", "ls -d /usr/lib/postgresql/*/ | sort -V | tail -1"], text=True,
        capture_output=True).stdout.strip().rstrip("/").rsplit("/", 1)[-1]
    # the server's processes are ours for the CPU accounting
    out["postgresql"] = with_postgres(lambda pg: measure_backend("postgresql", pg.url, args, tmp, pg.pids()), log)
    note("postgresql stopped")
    return out


# ------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("all", "load", "detail"), default="all")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of read load")
    ap.add_argument("--max-requests", type=int, default=200_000, help="stop the read load after this many")
    ap.add_argument("--warm-token", action="store_true",
                    help="use the readers' token once just before the load, so that the service writes no "
                         "last_used_at for it during the window")
    ap.add_argument("--burst", type=int, default=50,
                    help="after the load: this many requests at one instant with a fresh token (0: none)")
    ap.add_argument("--sweep-trials", type=int, default=6, help="trials of the small demo sweep")
    ap.add_argument("--sweep-samples", type=int, default=2048, help="budget.max_samples of the small demo sweep")
    ap.add_argument("--start-timeout", type=float, default=240, help="seconds to wait for the sweep's first points")
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--points", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--sequential", type=int, default=300)
    ap.add_argument("--concurrent", type=int, default=10)
    ap.add_argument("--per-client", type=int, default=50)
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder (service logs, databases)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "api_load.json")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    start_load = loadavg()
    tmp = Path(tempfile.mkdtemp(prefix="sweepd-api-load-"))
    doc: dict[str, Any] = {
        "benchmark": "api_load", "argv": sys.argv[1:], "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": NCPU, "platform": platform.platform(), "python": platform.python_version(),
                    "httpx": httpx.__version__, "load_average_start": start_load},
        "target_p95_ms": TARGET_P95_MS,
    }
    try:
        if args.part in ("all", "load"):
            doc["load"] = part_load(args, tmp)
            log()
        if args.part in ("all", "detail"):
            doc["detail"] = part_detail(args, tmp)
            log()
    finally:
        if args.keep:
            log(f"kept {tmp} (service logs: serve-*.log)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    total = time.perf_counter() - t0
    doc["machine"]["load_average_end"] = loadavg()
    doc["total_s"] = round(total, 1)

    log("== summary ==")
    contended = []
    if "load" in doc:
        d = doc["load"]
        o = d["overall"]
        log(f"load: {d['clients']} clients, {d['elapsed_s']:.1f} s, {d['requests']} requests, {d['errors']} errors, "
            f"{d['requests_per_s']:.0f} req/s; p50 {fmt_ms(o['p50_ms'])}, p95 {fmt_ms(o['p95_ms'])}"
            + (f", {d['stalled']} requests over {STALL_S:.0f} s" if d["stalled"] else "")
            + f" (sweep still {d['sweep_state_after']} at the end; "
            + ("readers' token first used in the window)" if d["token_touch_in_window"] else "token warmed)"))
        if "burst" in d:
            b = d["burst"]
            log(f"burst: {args.burst} clients starting at once with a fresh token: {b['requests']} requests, "
                f"{b['errors']} errors {b['statuses']}, slowest {fmt_ms(b['max_ms'])}")
        if d["cpu"].get("contended"):
            contended.append("load")
    if "detail" in doc:
        d = doc["detail"]
        parts, met = [], True
        for name in ("sqlite", "postgresql"):
            r = d.get(name)
            if not r or "skipped" in r:
                continue
            s, c = r["sequential"], r["concurrent"]
            parts.append(f"{name} p50 {fmt_ms(s['p50_ms'])} p95 {fmt_ms(s['p95_ms'])} "
                         f"[{args.concurrent} clients: p50 {fmt_ms(c['p50_ms'])} p95 {fmt_ms(c['p95_ms'])}, "
                         f"{c['requests_per_s']:.0f} req/s]")
            met = met and r["target_met"]
            if s["cpu"].get("contended") or c["cpu"].get("contended"):
                contended.append(name)
        log(f"detail ({d['trials']} trials x {d['points']} points): " + "; ".join(parts)
            + f" (target p95 < {TARGET_P95_MS:.0f} ms: {'met' if met else 'NOT met'})")
        doc["detail"]["target_met"] = met
    if contended:
        log(f"note: other processes kept more than {CONTENDED_CORES} of a core busy during: {', '.join(contended)} "
            f"(load average {start_load} at the start, {doc['machine']['load_average_end']} at the end)")
    log(f"({total:.0f} s in all; {NCPU} cores; load average {start_load} -> {doc['machine']['load_average_end']})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    log(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
