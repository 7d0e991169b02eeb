"""Concurrent sweeps through one `sweepd serve` (issue 16): its one Ray, its trial slots and each
sweep's share against its fair share. Used by ``make bench-orchestration`` (section ``serve``) and
by tests/e2e/test_shared_cluster.py.

What runs is read from the processes under the service: its raylets (one per Ray instance; a
driver that started a Ray of its own would add one) and its trial actors (Ray names them
``ray::ImplicitFunc``; each holds its trial's CPU until the trial ends). Shares come from the store:
while every sweep competes (each running, each with trials still to start), the time-averaged
number of running trials of each sweep, against the cluster's slots split by priority weight.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import yaml

from sweepd.protocol import PRIORITY_WEIGHTS

REPO = Path(__file__).resolve().parents[1]
CORES = os.cpu_count() or 1
STEP_SECONDS = 0.25
TERMINAL = ("succeeded", "failed", "cancelled")


def replay_spec(name: str, *, trials: int, steps: int, priority: str = "normal", max_concurrent: int = 2) -> str:
    """A replay sweep whose every trial lasts steps x STEP_SECONDS on 1 CPU, no pruning."""
    return yaml.safe_dump({
        "name": name, "priority": priority,
        "model": {"path": "builtin:replay", "replay": {"curves": "builtin:curve_bank", "seconds_per_step": STEP_SECONDS,
                                                       "max_reports": steps}},
        "search": {"algorithm": "random", "num_trials": trials, "max_concurrent": max_concurrent, "seed": 0,
                   "space": {"effective_batch_size": {"choice": [8, 32, 128]},
                             "learning_rate": {"loguniform": [2.0e-4, 2.0e-2]}}},
        "budget": {"max_samples": 4096},
        "pruner": {"type": "none"},
        "objective": {"metric": "eval_loss", "mode": "min"},
        "resources": {"workers_per_trial": 1, "cpus_per_worker": 1, "gpus_per_worker": 0, "max_failures": 1},
    })


def _unix(stored: str) -> float:
    """A stored timestamp (ISO text; naive ones are UTC) as a Unix time."""
    at = datetime.fromisoformat(stored)
    return (at if at.tzinfo else at.replace(tzinfo=timezone.utc)).timestamp()


# ---- what runs under the service ----------------------------------------------------------------

def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def proc_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (state, ppid, ...), None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def descendants(pid: int) -> list[int]:
    return [child for child, _ in descendants_with_parents(pid)]


def descendants_with_parents(pid: int) -> list[tuple[int, int]]:
    """(pid, its parent's pid) of every process under ``pid``."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            if (fields := proc_fields(int(entry))) is not None:
                tree.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for child in tree.get(parent, []):
            found.append((child, parent))
            todo.append(child)
    return found


def ray_instances(serve_pid: int) -> int:
    """Raylets under the service: one per Ray instance. A raylet's child between its fork and its
    exec (a worker being started) still shows the raylet's command line, so a raylet counts only
    when its parent is not one."""
    procs = descendants_with_parents(serve_pid)
    raylets = {pid for pid, _ in procs if cmdline(pid).split(" ", 1)[0].endswith("/raylet")}
    return sum(1 for pid, parent in procs if pid in raylets and parent not in raylets)


def trial_actors(serve_pid: int) -> int:
    """Trial actors alive under the service, each holding its trial's CPU."""
    return sum(cmdline(p).startswith("ray::ImplicitFunc") for p in descendants(serve_pid))


# ---- the service -------------------------------------------------------------------------------

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_env(home: Path) -> dict[str, str]:
    env = dict(os.environ, SWEEPD_HOME=str(home), SWEEPD_DATA_ROOTS=str(home), PYTHONUNBUFFERED="1")
    for key in ("SWEEPD_DATABASE_URL", "SWEEPD_RAY_ADDRESS", "RAY_ADDRESS"):
        env.pop(key, None)
    return env


class Service:
    """`sweepd serve` on a free loopback port with its own home (SQLite), and a write token."""

    def __init__(self, home: Path, *, max_sweeps: int = 4) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.env, self.port, self.home = service_env(home), _free_port(), home
        made = subprocess.run([sys.executable, "-m", "sweepd.cli", "token", "create", "bench"], env=self.env,
                              cwd=REPO, text=True, capture_output=True, timeout=120)
        self.token = made.stdout.strip().splitlines()[-1]
        self.log = open(home / "serve.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "sweepd.cli", "serve", "--port", str(self.port),
                                      "--max-sweeps", str(max_sweeps)],
                                     env=self.env, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT)
        self.api = f"http://127.0.0.1:{self.port}/api/v1"
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sweepd serve did not start (see {home / 'serve.log'})")
            time.sleep(0.3)

    def submit(self, spec: str) -> str:
        r = httpx.post(f"{self.api}/sweeps", content=spec, timeout=60,
                       headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/yaml"})
        if r.status_code != 201:
            raise RuntimeError(f"POST /sweeps: {r.status_code} {r.text}")
        return r.json()["id"]

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.home / "sweepd.db", timeout=30)

    def sweeps(self, ids: list[str]) -> dict[str, dict]:
        """{id: {state, limit (its grant), trials: {state: count}}}."""
        marks = ",".join("?" * len(ids))
        with self.db() as conn:
            rows = conn.execute(f"SELECT id, state, trial_limit FROM sweepd_sweeps WHERE id IN ({marks})", ids).fetchall()
            trials = conn.execute(f"SELECT sweep_id, state, COUNT(*) FROM sweepd_trials WHERE sweep_id IN ({marks}) "
                                  "GROUP BY sweep_id, state", ids).fetchall()
        out = {i: {"state": s, "limit": limit, "trials": {}} for i, s, limit in rows}
        for sweep_id, state, n in trials:
            out[sweep_id]["trials"][state] = n
        return out

    def trial_times(self, sweep_id: str) -> list[tuple[float, float | None]]:
        """(started, finished or None) of each of its trials, as Unix times (the store keeps UTC),
        in the order they started."""
        with self.db() as conn:
            rows = conn.execute("SELECT started_at, finished_at FROM sweepd_trials WHERE sweep_id = ? "
                                "AND started_at IS NOT NULL ORDER BY started_at", (sweep_id,)).fetchall()
        return [(_unix(started), _unix(finished) if finished else None) for started, finished in rows]

    def driver_pid(self, sweep_id: str) -> int:
        """The pid of the driver that holds the sweep (its ``controller``: "pid@host")."""
        with self.db() as conn:
            controller = conn.execute("SELECT controller FROM sweepd_sweeps WHERE id = ?", (sweep_id,)).fetchone()[0]
        return int(controller.split("@", 1)[0])

    def asked_for_a_trial(self, sweep_id: str) -> bool:
        """Its searcher suggested a trial (an Optuna trial exists in its study)."""
        with self.db() as conn:
            return conn.execute("SELECT COUNT(*) FROM trials JOIN studies USING (study_id) WHERE study_name = ?",
                                (f"sweepd-{sweep_id}",)).fetchone()[0] > 0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


