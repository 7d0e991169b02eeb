from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from sweepd.store import Trial, make_engine, repo, session_scope, upgrade
from sweepd.store.db import normalize_url


def test_sqlite_pragmas_and_parent_dir(tmp_path):
    db = tmp_path / "deep" / "er" / "sweepd.db"
    engine = make_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
        assert db.exists()
    finally:
        engine.dispose()


def test_postgres_urls_use_psycopg3():
    assert normalize_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"


def test_foreign_keys_are_enforced(engine):
    with pytest.raises(IntegrityError):
        with session_scope(engine) as s:
            s.add(Trial(id="t", sweep_id="missing", number=0, config={}, state="pending",
                        attempts=0, samples=0, tokens=0, seconds=0.0))


def test_timestamps_come_back_utc_aware(engine):
    local = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    with session_scope(engine) as s:
        sweep = repo.create_sweep(s, name="t", spec={})
        repo.upsert_trial(s, sweep.id, 0, started_at=local, finished_at=datetime(2026, 1, 1))
    with session_scope(engine) as s:
        trial = repo.get_trial_by_number(s, sweep.id, 0)
        assert trial.started_at == local
        assert trial.started_at.tzinfo == timezone.utc
        assert trial.finished_at == datetime(2026, 1, 1, tzinfo=timezone.utc)
        assert repo.get_sweep(s, sweep.id).created_at.tzinfo == timezone.utc


def test_json_columns_store_non_finite_floats_as_null(engine):
    with session_scope(engine) as s:
        sweep = repo.create_sweep(s, name="t", spec={"x": math.nan, "y": [math.inf, 1.5]})
    with session_scope(engine) as s:
        assert repo.get_sweep(s, sweep.id).spec == {"x": None, "y": [None, 1.5]}


def test_cascading_deletes(engine):
    with session_scope(engine) as s:
        sweep = repo.create_sweep(s, name="t", spec={})
        trial = repo.upsert_trial(s, sweep.id, 0)
        repo.add_metric_points(s, trial.id, [{"step": 0, "loss": 1.0}])
        repo.add_event(s, sweep.id, "info", "hello", trial_id=trial.id)
    with session_scope(engine) as s:
        s.execute(text("DELETE FROM sweepd_sweeps"))
    with session_scope(engine) as s:
        for table in ("sweepd_trials", "sweepd_metric_points", "sweepd_events"):
            assert s.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 0


def test_upgrade_creates_the_sqlite_file(tmp_path):
    db = tmp_path / "new" / "sweepd.db"
    upgrade(f"sqlite:///{db}")
    assert db.exists()
