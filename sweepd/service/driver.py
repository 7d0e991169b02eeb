"""The sweep driver: the one process that drives one sweep to its end.

Two ways in, one way through:
- `main`: the service's supervisor starts `python -m sweepd.service.driver SWEEP_ID` per stored
  sweep; it dies with the service, and the next service start resumes the sweep.
- `run_local`: `sweepd run SPEC` (no server) drives in the CLI's own process. Running the same spec
  again after the driver died resumes that sweep (same name, same spec, its driver gone): finished
  trials are not rerun. `--new` starts a fresh one.
- `extend_local`: `sweepd extend ID --local` extends a finished sweep (sweepd/service/extend.py)
  and drives it here; run again without an amount, it resumes an extension whose driver died.
All go through `drive`, which runs the sweep under Ray Tune (engine/tuner.py) and finalizes it. An
extended sweep runs its newest segment (a Tune run of its own on the same study, numbering trials
on from the last one).

A driver names itself "pid@host" (`driver_name`); that is what the sweep's `controller` column holds
(the column and the API field keep their old name). Who drives a sweep is decided in the store:
- a driver claims the sweep before it drives it, as a compare-and-set on that column
  (`repo.claim_sweep`: only if it still names whom the claimant saw there), with a heartbeat;
- it refuses a sweep another driver holds (`driver_holds`: a fresh heartbeat, within STALE_AFTER,
  and on this host a pid that still runs the process that wrote it), except its own supervisor's
  claim, made for it just before it was started (main accepts its parent's name);
- it beats every HEARTBEAT_SECONDS only while it still holds the sweep (`repo.beat`); a driver
  that finds the sweep claimed by another stops at once (SIGTERM to itself), so two drivers
  never go on driving one sweep.
A pid alone proves nothing: after a reboot it may name an unrelated process. `driver_alive` with
the last heartbeat also checks that the process started before that heartbeat (/proc start time).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from sweepd.engine import warm_start
from sweepd.engine.fingerprint import fingerprint
from sweepd.engine.finalize import finalize_sweep
from sweepd.engine.search import close_orphaned_trials
from sweepd.engine.tuner import models_dir, run_sweep
from sweepd.protocol import ACTIVE_SWEEP_STATES, SweepState
from sweepd.settings import get_settings
from sweepd.spec import SpecError, SweepSpec
from sweepd.store import repo
from sweepd.store.db import make_engine, session_scope
from sweepd.store.migrate import upgrade
from sweepd.store.models import Sweep, utcnow
from sweepd.store.retry import is_transient, store_outage

HEARTBEAT_SECONDS = 2.0
STALE_AFTER = timedelta(seconds=30)  # a driver silent this long may be gone (its pid may be alive)
START_SLACK_SECONDS = 2.0  # /proc start times are precise to about a second (the boot time is)
EXIT_STORE_UNAVAILABLE = 75  # EX_TEMPFAIL: the store was down; the sweep stays RUNNING, to be resumed
log = logging.getLogger("sweepd.service.driver")


def main(argv: list[str]) -> int:
    """`python -m sweepd.service.driver SWEEP_ID`: drive the stored sweep; 0 when it ended normally."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s driver %(levelname)s %(message)s")
    # SIGTERM (the service stopping) exits through Python, so Ray's atexit shutdown takes its
    # agent processes down too; the sweep stays RUNNING and the next service start resumes it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if len(argv) != 1:
        print("usage: python -m sweepd.service.driver SWEEP_ID", file=sys.stderr)
        return 2
    sweep_id = argv[0]
    db_url = get_settings().resolved_database_url
    engine = make_engine(db_url)
    with session_scope(engine) as s:
        sweep = repo.get_sweep(s, sweep_id)
        if sweep is None:
            print(f"no sweep {sweep_id!r}", file=sys.stderr)
            return 2
        if sweep.state not in ACTIVE_SWEEP_STATES:
            print(f"sweep {sweep_id} is {sweep.state}; nothing to do", file=sys.stderr)
            return 0
        if sweep.state == SweepState.validating.value:  # the API's data preflight decides first
            print(f"sweep {sweep_id} is still validating its data; not started", file=sys.stderr)
            return 0
        # the supervisor that started us claimed the sweep for us under its own name
        holder = claim(s, sweep, also_mine=(driver_name(os.getppid()),))
        if holder is not None:
            print(f"sweep {sweep_id} is driven by {holder}; not started", file=sys.stderr)
            return 0
        try:
            spec = SweepSpec.from_stored(sweep.spec)
        except Exception as err:  # noqa: BLE001 - a stored spec it cannot read: fail it, never loop
            # (a restart would fail the same way, holding the sweep slot and recording nothing)
            log.error("sweep %s: cannot read its stored spec: %s", sweep_id, err)
            repo.set_sweep_state(s, sweep_id, SweepState.failed, only_from=ACTIVE_SWEEP_STATES,
                                 error=f"cannot read the sweep's stored spec: {type(err).__name__}: {err}")
            return 1
    try:
        result = drive(engine, db_url, sweep_id, spec)
    except Exception as err:
        if store_outage(err) is not None or is_transient(err):
            # the database is down (past the retry bound, or in a call not retried): not the sweep's
            # fault. Leave it RUNNING; the supervisor resumes it (Tune restores the experiment).
            log.error("sweep %s: the store is unreachable; exiting (%d) without failing the sweep, so it can "
                      "be resumed: %s", sweep_id, EXIT_STORE_UNAVAILABLE, store_outage(err) or err)
            return EXIT_STORE_UNAVAILABLE
        # the sweep failed as a whole: record why, for people and the API
        log.exception("sweep %s failed", sweep_id)
        with session_scope(engine) as s:
            repo.set_sweep_state(s, sweep_id, SweepState.failed, error=f"driver error: {err}",
                                 only_from=ACTIVE_SWEEP_STATES)
        return 1
    log.info("sweep %s finished: %s", sweep_id, result["state"])
    return 0


