"""The supervisor inside `sweepd serve`: runs queued sweeps, keeps them running, never leaves one
RUNNING forever.

Every tick it
- reaps driver processes that ended;
- resumes running sweeps whose driver is gone (a crash, or a restart of the service): a new
  driver restores Ray Tune's experiment state, so finished trials are not rerun; a sweep that
  needed more than `max_restarts` is marked FAILED with the reason;
- kills the driver of a cancelled sweep that has not stopped by itself within a grace period;
- starts drivers for queued sweeps, oldest first, up to `max_sweeps` at once.

A driver is gone when its "pid@host" (the sweep's `controller` column) names a process on this host
that no longer runs, or, for one on another host, when its heartbeat is older than `stale_after`
(`repo.stale_sweeps`).

Drivers are local subprocesses (`python -m sweepd.service.driver ID`) that die with the service
(PR_SET_PDEATHSIG), so a killed service leaves no orphan to fight with its successor. With
SWEEPD_RAY_ADDRESS set they drive their trials on that Ray cluster.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from sweepd.protocol import SweepState
from sweepd.service.driver import driver_alive, driver_name
from sweepd.store import repo
from sweepd.store.db import session_scope

log = logging.getLogger("sweepd.service.supervisor")
DRIVER_COMMAND = (sys.executable, "-m", "sweepd.service.driver")  # + the sweep id
STALE_AFTER = timedelta(seconds=30)
CANCEL_GRACE_SECONDS = 30.0
STOP_WAIT_SECONDS = 20.0


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class DriverProcess:
    sweep_id: str
    proc: subprocess.Popen
    started: float = field(default_factory=time.monotonic)
    cancel_seen: float | None = None


class Supervisor:
    """``driver_command`` (run with the sweep id appended), ``cancel_grace_seconds`` and
    ``stale_after`` are there for tests and operators; the defaults are the service's."""

    def __init__(self, engine, *, max_sweeps: int = 1, max_restarts: int = 3, tick_seconds: float = 1.0,
                 log_dir: Path | None = None, driver_command: Sequence[str] = DRIVER_COMMAND,
                 cancel_grace_seconds: float = CANCEL_GRACE_SECONDS, stale_after: timedelta = STALE_AFTER) -> None:
        if max_sweeps < 1:
            raise ValueError(f"max_sweeps must be at least 1, got {max_sweeps}")
        if max_restarts < 0:
            raise ValueError(f"max_restarts must be at least 0, got {max_restarts}")
        self.engine = engine
        self.max_sweeps, self.max_restarts, self.tick_seconds = max_sweeps, max_restarts, tick_seconds
        self.log_dir = log_dir
        self.driver_command = list(driver_command)
        self.cancel_grace_seconds, self.stale_after = cancel_grace_seconds, stale_after
        self.drivers: dict[str, DriverProcess] = {}
        self.restarts: dict[str, int] = {}
        self.failed_starts: dict[str, tuple[int, float]] = {}  # sweep -> (driver errors, when the last was)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="sweepd-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop ticking and SIGTERM every driver (a clean shutdown: their sweeps stay RUNNING and
        resume on the next start); kill those still there after STOP_WAIT_SECONDS."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        for d in self.drivers.values():
            d.proc.send_signal(signal.SIGTERM)
        for d in self.drivers.values():
            try:
                d.proc.wait(timeout=STOP_WAIT_SECONDS)
            except subprocess.TimeoutExpired:
                d.proc.kill()
                d.proc.wait()

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
            # stale ones, and every one driven from this host: whether its pid lives is known now
            maybe_gone = repo.stale_sweeps(s, older_than=self.stale_after, host=socket.gethostname())
            orphans = [sw.id for sw in maybe_gone if sw.id not in self.drivers and not driver_alive(sw.controller)]
            cancelled = {sw.id for sw in repo.list_sweeps(s, state=SweepState.cancelled, limit=1000).items}
        for sweep_id in orphans:
            self._resume(sweep_id)
        self._enforce_cancel(cancelled)
        self._start_queued()

    def _reap(self) -> None:
        for sweep_id, d in list(self.drivers.items()):
            if d.proc.poll() is not None:
                log.info("driver of sweep %s exited with %s", sweep_id, d.proc.returncode)
                del self.drivers[sweep_id]
                if d.proc.returncode != 0:
                    count, _ = self.failed_starts.get(sweep_id, (0, 0.0))
                    self.failed_starts[sweep_id] = (count + 1, time.monotonic())

    def _start_backoff(self, sweep_id: str) -> float:
        """Seconds to wait before starting a queued sweep again whose driver exited with an
        error: 1, 2, 4 ... up to 60, so a driver that keeps failing does not hog the slot."""
        count, _ = self.failed_starts.get(sweep_id, (0, 0.0))
        return 0.0 if count == 0 else min(60.0, 2.0 ** (count - 1))

    def _resume(self, sweep_id: str) -> None:
        n = self.restarts.get(sweep_id, 0)
        if n >= self.max_restarts:
            with session_scope(self.engine) as s:
                repo.set_sweep_state(s, sweep_id, SweepState.failed, only_from=[SweepState.running],
                                     error=f"driver died {n + 1} times; giving up")
            return
        self.restarts[sweep_id] = n + 1
        with session_scope(self.engine) as s:
            repo.add_event(s, sweep_id, "state", "driver gone; resuming the sweep", payload={"restart": n + 1})
        self._spawn(sweep_id)

    def _enforce_cancel(self, cancelled: set[str]) -> None:
        now = time.monotonic()
        for sweep_id in cancelled & set(self.drivers):
            d = self.drivers[sweep_id]
            d.cancel_seen = d.cancel_seen or now
            if now - d.cancel_seen > self.cancel_grace_seconds:
                log.warning("driver of cancelled sweep %s did not stop; killing it", sweep_id)
                d.proc.kill()

    def _start_queued(self) -> None:
        free = self.max_sweeps - len(self.drivers)
        if free <= 0:
            return
        with session_scope(self.engine) as s:
            queued = repo.list_sweeps(s, state=SweepState.queued, limit=1000).items
        waiting = []
        for sw in queued:
            if sw.id in self.drivers:
                continue
            count, last = self.failed_starts.get(sw.id, (0, 0.0))
            if count > self.max_restarts:  # capped: say why instead of trying forever
                with session_scope(self.engine) as s:
                    repo.set_sweep_state(s, sw.id, SweepState.failed, only_from=[SweepState.queued],
                                         error=f"driver exited with an error {count} times before the sweep "
                                               f"started; giving up (see the driver log)")
                continue
            if time.monotonic() - last >= self._start_backoff(sw.id):
                waiting.append(sw)
        for sweep in sorted(waiting, key=lambda sw: sw.created_at)[:free]:
            self._spawn(sweep.id)

    def _spawn(self, sweep_id: str) -> None:
        out = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.log_dir / f"driver-{sweep_id}.log", "ab")
        proc = subprocess.Popen([*self.driver_command, sweep_id], stdout=out,
                                stderr=subprocess.STDOUT if out else None, preexec_fn=_die_with_parent,
                                env=dict(os.environ))
        if out:
            out.close()
        with session_scope(self.engine) as s:  # claim it at once, so a second tick does not
            repo.heartbeat(s, sweep_id, controller=driver_name(proc.pid))
        self.drivers[sweep_id] = DriverProcess(sweep_id, proc)
        log.info("started driver %s for sweep %s", proc.pid, sweep_id)
