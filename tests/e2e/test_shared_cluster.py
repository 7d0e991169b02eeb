"""Many sweeps, one cluster (issue 16): sweeps submitted together to one `sweepd serve` share its
one Ray, never run more trials than the machine has cores, each gets its fair share, and a
high-priority sweep gets its share within one trial-length.

Replay trials (builtin:replay: recorded curves, no training) of a fixed length, cpus_per_worker 1,
so the machine's cores are the trial slots. What runs is read from the processes themselves: the
raylets under the service (one Ray instance) and the trial actors (Ray names them
``ray::ImplicitFunc``), each holding one CPU; shares are read from the store.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from tests.e2e.conftest import REPO, sweepd
from tests.e2e.test_service_crash import free_port, start_serve

CORES = os.cpu_count() or 1
STEP_SECONDS = 0.25


def replay_spec(name: str, *, trials: int, steps: int, priority: str = "normal", max_concurrent: int = 2) -> str:
    """A replay sweep whose every trial lasts steps x STEP_SECONDS, no pruning."""
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


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            tree.setdefault(ppid, []).append(int(entry))
    return tree


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def descendants(pid: int) -> list[int]:
    tree, found, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def ray_instances(serve_pid: int) -> int:
    """Raylets under the service: one per Ray instance (a driver that started its own Ray would add one)."""
    return sum(_cmdline(p).split(" ", 1)[0].endswith("/raylet") for p in descendants(serve_pid))


def trial_actors() -> int:
    """Trial actors alive on the machine: each holds its trial's CPU until it ends."""
    return sum(_cmdline(int(p)).startswith("ray::ImplicitFunc") for p in os.listdir("/proc") if p.isdigit())


class Service:
    def __init__(self, env: dict, tmp_path: Path) -> None:
        self.env, self.port = env, free_port()
        self.token = sweepd("token", "create", "shares", env=env, timeout=120).stdout.strip().splitlines()[-1]
        self.log = open(tmp_path / "serve.log", "ab")
        self.proc = start_serve(env, self.port, self.log)
        self.api = f"http://127.0.0.1:{self.port}/api/v1"

    def submit(self, spec: str) -> str:
        r = httpx.post(f"{self.api}/sweeps", content=spec, timeout=60,
                       headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/yaml"})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(Path(self.env["SWEEPD_HOME"]) / "sweepd.db", timeout=30)

    def sweeps(self, ids: list[str]) -> dict[str, dict]:
        with self.db() as conn:
            rows = conn.execute(f"SELECT id, state, trial_limit FROM sweepd_sweeps WHERE id IN ({','.join('?' * len(ids))})",
                                ids).fetchall()
            trials = conn.execute(f"SELECT sweep_id, state, COUNT(*) FROM sweepd_trials WHERE sweep_id IN "
                                  f"({','.join('?' * len(ids))}) GROUP BY sweep_id, state", ids).fetchall()
        out = {i: {"state": s, "limit": lim, "trials": {}} for i, s, lim in rows}
        for sweep_id, state, n in trials:
            out[sweep_id]["trials"][state] = n
        return out

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def service_env(tmp_path: Path) -> dict:
    env = dict(os.environ, SWEEPD_HOME=str(tmp_path / "home"), SWEEPD_DATA_ROOTS=str(tmp_path), PYTHONUNBUFFERED="1")
    for key in ("SWEEPD_DATABASE_URL", "SWEEPD_RAY_ADDRESS", "RAY_ADDRESS"):
        env.pop(key, None)
    return env


def test_four_sweeps_share_one_ray_fairly_and_never_oversubscribe(tmp_path):
    service = Service(service_env(tmp_path), tmp_path)
    trials = 6
    try:
        ids = [service.submit(replay_spec(f"share-{i}", trials=trials, steps=12)) for i in range(4)]
        samples, instances, actors, limit_sums = [], set(), [], []
        deadline = time.monotonic() + 420
        while time.monotonic() < deadline:
            now = service.sweeps(ids)
            if all(s["state"] in ("succeeded", "failed", "cancelled") for s in now.values()):
                break
            instances.add(ray_instances(service.proc.pid))
            actors.append(trial_actors())
            limit_sums.append(sum(s["limit"] or 0 for s in now.values()))
            # all 4 compete: each running, each with trials still to start
            if all(s["state"] == "running" and sum(s["trials"].values()) < trials for s in now.values()):
                samples.append({i: s["trials"].get("running", 0) for i, s in now.items()})
            time.sleep(0.25)
        final = service.sweeps(ids)
    finally:
        service.stop()

    assert all(s["state"] == "succeeded" for s in final.values()), final
    assert all(s["trials"] == {"completed": trials} for s in final.values()), final  # exact trial counts
    assert instances <= {0, 1} and 1 in instances, f"Ray instances under the service: {sorted(instances)}"
    assert max(actors) <= CORES, f"{max(actors)} trials held a CPU at once on {CORES} cores"
    assert max(limit_sums) <= CORES, f"granted {max(limit_sums)} trial slots on {CORES} cores"
    fair = CORES / 4
    assert len(samples) >= 8, f"the 4 sweeps competed for only {len(samples)} samples"
    shares = {i: statistics.mean(s[i] for s in samples) for i in ids}
    assert all(abs(share - fair) <= 1 for share in shares.values()), (fair, shares)
    assert all(share > 0 for share in shares.values()), f"a sweep got no turn while all 4 competed: {shares}"


def test_a_high_priority_sweep_gets_its_share_within_one_trial_length(tmp_path):
    service = Service(service_env(tmp_path), tmp_path)
    steps = 24
    trial_seconds = steps * STEP_SECONDS
    try:
        normal = service.submit(replay_spec("normal", trials=12, steps=steps, max_concurrent=CORES))
        deadline = time.monotonic() + 180
        while service.sweeps([normal])[normal]["trials"].get("running", 0) < CORES:  # it holds every core
            assert time.monotonic() < deadline, service.sweeps([normal])
            time.sleep(0.2)
        high = service.submit(replay_spec("high", trials=2, steps=steps, priority="high", max_concurrent=CORES))
        while service.sweeps([high])[high]["state"] != "running":  # its driver is up: it has arrived
            assert time.monotonic() < deadline, service.sweeps([high])
            time.sleep(0.1)
        arrived = time.monotonic()
        while service.sweeps([high])[high]["trials"].get("running", 0) + \
                service.sweeps([high])[high]["trials"].get("completed", 0) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        waited = time.monotonic() - arrived
        limits = service.sweeps([normal, high])
    finally:
        service.stop()
    # one trial-length (its driver's own start-up, Tune's and Ray's, comes on top: 2 s of slack)
    assert waited <= trial_seconds + 2.0, f"the high sweep waited {waited:.1f} s for a slot ({trial_seconds} s trials)"
    assert limits[high]["limit"] >= limits[normal]["limit"], limits
