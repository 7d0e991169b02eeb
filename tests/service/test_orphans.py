"""#15 finding 7, orphans after a reboot: which recorded drivers the supervisor counts as gone.

A pid alone proves nothing (after a reboot it may name an unrelated process), a stale heartbeat
alone neither (the store may have been down, so nobody could beat). The supervisor resumes a sweep
whose pid now names a process started after the driver's last heartbeat at once, and one whose
driver is silent only after its heartbeat stood still for CONFIRM_SECONDS of ticks that reached the
store; never one driven by its own child."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.engine import make_url

from sweepd.service.driver import HEARTBEAT_SECONDS, driver_alive, driver_name, process_started_at
from sweepd.service.supervisor import CONFIRM_SECONDS
from sweepd.store import Sweep, make_engine, session_scope
from sweepd.store.models import utcnow
from tests.service.support import SLEEPS, Clock, get, resumes, sweep

# a `sweepd run` driver as far as the supervisor can tell: a process of its own that claimed the
# sweep and keeps its heartbeat with the driver's Heartbeat thread
BEATING_DRIVER = """
import sys, time
from sweepd.service.driver import Heartbeat, claim
from sweepd.store import make_engine, repo, session_scope
engine = make_engine(sys.argv[1])
with session_scope(engine) as s:
    assert claim(s, repo.get_sweep(s, sys.argv[2])) is None
Heartbeat(engine, sys.argv[2]).start()
print("driving", flush=True)
time.sleep(600)
"""


@pytest.fixture
def processes():
    """start(argv) -> Popen; every process started is killed at the end."""
    started: list[subprocess.Popen] = []

    def start(argv: list[str], **kwargs) -> subprocess.Popen:
        started.append(subprocess.Popen(argv, **kwargs))
        return started[-1]

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def start_beating_driver(processes, url: str, sweep_id: str) -> subprocess.Popen:
    proc = processes([sys.executable, "-c", BEATING_DRIVER, url, sweep_id], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "driving"
    return proc


def test_a_pid_started_after_the_last_heartbeat_is_not_the_driver(processes):
    sleeper = processes(["sleep", "600"])
    name = driver_name(sleeper.pid)
    started = process_started_at(sleeper.pid)
    assert started is not None and abs(started - time.time()) < 5
    assert driver_alive(name)  # the pid runs ...
    assert driver_alive(name, since=utcnow())  # ... and could have written a heartbeat now
    assert not driver_alive(name, since=utcnow() - timedelta(minutes=10))  # not one 10 minutes ago


def test_after_a_reboot_a_sweep_whose_pid_names_an_unrelated_process_is_resumed_at_once(
        engine, make_supervisor, processes):
    """The must-show of finding 7: the recorded pid is alive, but it is a `sleep` started after the
    driver's last heartbeat; the supervisor resumes the sweep within two heartbeat periods."""
    sleeper = processes(["sleep", "600"])
    recorded = driver_name(sleeper.pid)
    sweep_id = sweep(engine, "rebooted", state="running", controller=recorded, heartbeat_age_minutes=10)
    sup = make_supervisor(driver_command=SLEEPS, tick_seconds=0.2)

    began = time.monotonic()
    sup.start()
    while not resumes(engine, sweep_id):
        assert time.monotonic() - began < 2 * HEARTBEAT_SECONDS, "the sweep was not resumed"
        time.sleep(0.05)
    print(f"resumed {time.monotonic() - began:.2f} s after the supervisor started")

    [event] = resumes(engine, sweep_id)
    assert event.message == "driver gone; resuming the sweep"
    assert event.payload == {"restart": 1, "reason": f"pid {recorded} now belongs to a process started after "
                                                     f"the driver's last heartbeat"}
    deadline = time.monotonic() + 5
    while get(engine, sweep_id).controller == driver_name():  # the claim goes to the new driver's pid
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert get(engine, sweep_id).controller == driver_name(sup.drivers[sweep_id].proc.pid)
    assert sleeper.poll() is None  # the unrelated process is left alone


def test_a_beating_sweepd_run_driver_is_not_taken_over(sqlite_url, engine, make_supervisor, processes):
    """A live pid of another process with a fresh heartbeat: a `sweepd run` driving the sweep. Watched
    for longer than stale_after and the probation together, it keeps its sweep."""
    sweep_id = sweep(engine, "local-run", state="running")
    driver = start_beating_driver(processes, sqlite_url, sweep_id)
    sup = make_supervisor(driver_command=SLEEPS, tick_seconds=0.2, stale_after=timedelta(seconds=3))
    sup.start()
    time.sleep(3 + CONFIRM_SECONDS + 1)
    assert not resumes(engine, sweep_id) and sup.drivers == {}
    assert get(engine, sweep_id).controller == driver_name(driver.pid)
    assert utcnow() - get(engine, sweep_id).heartbeat_at < timedelta(seconds=3)
    assert driver.poll() is None