def drive(engine, db_url: str, sweep_id: str, spec: SweepSpec, *, on_progress=None) -> dict:
    """Run or resume the sweep until its trials are done (or it is cancelled); finalize it and
    return the result document. ``on_progress`` gets the trials' states at every heartbeat."""
    settings = get_settings()
    home = Path(settings.home)
    with session_scope(engine) as s:
        repo.set_sweep_state(s, sweep_id, SweepState.running, only_from=ACTIVE_SWEEP_STATES)
        held = repo.beat(s, sweep_id, controller=driver_name())  # the callers claimed it just now
        sweep = repo.get_sweep(s, sweep_id)
        segment, study = sweep.extensions or 0, sweep.optuna_study_name or f"sweepd-{sweep_id}"
        last = max((t.number for t in repo.list_trials(s, sweep_id)), default=0)
    if not held:  # taken by another driver in the meantime
        stop_driving(sweep_id, sweep.controller)
    beat = Heartbeat(engine, sweep_id, on_progress)
    beat.start()
    try:
        run_sweep(spec, sweep_id=sweep_id, db_url=db_url, home=home, ray_address=settings.ray_address,
                  segment=segment, first_number=last + 1 if segment else 1, study_name=study)
    finally:
        beat.stop()
    with session_scope(engine) as s:  # an extension may have moved to a study of its own
        study = repo.get_sweep(s, sweep_id).optuna_study_name or study
    close_orphaned_trials(db_url, study)
    with session_scope(engine) as s:
        return finalize_sweep(s, spec, sweep_id,
                              models_root=models_dir(home, sweep_id) if spec.save_best_model else None)


