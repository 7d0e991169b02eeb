"""Migration 0002 (fingerprint, warm-start provenance, extension count) from the previous head,
and the repository functions behind warm starts and extensions; SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import inspect, text, update

from sweepd.store import Sweep, make_engine, repo, session_scope, upgrade
from sweepd.store.migrate import current_revision, downgrade, head_revision
from sweepd.store.models import utcnow
from tests.store.test_migrations import _schema_diff

PREVIOUS_HEAD = "0001"


def test_upgrade_from_the_previous_head_keeps_the_sweeps_and_adds_the_columns(db_url):
    upgrade(db_url, PREVIOUS_HEAD)
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO sweepd_sweeps (id, name, state, spec, created_at, ledger, optuna_study_name) "
                "VALUES ('old1', 'nightly', 'succeeded', '{\"name\": \"nightly\"}', :now, '{}', 'sweepd-old1')"),
                {"now": utcnow()})
        upgrade(db_url)
        assert current_revision(db_url) == head_revision()
        assert _schema_diff(db_url) == []
        columns = {c["name"] for c in inspect(engine).get_columns("sweepd_sweeps")}
        assert {"fingerprint", "warm_started_from", "warm_start", "extensions"} <= columns
        assert "ix_sweepd_sweeps_fingerprint_name" in {i["name"] for i in inspect(engine).get_indexes("sweepd_sweeps")}
        with session_scope(engine) as s:
            old = repo.get_sweep(s, "old1")
            assert (old.name, old.state, old.fingerprint, old.warm_start, old.extensions) == (
                "nightly", "succeeded", None, None, 0)
            assert repo.extend_sweep(s, "old1", {"name": "nightly"}, message="extended").extensions == 1
        downgrade(db_url, PREVIOUS_HEAD)
        assert current_revision(db_url) == PREVIOUS_HEAD
        with engine.connect() as conn:
            assert conn.execute(text("SELECT name, state FROM sweepd_sweeps")).all() == [("nightly", "queued")]
        upgrade(db_url)
        assert _schema_diff(db_url) == []
    finally:
        engine.dispose()


def _sweep(session, name: str, fingerprint: str | None, state: str, finished_minutes_ago: int = 0) -> str:
    sweep = repo.create_sweep(session, name=name, spec={"name": name}, fingerprint=fingerprint)
    if state != "queued":
        repo.set_sweep_state(session, sweep.id, "running")
        repo.set_sweep_state(session, sweep.id, state)
        session.execute(update(Sweep).where(Sweep.id == sweep.id)
                        .values(finished_at=utcnow() - timedelta(minutes=finished_minutes_ago)))
    return sweep.id


def test_previous_sweep_is_the_latest_finished_succeeded_one(session):
    fp = "a" * 64
    older = _sweep(session, "nightly", fp, "succeeded", finished_minutes_ago=60)
    newest = _sweep(session, "nightly", fp, "succeeded", finished_minutes_ago=5)
    _sweep(session, "nightly", fp, "failed")
    _sweep(session, "nightly", fp, "queued")
    _sweep(session, "nightly", "b" * 64, "succeeded")
    _sweep(session, "weekly", fp, "succeeded")
    assert repo.previous_sweep(session, name="nightly", fingerprint=fp).id == newest
    assert repo.previous_sweep(session, name="nightly", fingerprint=fp, exclude=newest).id == older
    assert repo.previous_sweep(session, name="nightly", fingerprint="c" * 64) is None
    assert repo.previous_sweep(session, name="nightly", fingerprint=None) is None


def test_record_warm_start_and_the_study_name(session):
    sid = _sweep(session, "nightly", None, "queued")
    repo.record_warm_start(session, sid, source="abc", details={"mode": "previous", "trials_added": 3})
    repo.set_study_name(session, sid, f"sweepd-{sid}-x1")
    session.commit()
    sweep = repo.get_sweep(session, sid)
    assert (sweep.warm_started_from, sweep.warm_start, sweep.optuna_study_name) == (
        "abc", {"mode": "previous", "trials_added": 3}, f"sweepd-{sid}-x1")
    with pytest.raises(repo.NotFound):
        repo.record_warm_start(session, "nope", source=None, details={})


@pytest.mark.parametrize("state", ["succeeded", "failed", "cancelled"])
def test_extend_sweep_queues_a_finished_sweep_again(session, state: str):
    sid = _sweep(session, "nightly", None, state)
    session.execute(update(Sweep).where(Sweep.id == sid).values(error="boom", best_trial_id="x", controller="1@h"))
    sweep = repo.extend_sweep(session, sid, {"name": "nightly", "more": 1}, message="sweep extended: +2 trials",
                              payload={"trials": 2})
    assert (sweep.state, sweep.extensions, sweep.spec["more"]) == ("queued", 1, 1)
    assert (sweep.finished_at, sweep.error, sweep.best_trial_id, sweep.controller) == (None, None, None, None)
    assert sweep.started_at is not None  # it ran before
    event = repo.list_events(session, sid)[-1]
    assert (event.kind, event.message) == ("state", "sweep extended: +2 trials")
    assert event.payload == {"state": "queued", "extension": 1, "trials": 2}
    assert repo.extend_sweep(session, sid, {"name": "nightly"}, message="again") is None  # queued: not finished
    with pytest.raises(repo.NotFound):
        repo.extend_sweep(session, "nope", {}, message="x")