def test_a_silent_driver_with_a_live_pid_is_resumed_after_its_probation(engine, make_supervisor, processes,
                                                                       monkeypatch):
    """A hung driver (its process runs and wrote its last heartbeat, then went silent): gone by
    its heartbeat, once that stood still for CONFIRM_SECONDS; the old rule never resumed it."""
    clock = Clock(monkeypatch)
    hung = processes(["sleep", "600"])
    time.sleep(0.2)
    sweep_id = sweep(engine, "hung", state="running", controller=driver_name(hung.pid), heartbeat_age_minutes=0)
    sup = make_supervisor(driver_command=SLEEPS, stale_after=timedelta(seconds=1))
    sup.tick()
    assert sup.drivers == {}  # fresh
    time.sleep(1.1)
    sup.tick()  # stale: on probation
    clock.advance(CONFIRM_SECONDS - 0.1)
    sup.tick()
    assert sup.drivers == {} and not resumes(engine, sweep_id)
    clock.advance(0.1)
    sup.tick()
    assert set(sup.drivers) == {sweep_id}
    assert resumes(engine, sweep_id)[0].payload["reason"].startswith(f"no heartbeat from {driver_name(hung.pid)}")


def test_its_own_driver_is_never_resumed_whatever_its_heartbeat(engine, make_supervisor, monkeypatch):
    """While the store was unreachable our own driver could not beat; the supervisor watches its
    child as a process and leaves it alone."""
    clock = Clock(monkeypatch)
    sweep_id = sweep(engine, "ours")
    sup = make_supervisor(driver_command=SLEEPS, stale_after=timedelta(seconds=1))
    sup.tick()
    child = sup.drivers[sweep_id].proc
    with session_scope(engine) as s:  # our driver runs the sweep, then its heartbeat went stale
        s.execute(update(Sweep).where(Sweep.id == sweep_id)
                  .values(state="running", heartbeat_at=utcnow() - timedelta(minutes=10)))
    for _ in range(3):
        sup.tick()
        clock.advance(CONFIRM_SECONDS)
    assert sup.drivers[sweep_id].proc is child and child.poll() is None
    assert not resumes(engine, sweep_id) and sup.restarts == {}


class Outage:
    """The test database stops taking connections, and its open ones are cut: for every process."""

    def __init__(self, admin, url: str) -> None:
        self.admin, self.name = admin, make_url(url).database

    def __enter__(self) -> None:
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{self.name}" WITH ALLOW_CONNECTIONS false')
            conn.exec_driver_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %(n)s",
                                 {"n": self.name})

    def __exit__(self, *exc) -> None:
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{self.name}" WITH ALLOW_CONNECTIONS true')


@pytest.mark.slow
def test_after_a_database_outage_a_sweepd_run_driver_gets_time_to_beat_again(
        pg_url, _postgres_databases, supervisors, processes, caplog):
    """False positive (2): during an outage longer than stale_after nobody can beat. When the store
    is back, the heartbeat of a live `sweepd run` driver is stale for a moment; the supervisor must
    not take the sweep over but wait for its next beat."""
    engine = make_engine(pg_url)
    try:
        sweep_id = sweep(engine, "local-run", state="running")
        driver = start_beating_driver(processes, pg_url, sweep_id)
        sup = supervisors(make_engine(pg_url), driver_command=SLEEPS, tick_seconds=0.2,
                          stale_after=timedelta(seconds=3))
        sup.start()
        time.sleep(2)
        with Outage(_postgres_databases.admin, pg_url):
            time.sleep(5)  # ticks fail, beats fail; the heartbeat is older than stale_after now
        assert "supervisor tick failed" in caplog.text  # the outage was real for the supervisor too
        deadline = time.monotonic() + CONFIRM_SECONDS + 2
        while time.monotonic() < deadline:
            assert not resumes(engine, sweep_id), "a live driver's sweep was taken over after the outage"
            time.sleep(0.2)
        assert sup.drivers == {} and driver.poll() is None
        held = get(engine, sweep_id)
        assert held.controller == driver_name(driver.pid)
        assert utcnow() - held.heartbeat_at < timedelta(seconds=3)  # it beats again
    finally:
        engine.dispose()
