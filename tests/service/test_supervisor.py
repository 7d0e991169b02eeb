"""The supervisor, one `tick()` at a time, with tiny fake drivers (a `python -c` that sleeps or exits
at once) in place of `python -m sweepd.service.driver`: no Ray, no training."""

from __future__ import annotations

import os
import signal
import sys
import time
from datetime import timedelta

import pytest

from sweepd.service import supervisor as supervisor_module
from sweepd.service.driver import driver_name
from sweepd.service.supervisor import CONFIRM_SECONDS, DRIVER_COMMAND, Supervisor
from sweepd.store import repo, session_scope
from tests.service.support import EXITS, HOST, SLEEPS, Clock, dead_pid, get, resumes, state_events, sweep

# ignores SIGTERM, and says so once it does (the supervisor writes a driver's output to its log)
STUBBORN = [sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
            "time.sleep(60)"]


def wait_for_drivers(sup: Supervisor) -> None:
    for d in sup.drivers.values():
        d.proc.wait(timeout=30)


def test_the_default_driver_is_the_driver_module():
    assert list(DRIVER_COMMAND) == [sys.executable, "-m", "sweepd.service.driver"]


@pytest.mark.parametrize("kwargs, message", [({"max_sweeps": 0}, "max_sweeps must be at least 1, got 0"),
                                             ({"max_restarts": -1}, "max_restarts must be at least 0, got -1")])
