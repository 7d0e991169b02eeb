"""The driver's own logic, without driving a sweep: who is alive, what `sweepd run` resumes, and what
`python -m sweepd.service.driver ID` does before and around `drive`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from sqlalchemy import update

from sweepd.service import driver
from sweepd.service.driver import driver_alive, driver_name, find_resumable
from sweepd.settings import get_settings
from sweepd.store import Sweep, repo, session_scope
from sweepd.store.models import utcnow

HOST = driver_name().split("@", 1)[1]


def test_driver_alive_only_for_a_running_pid_on_this_host():
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])  # exited, not reaped by us yet
    deadline = time.monotonic() + 10
    while open(f"/proc/{zombie.pid}/stat").read().split(") ", 1)[1][0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        assert driver_alive(driver_name()) and driver_name() == f"{os.getpid()}@{HOST}"
        assert not driver_alive(driver_name(exited.pid))
        assert not driver_alive(driver_name(zombie.pid))
        assert not driver_alive(f"{os.getpid()}@another-host")  # its heartbeat tells, not its pid
        for name in (None, "", "fake@test", f"@{HOST}", "12345"):
            assert not driver_alive(name), name
    finally:
        zombie.wait()


def test_sweepd_run_resumes_the_newest_unfinished_sweep_of_the_same_spec_whose_driver_is_gone(engine):
    spec = {"name": "again", "search": {"num_trials": 3}}

    def sweep(state: str, controller: str | None, age: int, spec_doc: dict = spec, beat_age: float = 0) -> str:
        with session_scope(engine) as s:
            sw = repo.create_sweep(s, name=spec_doc["name"], spec=spec_doc)
            if state != "queued":
                repo.set_sweep_state(s, sw.id, state)
            s.execute(update(Sweep).where(Sweep.id == sw.id)
                      .values(controller=controller, created_at=utcnow() - timedelta(minutes=age),
                              heartbeat_at=utcnow() - timedelta(minutes=beat_age) if controller else None))
            return sw.id

    # a live pid whose heartbeat stopped 10 minutes ago (hung, or the pid is another process now)
    silent = sweep("running", driver_name(), age=11, beat_age=10)
    with session_scope(engine) as s:
        assert find_resumable(s, spec).id == silent
    with session_scope(engine) as s:
        repo.set_sweep_state(s, silent, "failed")
    older_dead = sweep("running", f"999999999@{HOST}", age=9)
    sweep("running", driver_name(), age=1)  # driven right now (this process, beating)
    sweep("succeeded", None, age=0)  # finished
    sweep("running", None, age=0, spec_doc={**spec, "search": {"num_trials": 4}})  # another spec
    with session_scope(engine) as s:
        assert find_resumable(s, spec).id == older_dead
    newer_dead = sweep("queued", None, age=5)
    with session_scope(engine) as s:
        assert find_resumable(s, spec).id == newer_dead
        assert find_resumable(s, {"name": "unknown"}) is None


@pytest.fixture
def driver_env(sqlite_url, tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEPD_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("SWEEPD_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    handler = signal.getsignal(signal.SIGTERM)  # main() installs its own
    yield
    signal.signal(signal.SIGTERM, handler)
    get_settings.cache_clear()


def stored_sweep(engine, state: str) -> str:
    with session_scope(engine) as s:
        sw = repo.create_sweep(s, name="d", spec={"name": "d"})
        if state != "queued":
            repo.set_sweep_state(s, sw.id, state)
        return sw.id


def test_main_refuses_a_missing_sweep_and_leaves_a_finished_one_alone(engine, driver_env, monkeypatch, capsys):
    monkeypatch.setattr(driver, "drive", lambda *a, **k: pytest.fail("nothing to drive"))
    assert driver.main([]) == 2 and "usage" in capsys.readouterr().err
    assert driver.main(["nope"]) == 2 and "no sweep 'nope'" in capsys.readouterr().err
    done = stored_sweep(engine, "succeeded")
    assert driver.main([done]) == 0 and "nothing to do" in capsys.readouterr().err
    validating = stored_sweep(engine, "validating")  # the API's data preflight still runs
    assert driver.main([validating]) == 0 and "still validating its data" in capsys.readouterr().err
    with session_scope(engine) as s:
        assert repo.get_sweep(s, validating).state == "validating"
        assert find_resumable(s, {"name": "d"}) is None  # `sweepd run` does not take it over either


def test_main_records_why_a_sweep_failed_as_a_whole(engine, driver_env, monkeypatch):
    sweep_id = stored_sweep(engine, "running")
    monkeypatch.setattr(driver.SweepSpec, "from_stored", staticmethod(lambda doc: json.dumps(doc)))

    def broken_drive(engine_, db_url, sweep_id_, spec):
        assert (sweep_id_, spec) == (sweep_id, '{"name": "d"}')
        raise RuntimeError("ray would not start")

    monkeypatch.setattr(driver, "drive", broken_drive)
    assert driver.main([sweep_id]) == 1
    with session_scope(engine) as s:
        sweep = repo.get_sweep(s, sweep_id)
        assert (sweep.state, sweep.error) == ("failed", "driver error: ray would not start")


def test_main_fails_a_sweep_whose_stored_spec_it_cannot_read(engine, driver_env, monkeypatch):
    """#15 finding 1: a poison spec used to make the driver exit 1 outside its `try`, leaving the
    sweep queued for the supervisor to restart again and again, with no error recorded."""
    sweep_id = stored_sweep(engine, "queued")
    with session_scope(engine) as s:
        s.execute(update(Sweep).where(Sweep.id == sweep_id).values(spec={"schema_version": 99, "name": "d"}))
    monkeypatch.setattr(driver, "drive", lambda *a, **k: pytest.fail("nothing to drive"))
    assert driver.main([sweep_id]) == 1
    with session_scope(engine) as s:
        sweep = repo.get_sweep(s, sweep_id)
        assert sweep.state == "failed"
        assert sweep.error.startswith("cannot read the sweep's stored spec: SpecError") and "schema_version" in sweep.error


def holding(engine, sweep_id: str, controller: str | None, beat_age_seconds: float = 0) -> None:
    with session_scope(engine) as s:
        s.execute(update(Sweep).where(Sweep.id == sweep_id).values(
            controller=controller, heartbeat_at=utcnow() - timedelta(seconds=beat_age_seconds)))


def test_main_refuses_a_sweep_another_live_driver_holds_and_takes_its_supervisors_claim(
        engine, driver_env, monkeypatch, capsys):
    """#15 finding 9: the driver itself checks the claim, so a second one never drives the sweep."""
    driven = []
    monkeypatch.setattr(driver.SweepSpec, "from_stored", staticmethod(lambda doc: doc))
    monkeypatch.setattr(driver, "drive", lambda engine_, db_url, sweep_id, spec: driven.append(sweep_id) or {
        "state": "succeeded"})
    other = subprocess.Popen(["sleep", "60"])
    try:
        time.sleep(0.1)
        held = stored_sweep(engine, "running")
        holding(engine, held, driver_name(other.pid))  # another driver, beating
        assert driver.main([held]) == 0
        assert f"driven by {driver_name(other.pid)}; not started" in capsys.readouterr().err
        assert driven == [] and repo_controller(engine, held) == driver_name(other.pid)

        holding(engine, held, driver_name(other.pid), beat_age_seconds=600)  # silent for 10 minutes: gone
        assert driver.main([held]) == 0 and driven == [held]
        assert repo_controller(engine, held) == driver_name()
    finally:
        other.kill()
        other.wait()

    claimed = stored_sweep(engine, "queued")
    holding(engine, claimed, driver_name(os.getppid()))  # the supervisor that started "us" claimed it
    assert driver.main([claimed]) == 0 and driven == [held, claimed]
    assert repo_controller(engine, claimed) == driver_name()


