"""The supervisor inside `sweepd serve`: runs queued sweeps, keeps them running, never leaves one
RUNNING forever.

Every tick it
- reaps controller processes that ended;
- resumes running sweeps whose controller is gone (a crash, or a restart of the service): a new
  controller restores Ray Tune's experiment state, so finished trials are not rerun; a sweep that
  needed more than `max_restarts` is marked FAILED with the reason;
- kills the controller of a cancelled sweep that has not stopped by itself within a grace period;
- starts controllers for queued sweeps, oldest first, up to `max_sweeps` at once.

Controllers are local subprocesses (`python -m sweepd.service.driver ID`) that die with the service
(PR_SET_PDEATHSIG), so a killed service leaves no orphan to fight with its successor. With
SWEEPD_RAY_ADDRESS set they drive their trials on that Ray cluster.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta

from sweepd.service.driver import controller_alive, controller_name
from sweepd.store import repo
from sweepd.store.db import session_scope

log = logging.getLogger("sweepd.service.supervisor")
STALE_AFTER = timedelta(seconds=30)
CANCEL_GRACE_SECONDS = 30.0


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class Controller:
    sweep_id: str
    proc: subprocess.Popen
    started: float = field(default_factory=time.monotonic)
    cancel_seen: float | None = None


class Supervisor:
    def __init__(self, engine, *, max_sweeps: int = 1, max_restarts: int = 3, tick_seconds: float = 1.0,
                 log_dir=None) -> None:
        self.engine = engine
        self.max_sweeps, self.max_restarts, self.tick_seconds = max_sweeps, max_restarts, tick_seconds
        self.log_dir = log_dir
        self.controllers: dict[str, Controller] = {}
        self.restarts: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="sweepd-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        for c in self.controllers.values():  # a clean shutdown: controllers resume on next start
            c.proc.send_signal(signal.SIGTERM)
        for c in self.controllers.values():
            try:
                c.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                c.proc.kill()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # keep supervising through a transient database error
                log.exception("supervisor tick failed")
            self._stop.wait(self.tick_seconds)

    # ---- one pass ---------------------------------------------------------------------------

    def tick(self) -> None:
        self._reap()
        with session_scope(self.engine) as s:
            running = repo.list_sweeps(s, state="running", limit=1000).items
            orphans = [sw.id for sw in running if sw.id not in self.controllers and self._is_orphan(sw)]
            cancelled = {sw.id for sw in repo.list_sweeps(s, state="cancelled", limit=1000).items}
        for sweep_id in orphans:
            self._resume(sweep_id)
        self._enforce_cancel(cancelled)
        self._start_queued()

    def _is_orphan(self, sweep) -> bool:
        if controller_alive(sweep.controller):
            return False  # e.g. `sweepd run` on this machine drives it
        beat = sweep.heartbeat_at or sweep.started_at
        local = bool(sweep.controller) and sweep.controller.endswith("@" + controller_name().split("@", 1)[1])
        # a local controller that is gone is gone now; a remote one gets STALE_AFTER to beat again
        return local or beat is None or beat < repo.utcnow() - STALE_AFTER

    def _reap(self) -> None:
        for sweep_id, c in list(self.controllers.items()):
            if c.proc.poll() is not None:
                log.info("controller of sweep %s exited with %s", sweep_id, c.proc.returncode)
                del self.controllers[sweep_id]

    def _resume(self, sweep_id: str) -> None:
        n = self.restarts.get(sweep_id, 0)
        if n >= self.max_restarts:
            with session_scope(self.engine) as s:
                repo.set_sweep_state(s, sweep_id, "failed", only_from=["running"],
                                     error=f"controller died {n + 1} times; giving up")
            return
        self.restarts[sweep_id] = n + 1
        with session_scope(self.engine) as s:
            repo.add_event(s, sweep_id, "state", "controller gone; resuming the sweep",
                           payload={"restart": n + 1})
        self._spawn(sweep_id)

    def _enforce_cancel(self, cancelled: set[str]) -> None:
        now = time.monotonic()
        for sweep_id in cancelled & set(self.controllers):
            c = self.controllers[sweep_id]
            c.cancel_seen = c.cancel_seen or now
            if now - c.cancel_seen > CANCEL_GRACE_SECONDS:
                log.warning("controller of cancelled sweep %s did not stop; killing it", sweep_id)
                c.proc.kill()

    def _start_queued(self) -> None:
        free = self.max_sweeps - len(self.controllers)
        if free <= 0:
            return
        with session_scope(self.engine) as s:
            queued = repo.list_sweeps(s, state="queued", limit=1000).items
        waiting = [sw for sw in queued if sw.id not in self.controllers]
        for sweep in sorted(waiting, key=lambda sw: sw.created_at)[:free]:
            self._spawn(sweep.id)

    def _spawn(self, sweep_id: str) -> None:
        out = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.log_dir / f"controller-{sweep_id}.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "sweepd.service.driver", sweep_id], stdout=out,
                                stderr=subprocess.STDOUT if out else None, preexec_fn=_die_with_parent,
                                env=dict(os.environ))
        if out:
            out.close()
        with session_scope(self.engine) as s:  # claim it at once, so a second tick does not
            repo.heartbeat(s, sweep_id, controller=controller_name(proc.pid))
        self.controllers[sweep_id] = Controller(sweep_id, proc)
        log.info("started controller %s for sweep %s", proc.pid, sweep_id)
