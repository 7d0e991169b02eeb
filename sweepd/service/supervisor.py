"""The supervisor inside `sweepd serve`: runs queued sweeps, keeps them running, never leaves one
RUNNING forever.

Every tick it
- reaps driver processes that ended;
- resumes running sweeps whose driver is gone (a crash, a restart of the service, a reboot): a new
  driver restores Ray Tune's experiment state, so finished trials are not rerun; a sweep that
  needed more than `max_restarts` is marked FAILED with the reason;
- kills the driver of a cancelled sweep that has not stopped by itself within a grace period;
- starts drivers for queued sweeps, oldest first, up to `max_sweeps` at once, skipping one another
  driver has claimed and still holds.

Whose driver is gone (`_gone`; never a sweep driven by one of this supervisor's own children, which
it watches as processes, whatever their heartbeat says while the store was unreachable):
- at once, when its "pid@host" (the sweep's `controller` column) names a process on this host that
  no longer runs, or that started after the driver's last heartbeat (after a reboot the pid may
  belong to an unrelated process: a pid alone proves nothing);
- otherwise by its heartbeat (every driver, ours and `sweepd run`'s, beats every
  HEARTBEAT_SECONDS): older than `stale_after`, and standing still for CONFIRM_SECONDS (a few
  heartbeats) of ticks that reached the store. A tick that fails forgets what it saw, so after a
  database outage a driver that could not beat either gets the time to beat again first.

Starting a driver is claim first, then spawn: the supervisor writes its own name into `controller`
as a compare-and-set on what it saw there (`repo.claim_sweep`), so of two supervisors on one
database only one starts a driver; it then hands the claim to the driver's pid. The driver accepts
its parent's claim and refuses a sweep another live driver holds (see driver.py).

Drivers are local subprocesses (`python -m sweepd.service.driver ID`) that die with the service
(PR_SET_PDEATHSIG), so a killed service leaves no orphan to fight with its successor.

One Ray for all of them (``cluster``, sweepd/service/cluster.py): the service's own local head, or
SWEEPD_RAY_ADDRESS's cluster; every driver joins it, so concurrent sweeps share its resources
through Ray's scheduler. Queued sweeps start highest priority first, then oldest; every tick the
running ones get their fair share of the cluster as a running-trial limit in the store
(sweepd/service/share_keeper.py), which their searchers obey.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sweepd.protocol import PRIORITY_WEIGHTS, SweepState
from sweepd.service.children import die_with_parent
from sweepd.service.share_keeper import ShareKeeper
from sweepd.service.driver import (EXIT_STORE_UNAVAILABLE, HEARTBEAT_SECONDS, STALE_AFTER, driver_alive, driver_name,
                                   is_local)
from sweepd.store import repo
from sweepd.store.db import session_scope
from sweepd.store.models import Sweep, utcnow

log = logging.getLogger("sweepd.service.supervisor")
DRIVER_COMMAND = (sys.executable, "-m", "sweepd.service.driver")  # + the sweep id
CANCEL_GRACE_SECONDS = 30.0
STOP_WAIT_SECONDS = 20.0
# how long a stale heartbeat must stand still, seen by ticks that reached the store, before its
# live-pid (or remote) driver counts as gone: a driver beats at least twice in that time
CONFIRM_SECONDS = 2.5 * HEARTBEAT_SECONDS


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
                 cancel_grace_seconds: float = CANCEL_GRACE_SECONDS, stale_after: timedelta = STALE_AFTER,
                 cluster=None) -> None:
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
        self.store_exits: set[str] = set()  # sweeps whose driver exited because the store was down
        self.failed_starts: dict[str, tuple[int, float]] = {}  # sweep -> (driver errors, when the last was)
        # sweep -> (the stale heartbeat seen, when it was first seen): a silent driver on probation
        self.silent: dict[str, tuple[datetime | None, float]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Lock()  # stop() and the thread may both stop the children
        # the Ray every driver joins (sweepd/service/cluster.py; None: each driver starts its own)
        self.cluster = cluster
        self.shares = ShareKeeper(engine, cluster)

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="sweepd-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop ticking and SIGTERM every driver (a clean shutdown: their sweeps stay RUNNING and
        resume on the next start); kill those still there after STOP_WAIT_SECONDS; then stop the
        local Ray head. The supervisor's thread does this itself before it ends: its children die
        with the thread that started them (PR_SET_PDEATHSIG is per thread), so a thread that ended
        first would SIGKILL them, and the Ray head killed so leaves its agents and trial workers
        running without it."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10 + 2 * STOP_WAIT_SECONDS)
            if not self._thread.is_alive():
                return
        self._stop_children()  # no thread, or one stuck in a tick: it still holds its children

    def _stop_children(self) -> None:
        with self._stopping:
            for d in self.drivers.values():
                d.proc.send_signal(signal.SIGTERM)  # a no-op on one that has ended
            for d in self.drivers.values():
                try:
                    d.proc.wait(timeout=STOP_WAIT_SECONDS)
                except subprocess.TimeoutExpired:
                    d.proc.kill()
                    d.proc.wait()
            if self.cluster is not None:
                self.cluster.stop()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # keep supervising through a transient database error
                log.exception("supervisor tick failed")
            self._stop.wait(self.tick_seconds)
        self._stop_children()

    # ---- one pass ---------------------------------------------------------------------------

    def tick(self) -> None:
        try:
            self._tick()
        except Exception:
            # the store did not answer: drivers could not beat either, so what was seen of their
            # heartbeats proves nothing; they get CONFIRM_SECONDS again once it answers
            self.silent.clear()
            raise

    def _tick(self) -> None:
        self._reap()
        with session_scope(self.engine) as s:
            active = repo.list_sweeps(s, state=[SweepState.running, SweepState.queued], limit=1000,
                                      load_spec=False).items
            cancelled = {sw.id for sw in repo.list_sweeps(s, state=SweepState.cancelled, limit=1000,
                                                          load_spec=False).items}
        now = time.monotonic()
        ids = {sw.id for sw in active}
        self.silent = {k: v for k, v in self.silent.items() if k in ids}  # ended sweeps: forgotten
        for sw in active:
            if sw.state == SweepState.running.value and sw.id not in self.drivers:
                reason = self._gone(sw, now)
                if reason:
                    self._resume(sw, reason)
        self._enforce_cancel(cancelled)
        queued = [sw for sw in active if sw.state == SweepState.queued.value and sw.id not in self.drivers
                  and (sw.controller is None or self._gone(sw, now))]  # not one another driver holds
        started = self._start_queued(queued)
        running = [sw.id for sw in active if sw.state == SweepState.running.value or sw.id in started]
        full = f"a sweep slot: {len(self.drivers)} of {self.max_sweeps} running" \
            if len(self.drivers) >= self.max_sweeps else None
        self.shares.tick(running, {sw.id: full for sw in queued if sw.id not in started})

    def _gone(self, sw: Sweep, now: float) -> str | None:
        """Why the sweep's recorded driver (not one of ours) is gone; None while it may be driving."""
        name, beat = sw.controller, sw.heartbeat_at
        if is_local(name):
            if not driver_alive(name):
                return f"its process {name} is gone"
            if not driver_alive(name, since=beat):
                return f"pid {name} now belongs to a process started after the driver's last heartbeat"
        last = beat or sw.started_at or sw.created_at
        if utcnow() - last < self.stale_after:
            self.silent.pop(sw.id, None)
            return None
        seen = self.silent.get(sw.id)
        if seen is None or seen[0] != beat:  # probation starts (again: it beat meanwhile)
            self.silent[sw.id] = (beat, now)
            return None
        if now - seen[1] < CONFIRM_SECONDS:
            return None
        return f"no heartbeat from {name or 'its driver'} for {(utcnow() - last).total_seconds():.0f} s"

    def _reap(self) -> None:
        for sweep_id, d in list(self.drivers.items()):
            if d.proc.poll() is not None:
                log.info("driver of sweep %s exited with %s", sweep_id, d.proc.returncode)
                del self.drivers[sweep_id]
                if d.proc.returncode == EXIT_STORE_UNAVAILABLE:  # the database was down, not the sweep
                    self.store_exits.add(sweep_id)
                elif d.proc.returncode != 0:
                    count, _ = self.failed_starts.get(sweep_id, (0, 0.0))
                    self.failed_starts[sweep_id] = (count + 1, time.monotonic())

    def _start_backoff(self, sweep_id: str) -> float:
        """Seconds to wait before starting a queued sweep again whose driver exited with an
        error: 1, 2, 4 ... up to 60, so a driver that keeps failing does not hog the slot."""
        count, _ = self.failed_starts.get(sweep_id, (0, 0.0))
        return 0.0 if count == 0 else min(60.0, 2.0 ** (count - 1))

    def _resume(self, sw: Sweep, reason: str) -> None:
        # a driver that gave up on an unreachable store is resumed without counting against
        # max_restarts: outages end, and a sweep must not fail for having lived through several
        counted = sw.id not in self.store_exits
        self.store_exits.discard(sw.id)
        n = self.restarts.get(sw.id, 0)
        if counted and n >= self.max_restarts:
            with session_scope(self.engine) as s:
                repo.set_sweep_state(s, sw.id, SweepState.failed, only_from=[SweepState.running],
                                     error=f"driver died {n + 1} times; giving up")
            return
        log.warning("sweep %s: driver gone (%s); resuming it", sw.id, reason)
        if self._spawn(sw.id, seen=sw.controller,
                       event=("driver gone; resuming the sweep", {"restart": n + counted, "reason": reason})):
            self.restarts[sw.id] = n + counted

    def _enforce_cancel(self, cancelled: set[str]) -> None:
        now = time.monotonic()
        for sweep_id in cancelled & set(self.drivers):
            d = self.drivers[sweep_id]
            d.cancel_seen = d.cancel_seen or now
            if now - d.cancel_seen > self.cancel_grace_seconds:
                log.warning("driver of cancelled sweep %s did not stop; killing it", sweep_id)
                d.proc.kill()

    def _start_queued(self, queued: list[Sweep]) -> set[str]:
        """Start drivers for queued sweeps, highest priority first, then oldest, while slots are
        free; the ids of those started."""
        free = self.max_sweeps - len(self.drivers)
        if free <= 0:
            return set()
        waiting = []
        for sw in queued:
            count, last = self.failed_starts.get(sw.id, (0, 0.0))
            if count > self.max_restarts:  # capped: say why instead of trying forever
                with session_scope(self.engine) as s:
                    repo.set_sweep_state(s, sw.id, SweepState.failed, only_from=[SweepState.queued],
                                         error=f"driver exited with an error {count} times before the sweep "
                                               f"started; giving up (see the driver log)")
                continue
            if time.monotonic() - last >= self._start_backoff(sw.id):
                waiting.append(sw)
        started: set[str] = set()
        for sweep in sorted(waiting, key=lambda sw: (-PRIORITY_WEIGHTS.get(sw.priority, 0), sw.created_at)):
            if len(started) == free:
                break
            if self._spawn(sweep.id, seen=sweep.controller):
                started.add(sweep.id)
        return started

    def _spawn(self, sweep_id: str, *, seen: str | None, event: tuple[str, dict] | None = None) -> bool:
        """Claim the sweep (if ``controller`` still holds ``seen``), then start its driver; False
        when another supervisor or driver claimed it first."""
        me = driver_name()  # this service's own name holds the claim until the driver's pid is known
        with session_scope(self.engine) as s:
            if not repo.claim_sweep(s, sweep_id, controller=me, expected=seen):
                log.info("sweep %s was claimed by %s first; not starting it", sweep_id,
                         repo.sweep_controller(s, sweep_id))
                return False
            if event:
                repo.add_event(s, sweep_id, "state", event[0], payload=event[1])
        # (should the start fail, the claim in our name goes stale and the sweep is picked up again)
        out = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.log_dir / f"driver-{sweep_id}.log", "ab")
        try:
            # the drivers join the service's one Ray (its address and token in their environment)
            env = {**os.environ, **(self.cluster.driver_env() if self.cluster is not None else {})}
            proc = subprocess.Popen([*self.driver_command, sweep_id], stdout=out,
                                    stderr=subprocess.STDOUT if out else None, preexec_fn=die_with_parent,
                                    env=env)
        finally:
            if out:
                out.close()
        self.drivers[sweep_id] = DriverProcess(sweep_id, proc)
        log.info("started driver %s for sweep %s", proc.pid, sweep_id)
        with session_scope(self.engine) as s:  # the driver's pid takes over the claim (unless it took it already)
            repo.claim_sweep(s, sweep_id, controller=driver_name(proc.pid), expected=me)
        return True