# ---- the measurement ---------------------------------------------------------------------------

def watch(service: Service, ids: list[str], trials: int, *, timeout_s: float = 600, every_s: float = 0.25) -> dict:
    """Sample the service until every sweep ended: Ray instances, trial actors, the grants' sum,
    and each sweep's running trials while all compete."""
    instances, actors, limit_sums, competing = set(), [], [], []
    started, deadline = time.monotonic(), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = service.sweeps(ids)
        if all(s["state"] in TERMINAL for s in now.values()):
            break
        instances.add(ray_instances(service.proc.pid))
        actors.append(trial_actors(service.proc.pid))
        limit_sums.append(sum(s["limit"] or 0 for s in now.values()))
        if all(s["state"] == "running" and sum(s["trials"].values()) < trials for s in now.values()):
            competing.append({i: s["trials"].get("running", 0) for i, s in now.items()})
        time.sleep(every_s)
    return {"final": service.sweeps(ids), "ray_instances": sorted(instances), "peak_trial_actors": max(actors, default=0),
            "peak_granted_slots": max(limit_sums, default=0), "competing_samples": competing,
            "wall_seconds": round(time.monotonic() - started, 1)}


def shares(competing: list[dict[str, int]], priorities: dict[str, str], slots: float) -> dict[str, dict]:
    """Each sweep's time-averaged running trials while all competed, and its fair share."""
    total_weight = sum(PRIORITY_WEIGHTS[p] for p in priorities.values())
    return {i: {"got": round(statistics.mean(s[i] for s in competing), 3) if competing else None,
                "fair": round(slots * PRIORITY_WEIGHTS[p] / total_weight, 3)} for i, p in priorities.items()}


def concurrent_sweeps_through_serve(tmp: Path, *, sweeps: int = 4, trials: int = 6, steps: int = 12) -> dict:
    """`sweeps` replay sweeps (cpus_per_worker 1) submitted at once to one `sweepd serve`."""
    service = Service(tmp / "serve-home", max_sweeps=sweeps)
    try:
        priorities = {service.submit(replay_spec(f"share-{k}", trials=trials, steps=steps)): "normal"
                      for k in range(sweeps)}
        seen = watch(service, list(priorities), trials)
    finally:
        service.stop()
    seen["shares"] = shares(seen.pop("competing_samples"), priorities, CORES)
    seen["cores"] = CORES
    seen["exact_trial_counts"] = all(s["trials"] == {"completed": trials} for s in seen["final"].values())
    return seen