def repo_controller(engine, sweep_id: str) -> str | None:
    with session_scope(engine) as s:
        return repo.sweep_controller(s, sweep_id)


def test_the_heartbeat_stops_once_another_driver_claims_the_sweep(engine):
    sweep_id = stored_sweep(engine, "running")
    with session_scope(engine) as s:
        assert repo.claim_sweep(s, sweep_id, controller=driver_name(), expected=None)
    first = repo_heartbeat(engine, sweep_id)
    lost = []
    beat = driver.Heartbeat(engine, sweep_id, on_lost=lambda sid, holder: lost.append((sid, holder)))
    beat.start()
    try:
        deadline = time.monotonic() + 3 * driver.HEARTBEAT_SECONDS
        while repo_heartbeat(engine, sweep_id) == first:  # it beats while it holds the sweep
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with session_scope(engine) as s:  # another driver took the sweep over
            assert repo.claim_sweep(s, sweep_id, controller="4242@elsewhere", expected=driver_name())
        taken = repo_heartbeat(engine, sweep_id)
        beat.join(timeout=3 * driver.HEARTBEAT_SECONDS)
        assert not beat.is_alive() and lost == [(sweep_id, "4242@elsewhere")]
        assert repo_controller(engine, sweep_id) == "4242@elsewhere" and repo_heartbeat(engine, sweep_id) == taken
    finally:
        beat.stop()


def repo_heartbeat(engine, sweep_id: str):
    with session_scope(engine) as s:
        return repo.get_sweep(s, sweep_id).heartbeat_at
