"""Helpers shared by the supervisor and claim tests: fake drivers, sweeps in a given state, and a
clock the supervisor reads (its probation of silent drivers and its start back-off)."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

from sqlalchemy import update

from sweepd.service import supervisor as supervisor_module
from sweepd.service.driver import driver_name
from sweepd.store import Sweep, repo, session_scope
from sweepd.store.models import utcnow

HOST = driver_name().split("@", 1)[1]
SLEEPS = [sys.executable, "-c", "import time; time.sleep(60)"]
EXITS = [sys.executable, "-c", "pass"]


def sweep(engine, name: str, *, state: str = "queued", age_minutes: float = 0, controller: str | None = None,
          heartbeat_age_minutes: float | None = None) -> str:
    with session_scope(engine) as s:
        sw = repo.create_sweep(s, name=name, spec={})
        if state != "queued":
            repo.set_sweep_state(s, sw.id, state)
        values = {"created_at": utcnow() - timedelta(minutes=age_minutes)}
        if controller is not None:
            values["controller"] = controller
        if heartbeat_age_minutes is not None:
            values["heartbeat_at"] = utcnow() - timedelta(minutes=heartbeat_age_minutes)
        s.execute(update(Sweep).where(Sweep.id == sw.id).values(**values))
        return sw.id


def get(engine, sweep_id: str) -> Sweep:
    with session_scope(engine) as s:
        return repo.get_sweep(s, sweep_id)


def state_events(engine, sweep_id: str) -> list:
    with session_scope(engine) as s:
        return repo.list_events(s, sweep_id, kind="state")


def resumes(engine, sweep_id: str) -> list:
    """The supervisor's "driver gone; resuming the sweep" events of a sweep."""
    return [e for e in state_events(engine, sweep_id) if (e.payload or {}).get("restart")]


def dead_pid() -> int:
    proc = subprocess.Popen(EXITS)
    proc.wait()  # exited and reaped: the pid names no process
    return proc.pid


class Clock:
    """Stands in for time.monotonic while a test runs (the supervisor reads it through `time`)."""

    def __init__(self, monkeypatch, start: float = 1000.0) -> None:
        self.now = start
        monkeypatch.setattr(supervisor_module.time, "monotonic", lambda: self.now)

    def advance(self, seconds: float) -> None:
        self.now += seconds
