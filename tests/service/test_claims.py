"""#15 finding 9: a second driver for the same sweep. Claim first, then spawn: the claim is a
compare-and-set in the store, so of two supervisors on one database (two `sweepd serve`) only one
starts a driver for a queued sweep; on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
import time

import pytest

from sweepd.service.driver import driver_name
from sweepd.store import make_engine, repo, session_scope, upgrade
from tests.service.support import SLEEPS, get, sweep


@pytest.fixture
def two_engines(db_url):
    """Two engines on one migrated database, as two service processes would have."""
    upgrade(db_url)
    engines = [make_engine(db_url), make_engine(db_url)]
    yield engines
    for e in engines:
        e.dispose()


def test_a_claim_is_a_compare_and_set_and_only_the_holder_beats(two_engines):
    engine, _ = two_engines
    sweep_id = sweep(engine, "claimed")
    with session_scope(engine) as s:
        assert repo.claim_sweep(s, sweep_id, controller="1@a", expected=None)
    with session_scope(engine) as s:  # a second claim made on the same sight loses
        assert not repo.claim_sweep(s, sweep_id, controller="2@b", expected=None)
        assert repo.sweep_controller(s, sweep_id) == "1@a"
    before = get(engine, sweep_id).heartbeat_at
    with session_scope(engine) as s:
        assert not repo.beat(s, sweep_id, controller="2@b")  # not the holder: no heartbeat
    assert get(engine, sweep_id).heartbeat_at == before
    time.sleep(0.01)
    with session_scope(engine) as s:
        assert repo.beat(s, sweep_id, controller="1@a")
        assert repo.claim_sweep(s, sweep_id, controller="2@b", expected="1@a")  # what it saw: taken over
    after = get(engine, sweep_id)
    assert after.controller == "2@b" and after.heartbeat_at > before


def drivers_of(sups, sweep_id: str) -> list:
    return [sup.drivers[sweep_id] for sup in sups if sweep_id in sup.drivers]


def test_two_supervisors_on_one_database_start_one_driver_per_queued_sweep(two_engines, supervisors):
    sups = [supervisors(e, max_sweeps=20, driver_command=SLEEPS, tick_seconds=0.05) for e in two_engines]
    engine = two_engines[0]

    # ticks at the same moment, over and over: each sweep gets exactly one driver
    for round_ in range(6):
        sweep_id = sweep(engine, f"together-{round_}")
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def tick(sup):
            barrier.wait()
            try:
                sup.tick()
            except BaseException as err:  # noqa: BLE001 - reported below
                errors.append(err)

        threads = [threading.Thread(target=tick, args=(sup,)) for sup in sups]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors, errors
        [winner] = drivers_of(sups, sweep_id)
        assert get(engine, sweep_id).controller == driver_name(winner.proc.pid)

    # both loops running, sweeps arriving meanwhile
    for sup in sups:
        sup.start()
    later = [sweep(engine, f"later-{i}") for i in range(3)]
    deadline = time.monotonic() + 20
    while not all(drivers_of(sups, sweep_id) for sweep_id in later):
        assert time.monotonic() < deadline, "a queued sweep was never started"
        time.sleep(0.05)
    time.sleep(1)  # ~20 more ticks each: nobody starts a second one
    for sweep_id in later:
        [winner] = drivers_of(sups, sweep_id)
        assert get(engine, sweep_id).controller == driver_name(winner.proc.pid)
    assert sum(len(sup.drivers) for sup in sups) == 6 + 3
