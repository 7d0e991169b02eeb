from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from sweepd.store import Sweep, SweepState, repo
from sweepd.store.models import utcnow
from sweepd.store.repo import NotFound


def test_create_and_get(session):
    sweep = repo.create_sweep(session, name="demo", spec={"search": {"num_trials": 3}})
    session.commit()
    got = repo.get_sweep(session, sweep.id)
    assert got.name == "demo" and got.state == "queued"
    assert got.spec == {"search": {"num_trials": 3}}
    assert got.ledger == {}
    assert got.optuna_study_name == f"sweepd-{sweep.id}"
    assert got.started_at is None and got.finished_at is None
    assert repo.get_sweep(session, "nope") is None


def test_state_changes_set_timestamps_and_record_events(session):
    sweep = repo.create_sweep(session, name="s", spec={})
    running = repo.set_sweep_state(session, sweep.id, SweepState.running)
    started = running.started_at
    assert running.state == "running" and started is not None and running.finished_at is None
    repo.set_sweep_state(session, sweep.id, "running")  # e.g. resumed: started_at is kept
    failed = repo.set_sweep_state(session, sweep.id, "failed", error="controller died")
    session.commit()
    assert failed.started_at == started
    assert failed.finished_at is not None and failed.error == "controller died"
    events = repo.list_events(session, sweep.id, kind="state")
    assert [e.payload["state"] for e in events] == ["running", "running", "failed"]
    assert "controller died" in events[-1].message


def test_compare_and_set(session):
    sweep = repo.create_sweep(session, name="s", spec={})
    repo.set_sweep_state(session, sweep.id, "cancelled")
    assert repo.set_sweep_state(session, sweep.id, "succeeded", only_from=["running"]) is None
    assert repo.get_sweep(session, sweep.id).state == "cancelled"
    assert repo.set_sweep_state(session, sweep.id, "queued", only_from=["cancelled"]).state == "queued"


def test_bad_states_and_missing_sweeps(session):
    sweep = repo.create_sweep(session, name="s", spec={})
    with pytest.raises(ValueError, match="unknown sweep state 'paused'"):
        repo.set_sweep_state(session, sweep.id, "paused")
    with pytest.raises(NotFound):
        repo.set_sweep_state(session, "missing", "running")
    with pytest.raises(NotFound):
        repo.heartbeat(session, "missing")
    with pytest.raises(NotFound):
        repo.update_ledger(session, "missing", {})


def test_pagination_and_state_filter(session):
    ids = []
    for i in range(23):
        sweep = repo.create_sweep(session, name=f"s{i}", spec={})
        # distinct creation times, oldest first
        session.execute(
            update(Sweep).where(Sweep.id == sweep.id)
            .values(created_at=utcnow() - timedelta(minutes=100 - i))
        )
        ids.append(sweep.id)
        if i % 3 == 0:
            repo.set_sweep_state(session, sweep.id, "running")
        elif i % 3 == 1:
            repo.set_sweep_state(session, sweep.id, "succeeded")
    session.commit()

    pages = [repo.list_sweeps(session, limit=10, offset=o) for o in (0, 10, 20)]
    assert [p.total for p in pages] == [23, 23, 23]
    assert [len(p.items) for p in pages] == [10, 10, 3]
    seen = [s.id for p in pages for s in p.items]
    assert seen == list(reversed(ids))  # newest first, no overlap, nothing missing
    assert repo.list_sweeps(session, limit=10, offset=30).items == []

    running = repo.list_sweeps(session, state="running", limit=100)
    assert running.total == 8 and all(s.state == "running" for s in running.items)
    queued = repo.list_sweeps(session, state=SweepState.queued, limit=5)
    assert queued.total == 7 and len(queued.items) == 5
    both = repo.list_sweeps(session, state=["running", "queued"], limit=100)
    assert both.total == 15
    with pytest.raises(ValueError):
        repo.list_sweeps(session, state="nope")
    with pytest.raises(ValueError):
        repo.list_sweeps(session, limit=0)