def run_local(spec: SweepSpec, *, new: bool = False, on_progress=None, on_start=None,
              preflight: dict | None = None) -> dict:
    """`sweepd run`: create (or find the unfinished) sweep for this spec and drive it here.
    ``on_start(sweep_id, resumed)`` is called once the sweep is known; ``preflight`` (the data
    preflight's summary) is stored with a new sweep as a "data" event."""
    settings = get_settings()
    db_url = settings.resolved_database_url
    Path(settings.home).mkdir(parents=True, exist_ok=True)
    upgrade(db_url)
    engine = make_engine(db_url)
    doc = spec.to_stored()
    with session_scope(engine) as s:
        sweep = None if new else find_resumable(s, doc)
        resumed = sweep is not None
        if sweep is None:
            problems = warm_start.check_reference(s, spec)  # search.warm_start: <sweep id>
            if problems:
                raise SpecError(problems)
            sweep = repo.create_sweep(s, name=spec.name, spec=doc, fingerprint=fingerprint(spec))
            if preflight is not None:
                repo.add_preflight_event(s, sweep.id, preflight)
        holder = claim(s, sweep)
        if holder is not None:  # another driver took it since find_resumable looked
            raise RuntimeError(f"sweep {sweep.id} was just taken over by {holder}; run again to start anew")
        sweep_id = sweep.id
    if on_start:
        on_start(sweep_id, resumed)
    return drive(engine, db_url, sweep_id, spec, on_progress=on_progress)


def extend_local(sweep_id: str, *, trials: int | None = None, budget: float | None = None, space=None,
                 on_progress=None, on_start=None) -> dict:
    """`sweepd extend ID --local`: extend the finished sweep in the local store and drive it here.
    Without an amount, a sweep left queued or running by a driver that died (an extension cut
    short) is driven on instead. ``on_start(sweep_id, spec, resumed)`` is called once it is known.
    Raises repo.NotFound, ExtendConflict or SpecError."""
    from sweepd.service.extend import ExtendConflict, extend_sweep

    settings = get_settings()
    db_url = settings.resolved_database_url
    Path(settings.home).mkdir(parents=True, exist_ok=True)
    upgrade(db_url)
    engine = make_engine(db_url)
    with session_scope(engine) as s:
        sweep = repo.get_sweep(s, sweep_id)
        if sweep is None:
            raise repo.NotFound(f"no sweep {sweep_id!r}")
        resumed = (sweep.state in ACTIVE_SWEEP_STATES and sweep.state != SweepState.validating.value
                   and trials is None and budget is None and not space)
        if resumed and driver_holds(sweep):
            raise ExtendConflict(f"sweep {sweep_id!r} is {sweep.state}, driven by {sweep.controller}")
        if not resumed:
            sweep = extend_sweep(s, sweep_id, trials=trials, budget=budget, space=space, by="sweepd extend --local")
        holder = claim(s, sweep)  # a reopened sweep has no driver: only a race loses it
        if holder is not None:
            raise ExtendConflict(f"sweep {sweep_id!r} is {sweep.state}, driven by {holder}")
        spec = SweepSpec.from_stored(sweep.spec)
    if on_start:
        on_start(sweep_id, spec, resumed)
    return drive(engine, db_url, sweep_id, spec, on_progress=on_progress)


# ---- helpers --------------------------------------------------------------------------------


def find_resumable(session, spec_doc: dict) -> Sweep | None:
    """The newest unfinished sweep with this very spec whose driver is gone, if any."""
    runnable = [s for s in ACTIVE_SWEEP_STATES if s != SweepState.validating.value]  # a server validates that one
    candidates = session.scalars(
        select(Sweep).where(Sweep.name == spec_doc["name"], Sweep.state.in_(runnable))
        .order_by(Sweep.created_at.desc())
    ).all()
    for sweep in candidates:
        if sweep.spec == spec_doc and not driver_holds(sweep):
            return sweep
    return None