def test_bad_arguments_are_refused_with_the_value(engine, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Supervisor(engine, **kwargs)


def test_starts_queued_sweeps_oldest_first_up_to_max_sweeps(engine, make_supervisor):
    newest = sweep(engine, "newest", age_minutes=1)
    oldest = sweep(engine, "oldest", age_minutes=3)
    middle = sweep(engine, "middle", age_minutes=2)
    sweep(engine, "done", state="succeeded", age_minutes=9)
    sup = make_supervisor(max_sweeps=2, driver_command=SLEEPS)

    sup.tick()
    assert set(sup.drivers) == {oldest, middle}
    for sweep_id, d in sup.drivers.items():
        assert d.proc.args == [*SLEEPS, sweep_id]
        assert get(engine, sweep_id).controller == driver_name(d.proc.pid)  # claimed at once
    assert get(engine, newest).controller is None
    pids = {sweep_id: d.proc.pid for sweep_id, d in sup.drivers.items()}

    sup.tick()  # full: nothing new, nothing started twice
    assert {sweep_id: d.proc.pid for sweep_id, d in sup.drivers.items()} == pids

    with session_scope(engine) as s:  # the oldest sweep ends and its driver exits
        repo.set_sweep_state(s, oldest, "succeeded")
    sup.drivers[oldest].proc.terminate()
    sup.drivers[oldest].proc.wait()
    sup.tick()
    assert set(sup.drivers) == {middle, newest}


def test_resumes_running_sweeps_whose_driver_is_gone(engine, make_supervisor, monkeypatch):
    clock = Clock(monkeypatch)
    gone = f"{dead_pid()}@{HOST}"
    crashed = sweep(engine, "crashed", state="running", controller=gone, heartbeat_age_minutes=0)
    local_run = sweep(engine, "sweepd-run", state="running", controller=driver_name(), heartbeat_age_minutes=0)
    remote = sweep(engine, "remote", state="running", controller="4242@elsewhere", heartbeat_age_minutes=0)
    remote_silent = sweep(engine, "remote-silent", state="running", controller="4343@elsewhere",
                          heartbeat_age_minutes=5)
    sup = make_supervisor(max_sweeps=1, driver_command=SLEEPS, stale_after=timedelta(minutes=1))

    sup.tick()
    # a dead local pid is gone at once; a live local driver (`sweepd run` here, this very process)
    # and a remote one that beats are left alone
    assert set(sup.drivers) == {crashed}
    clock.advance(CONFIRM_SECONDS - 0.1)
    sup.tick()  # a silent remote driver: stale, but on probation for CONFIRM_SECONDS
    assert set(sup.drivers) == {crashed}
    clock.advance(0.1)
    sup.tick()
    # resuming does not count against max_sweeps, which is for queued sweeps
    assert set(sup.drivers) == {crashed, remote_silent}
    for sweep_id in (crashed, remote_silent):
        assert get(engine, sweep_id).controller == driver_name(sup.drivers[sweep_id].proc.pid)
        [event] = resumes(engine, sweep_id)
        assert event.message == "driver gone; resuming the sweep" and event.payload["restart"] == 1
    assert resumes(engine, crashed)[0].payload["reason"] == f"its process {gone} is gone"
    assert resumes(engine, remote_silent)[0].payload["reason"].startswith("no heartbeat from 4343@elsewhere for ")
    for sweep_id in (local_run, remote):
        assert not resumes(engine, sweep_id)

    sup.tick()  # the resumed drivers live: no second restart
    assert sup.restarts == {crashed: 1, remote_silent: 1}


def test_fails_a_sweep_whose_driver_keeps_dying_after_max_restarts(engine, make_supervisor):
    sweep_id = sweep(engine, "doomed", state="running", controller=f"{dead_pid()}@{HOST}", heartbeat_age_minutes=0)
    sup = make_supervisor(max_restarts=2, driver_command=EXITS)

    for restart in (1, 2):
        sup.tick()
        assert set(sup.drivers) == {sweep_id}, f"restart {restart}"
        wait_for_drivers(sup)
        assert get(engine, sweep_id).state == "running"
    sup.tick()

    failed = get(engine, sweep_id)
    assert (failed.state, failed.error) == ("failed", "driver died 3 times; giving up")
    assert sup.drivers == {}
    assert [e.payload["restart"] for e in state_events(engine, sweep_id) if "restart" in (e.payload or {})] == [1, 2]
    sup.tick()  # a failed sweep stays failed
    assert sup.drivers == {} and get(engine, sweep_id).state == "failed"


def test_a_driver_that_gave_up_on_an_unreachable_store_does_not_count_as_a_restart(engine, make_supervisor):
    from sweepd.service.driver import EXIT_STORE_UNAVAILABLE

    sweep_id = sweep(engine, "outages", state="running", controller=f"{dead_pid()}@{HOST}", heartbeat_age_minutes=0)
    sup = make_supervisor(max_restarts=1, driver_command=[sys.executable, "-c",
                                                          f"raise SystemExit({EXIT_STORE_UNAVAILABLE})"])
    for outage in range(4):  # four outages in a row, more than max_restarts
        sup.tick()
        assert set(sup.drivers) == {sweep_id}, f"outage {outage}"
        wait_for_drivers(sup)
    sup.tick()
    assert get(engine, sweep_id).state == "running" and set(sup.drivers) == {sweep_id}
    # the first start (after the dead driver) counts; the resumes after store outages do not
    assert [e.payload["restart"] for e in state_events(engine, sweep_id) if "restart" in (e.payload or {})] == [1, 1, 1, 1, 1]


def test_kills_the_driver_of_a_cancelled_sweep_after_the_grace_period(engine, make_supervisor):
    sweep_id = sweep(engine, "cancel-me")
    sup = make_supervisor(driver_command=SLEEPS, cancel_grace_seconds=0.5)
    sup.tick()
    proc = sup.drivers[sweep_id].proc
    with session_scope(engine) as s:
        repo.set_sweep_state(s, sweep_id, "cancelled")

    sup.tick()  # cancellation seen: the driver gets its grace period to stop by itself
    time.sleep(0.1)
    assert proc.poll() is None
    time.sleep(0.5)
    sup.tick()
    assert proc.wait(timeout=10) == -signal.SIGKILL
    sup.tick()  # reaped, and a cancelled sweep is not resumed
    assert sup.drivers == {} and sup.restarts == {}
    assert get(engine, sweep_id).state == "cancelled"


def test_stop_terminates_every_driver_and_kills_one_that_ignores_it(engine, make_supervisor, tmp_path, monkeypatch):
    monkeypatch.setattr(supervisor_module, "STOP_WAIT_SECONDS", 1.0)
    polite = sweep(engine, "polite", age_minutes=2)
    stubborn = sweep(engine, "stubborn", age_minutes=1)
    sup = make_supervisor(max_sweeps=1, driver_command=SLEEPS, tick_seconds=0.05, log_dir=tmp_path / "logs")
    sup.tick()  # the older sweep gets a polite driver ...
    sup.max_sweeps, sup.driver_command = 2, STUBBORN
    sup.start()  # ... and the supervisor's own loop starts a stubborn one for the other
    deadline = time.monotonic() + 30
    log = tmp_path / "logs" / f"driver-{stubborn}.log"
    while not (log.exists() and "ready" in log.read_text()):
        assert time.monotonic() < deadline, "the stubborn driver never started"
        time.sleep(0.05)
    procs = {sweep_id: d.proc for sweep_id, d in sup.drivers.items()}
    assert set(procs) == {polite, stubborn}

    sup.stop()
    assert not sup._thread.is_alive()
    assert procs[polite].returncode == -signal.SIGTERM
    assert procs[stubborn].returncode == -signal.SIGKILL
    with pytest.raises(ProcessLookupError):
        os.kill(procs[stubborn].pid, 0)


def test_never_starts_a_sweep_still_validating_its_data(engine, make_supervisor):
    validating = sweep(engine, "validating", age_minutes=5)  # the oldest: first in line if it counted
    with session_scope(engine) as s:
        repo.set_sweep_state(s, validating, "validating")
    queued = sweep(engine, "queued")
    sup = make_supervisor(max_sweeps=3, driver_command=SLEEPS)
    sup.tick()
    sup.tick()
    assert set(sup.drivers) == {queued}
    assert get(engine, validating).state == "validating" and get(engine, validating).controller is None
    with session_scope(engine) as s:  # the preflight passed: now it is started
        repo.set_sweep_state(s, validating, "queued", only_from=["validating"])
    sup.tick()
    assert set(sup.drivers) == {queued, validating}


EXITS_1 = [sys.executable, "-c", "raise SystemExit(1)"]


def test_a_queued_sweep_whose_driver_keeps_failing_backs_off_then_fails(engine, make_supervisor, monkeypatch):
    """#15 finding 1: a driver that exits 1 before the sweep runs was started again every tick
    (9 times in 25 s, each importing ray and torch) and the sweep stayed queued, no error."""
    sweep_id = sweep(engine, "poison")
    sup = make_supervisor(max_restarts=2, driver_command=EXITS_1)
    clock = [1000.0]
    monkeypatch.setattr(supervisor_module.time, "monotonic", lambda: clock[0])
    starts = 0
    for _ in range(20):  # 20 ticks within the same second: one start, then it waits
        sup.tick()
        starts += sweep_id in sup.drivers
        wait_for_drivers(sup)
        sup._reap()  # the driver's exit, noticed now
    assert starts == 1 and sup._start_backoff(sweep_id) == 1.0
    for wait in (1.0, 2.0):  # backs off 1 s, then 2 s
        clock[0] += wait - 0.01
        sup.tick()
        assert sweep_id not in sup.drivers
        clock[0] += 0.01
        sup.tick()
        assert sweep_id in sup.drivers
        wait_for_drivers(sup)
        sup._reap()  # the driver's exit, noticed now
    sup.tick()  # 3 failed starts > max_restarts 2: failed, with the reason
    failed = get(engine, sweep_id)
    assert failed.state == "failed" and "driver exited with an error 3 times" in failed.error
    assert sup.drivers == {}