def test_heartbeat_and_stale_sweeps(session):
    alive = repo.create_sweep(session, name="alive", spec={})
    dead = repo.create_sweep(session, name="dead", spec={})
    queued = repo.create_sweep(session, name="queued", spec={})
    for s in (alive, dead):
        repo.set_sweep_state(session, s.id, "running")
    repo.heartbeat(session, alive.id, controller="123@host")
    repo.heartbeat(session, dead.id, controller="456@host")
    session.execute(
        update(Sweep).where(Sweep.id == dead.id)
        .values(heartbeat_at=utcnow() - timedelta(minutes=5))
    )
    session.commit()
    stale = repo.stale_sweeps(session, older_than=timedelta(minutes=1))
    assert [s.id for s in stale] == [dead.id]
    assert repo.get_sweep(session, alive.id).controller == "123@host"
    assert queued.id not in {s.id for s in stale}


def test_stale_sweeps_with_a_host_adds_every_driver_on_that_host(session):
    """The supervisor asks for its own host too: it can tell at once whether a local pid lives."""
    old = utcnow() - timedelta(minutes=10)
    drivers = {"here": "1@host_a", "here-silent": "2@host_a", "there": "3@host_b", "lookalike": "4@hostXa",
               "there-silent": "5@host_b", "nobody": None}
    ids = {}
    for name, controller in drivers.items():
        sweep = repo.create_sweep(session, name=name, spec={})
        repo.set_sweep_state(session, sweep.id, "running")
        repo.heartbeat(session, sweep.id, controller=controller)
        beat = old if name.endswith("silent") else utcnow()
        session.execute(update(Sweep).where(Sweep.id == sweep.id).values(heartbeat_at=beat, created_at=old))
        old += timedelta(seconds=1)  # creation order: the order of `drivers`
        ids[name] = sweep.id
    finished = repo.create_sweep(session, name="finished", spec={})
    repo.heartbeat(session, finished.id, controller="6@host_a")
    repo.set_sweep_state(session, finished.id, "succeeded")
    session.commit()

    def names(**kwargs) -> list[str]:
        by_id = {sweep_id: name for name, sweep_id in ids.items()}
        return [by_id[s.id] for s in repo.stale_sweeps(session, older_than=timedelta(minutes=1), **kwargs)]

    assert names() == ["here-silent", "there-silent"]
    # "_" is no wildcard: host_a does not match hostXa
    assert names(host="host_a") == ["here", "here-silent", "there-silent"]


def test_ledger_merge_and_replace(session):
    sweep = repo.create_sweep(session, name="s", spec={})
    repo.update_ledger(session, sweep.id, {"samples": 100, "tokens": 5000})
    session.commit()
    assert repo.update_ledger(session, sweep.id, {"samples": 250, "saved_fraction": 0.4}) == {
        "samples": 250, "tokens": 5000, "saved_fraction": 0.4,
    }
    session.commit()
    session.expire_all()
    assert repo.get_sweep(session, sweep.id).ledger["samples"] == 250
    repo.update_ledger(session, sweep.id, {"x": 1}, replace=True)
    session.commit()
    session.expire_all()
    assert repo.get_sweep(session, sweep.id).ledger == {"x": 1}


def test_best_trial(session):
    sweep = repo.create_sweep(session, name="s", spec={})
    other = repo.create_sweep(session, name="o", spec={})
    trial = repo.upsert_trial(session, sweep.id, 0)
    foreign = repo.upsert_trial(session, other.id, 0)
    repo.set_best_trial(session, sweep.id, trial.id)
    session.commit()
    assert repo.get_sweep(session, sweep.id).best_trial_id == trial.id
    with pytest.raises(NotFound):
        repo.set_best_trial(session, sweep.id, foreign.id)