def claim(session, sweep: Sweep, *, also_mine: tuple[str, ...] = ()) -> str | None:
    """Take ``sweep`` (as read in this session) for this process, unless another driver holds it
    (`driver_holds`); holders in ``also_mine`` are taken over whatever their heartbeat. None when
    this process holds it now; else who does (the holder seen, or the winner of a race)."""
    me, holder = driver_name(), sweep.controller
    if holder != me and holder not in also_mine and driver_holds(sweep):
        return holder
    if repo.claim_sweep(session, sweep.id, controller=me, expected=holder):
        return None
    return repo.sweep_controller(session, sweep.id) or "another driver"


def stop_driving(sweep_id: str, holder: str | None) -> None:
    """This driver lost its sweep to ``holder``: stop now, the way the service stops a driver
    (SIGTERM; main() exits through Python so Ray shuts down; the sweep stays as it is)."""
    log.error("sweep %s is now driven by %s; this driver stops", sweep_id, holder)
    os.kill(os.getpid(), signal.SIGTERM)


def driver_holds(sweep: Sweep, *, stale_after: timedelta = STALE_AFTER) -> bool:
    """Whether the sweep's recorded driver may still be driving it: its heartbeat is fresh and,
    on this host, its pid still runs the process that wrote that heartbeat. (The supervisor judges
    a silent driver more carefully, see supervisor.py.)"""
    beat = sweep.heartbeat_at
    if not sweep.controller or beat is None or utcnow() - beat >= stale_after:
        return False
    return driver_alive(sweep.controller, since=beat) if is_local(sweep.controller) else True


class Heartbeat(threading.Thread):
    """Keeps the sweep's heartbeat fresh while this process holds it, and hands progress (trial
    states) to a callback. Once another driver holds the sweep it stops beating and calls
    ``on_lost(sweep_id, holder)`` (default `stop_driving`)."""

    def __init__(self, engine, sweep_id: str, on_progress=None, on_lost=None) -> None:
        super().__init__(daemon=True)
        self.engine, self.sweep_id, self.on_progress = engine, sweep_id, on_progress
        self.on_lost = on_lost or stop_driving
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(HEARTBEAT_SECONDS):
            try:
                with session_scope(self.engine) as s:
                    holder = None if repo.beat(s, self.sweep_id, controller=driver_name()) else \
                        repo.sweep_controller(s, self.sweep_id)
                    if holder is None and self.on_progress:
                        self.on_progress([t.state for t in repo.list_trials(s, self.sweep_id)])
            except Exception:  # a busy database must not kill the sweep; the next beat retries
                continue
            if holder is not None:
                self.on_lost(self.sweep_id, holder)
                return

    def stop(self) -> None:
        self._stop_event.set()


def driver_name(pid: int | None = None) -> str:
    """"pid@host" of a driver process (default: this one), as stored in `Sweep.controller`."""
    return f"{pid or os.getpid()}@{socket.gethostname()}"


def driver_host(name: str | None) -> str | None:
    """The host part of a driver's "pid@host" name (None when there is none)."""
    return name.split("@", 1)[1] if name and "@" in name else None


def is_local(name: str | None) -> bool:
    """Whether a driver's "pid@host" names this host (its pid can be looked at here)."""
    return driver_host(name) == socket.gethostname()


def driver_alive(name: str | None, since: datetime | None = None) -> bool:
    """A driver "pid@host" on this host is alive when that pid still runs (and is not a zombie)
    and, given ``since`` (its last heartbeat), that process started before it: one started later
    got the pid after the driver was gone (a reboot, the pids wrapping around).
    A driver on another host is never known alive here: its heartbeat tells."""
    if not is_local(name):
        return False
    pid = name.split("@", 1)[0]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped by its parent) is dead too
        if Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] == "Z":
            return False
    except (OSError, IndexError):
        return True
    started = process_started_at(int(pid))
    return since is None or started is None or started <= since.timestamp() + START_SLACK_SECONDS


def process_started_at(pid: int) -> float | None:
    """When process ``pid`` started (Unix time), from /proc; None where that cannot be read."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[19])  # field 22
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
