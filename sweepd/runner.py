"""Driving one sweep to its end from this process: `sweepd run SPEC` (no server) and the service's
controller processes (`python -m sweepd.controller SWEEP_ID`) both come through `drive`.

Running the same spec again with `sweepd run` after the driver died resumes that sweep (same name,
same spec, its controller gone): finished trials are not rerun. `--new` starts a fresh one.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path

from sqlalchemy import select

from sweepd.engine.controller import models_dir, run_sweep
from sweepd.engine.finalize import finalize_sweep
from sweepd.engine.search import close_orphaned_trials
from sweepd.settings import get_settings
from sweepd.spec import SweepSpec
from sweepd.store import repo
from sweepd.store.db import make_engine, session_scope
from sweepd.store.migrate import upgrade
from sweepd.store.models import Sweep

HEARTBEAT_SECONDS = 2.0


def controller_name(pid: int | None = None) -> str:
    return f"{pid or os.getpid()}@{socket.gethostname()}"


def controller_alive(controller: str | None) -> bool:
    """A local controller "pid@host" is alive when that pid still runs here (not a zombie)."""
    if not controller or "@" not in controller:
        return False
    pid, host = controller.split("@", 1)
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped by its parent) is dead too
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def find_resumable(session, spec_doc: dict) -> Sweep | None:
    candidates = session.scalars(
        select(Sweep).where(Sweep.name == spec_doc["name"], Sweep.state.in_(["queued", "running"]))
        .order_by(Sweep.created_at.desc())
    ).all()
    for sweep in candidates:
        if sweep.spec == spec_doc and not controller_alive(sweep.controller):
            return sweep
    return None


class Heartbeat(threading.Thread):
    """Keeps the sweep's heartbeat fresh and hands progress (trial states) to a callback."""

    def __init__(self, engine, sweep_id: str, on_progress=None) -> None:
        super().__init__(daemon=True)
        self.engine, self.sweep_id, self.on_progress = engine, sweep_id, on_progress
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(HEARTBEAT_SECONDS):
            try:
                with session_scope(self.engine) as s:
                    repo.heartbeat(s, self.sweep_id, controller=controller_name())
                    if self.on_progress:
                        self.on_progress([t.state for t in repo.list_trials(s, self.sweep_id)])
            except Exception:  # a busy database must not kill the sweep; the next beat retries
                pass

    def stop(self) -> None:
        self._stop_event.set()


def drive(engine, db_url: str, sweep_id: str, spec: SweepSpec, *, on_progress=None) -> dict:
    """Run or resume the sweep until its trials are done (or it is cancelled); finalize it."""
    settings = get_settings()
    home = Path(settings.home)
    with session_scope(engine) as s:
        repo.set_sweep_state(s, sweep_id, "running", only_from=["queued", "running"])
        repo.heartbeat(s, sweep_id, controller=controller_name())
    beat = Heartbeat(engine, sweep_id, on_progress)
    beat.start()
    try:
        run_sweep(spec, sweep_id=sweep_id, db_url=db_url, home=home, ray_address=settings.ray_address)
    finally:
        beat.stop()
    close_orphaned_trials(db_url, f"sweepd-{sweep_id}")
    with session_scope(engine) as s:
        return finalize_sweep(s, spec, sweep_id,
                              models_root=models_dir(home, sweep_id) if spec.save_best_model else None)


def run_local(spec: SweepSpec, *, new: bool = False, on_progress=None, on_start=None) -> dict:
    """`sweepd run`: create (or find the unfinished) sweep for this spec and drive it."""
    settings = get_settings()
    db_url = settings.resolved_database_url
    Path(settings.home).mkdir(parents=True, exist_ok=True)
    upgrade(db_url)
    engine = make_engine(db_url)
    doc = json.loads(spec.model_dump_json())
    with session_scope(engine) as s:
        sweep = None if new else find_resumable(s, doc)
        resumed = sweep is not None
        if sweep is None:
            sweep = repo.create_sweep(s, name=spec.name, spec=doc)
        repo.heartbeat(s, sweep.id, controller=controller_name())
        sweep_id = sweep.id
    if on_start:
        on_start(sweep_id, resumed)
    return drive(engine, db_url, sweep_id, spec, on_progress=on_progress)
