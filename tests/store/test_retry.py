"""The store's retry policy (sweepd/store/retry.py) against real database errors: a SQLite file
locked by another connection, a PostgreSQL port nobody listens on, a duplicate key. Fast: the
bounds are a second or two. The outage end to end (a sweep through a restart) is
tests/e2e/test_store_outage.py."""

from __future__ import annotations

import logging
import pickle
import socket
import sqlite3
import threading
import time
import traceback

import optuna
import pytest
from ray.tune.error import TuneError
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError, OperationalError

from sweepd.engine import search
from sweepd.engine.search import RetryingRDBStorage, optuna_storage
from sweepd.service import driver
from sweepd.settings import get_settings
from sweepd.store import make_engine, repo, session_scope, upgrade
from sweepd.store.retry import (
    RETRY_SECONDS_ENV,
    Outage,
    StoreUnavailable,
    call_with_retry,
    is_transient,
    retry_seconds,
    retrying,
    store_outage,
)

LOGGER = "sweepd.store.retry"


@pytest.fixture
def locked_sqlite(tmp_path):
    """(url, lock): a SQLite file whose writers give up after 50 ms, and a connection that can
    hold its write lock (``lock.execute("BEGIN EXCLUSIVE")``, released by ``lock.rollback()``)."""
    path = tmp_path / "locked.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    lock = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    yield f"sqlite:///{path}", lock
    lock.close()


def short_timeout_engine(url: str):
    """A plain engine (make_engine would set a 30 s busy timeout): a locked write fails in 50 ms."""
    return create_engine(url, connect_args={"timeout": 0.05})


def closed_port_url() -> str:
    with socket.socket() as s:  # bound, then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"postgresql+psycopg://sweepd@127.0.0.1:{port}/sweepd?connect_timeout=2"


def insert(engine, row_id: int, value: str = "x") -> None:
    with session_scope(engine) as s:
        s.execute(text("INSERT INTO t (id, v) VALUES (:i, :v)"), {"i": row_id, "v": value})


def error_of(fn) -> BaseException:
    try:
        fn()
    except Exception as err:  # noqa: BLE001 - the error is the point
        return err
    raise AssertionError("no error")


# ---- what counts as transient ------------------------------------------------------------------


def test_locked_sqlite_and_refused_postgres_are_transient_integrity_and_schema_errors_are_not(locked_sqlite):
    url, lock = locked_sqlite
    eng = short_timeout_engine(url)
    insert(eng, 1)
    lock.execute("BEGIN EXCLUSIVE")
    locked = error_of(lambda: insert(eng, 2))
    lock.rollback()
    refused = error_of(lambda: make_engine(closed_port_url()).connect())
    duplicate = error_of(lambda: insert(eng, 1))
    no_table = error_of(lambda: session_scope(eng).__enter__().execute(text("SELECT * FROM nope")))
    assert isinstance(locked, OperationalError) and "database is locked" in str(locked)
    assert isinstance(refused, OperationalError) and isinstance(duplicate, IntegrityError)
    assert isinstance(no_table, OperationalError) and "no such table" in str(no_table)
    assert is_transient(locked) and is_transient(refused)
    assert not is_transient(duplicate) and not is_transient(no_table) and not is_transient(ValueError("x"))
    # Optuna wraps SQLAlchemy's error (raise StorageInternalError(...) from e); Ray Tune keeps it as context
    try:
        raise optuna.exceptions.StorageInternalError("commit failed") from locked
    except optuna.exceptions.StorageInternalError as wrapped:
        assert is_transient(wrapped)
    assert not is_transient(StoreUnavailable("down for good"))  # never retried again by an outer caller
    eng.dispose()


def test_store_outage_finds_store_unavailable_under_ray_tunes_wrapper():
    """Ray Tune turns an exception in a callback into TuneError(traceback text), raised in the
    `except` block: the original is the TuneError's __context__."""
    def fit():
        try:
            raise StoreUnavailable("down for 120 s")
        except Exception:
            raise TuneError(traceback.format_exc())

    err = error_of(fit)
    assert isinstance(err, TuneError) and str(store_outage(err)) == "down for 120 s"
    assert store_outage(TuneError("a trial failed")) is None
    assert store_outage(RuntimeError("x")) is None


def test_the_bound_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(RETRY_SECONDS_ENV, raising=False)
    assert retry_seconds() == 120.0
    monkeypatch.setenv(RETRY_SECONDS_ENV, "7.5")
    assert retry_seconds() == 7.5
    monkeypatch.setenv(RETRY_SECONDS_ENV, "soon")
    assert retry_seconds() == 120.0


# ---- retrying ----------------------------------------------------------------------------------


def test_a_write_blocked_by_a_lock_goes_through_once_it_is_released(locked_sqlite, caplog):
    url, lock = locked_sqlite
    eng = short_timeout_engine(url)
    lock.execute("BEGIN EXCLUSIVE")
    threading.Timer(0.8, lock.rollback).start()
    tries, sleeps, outage = [], [], Outage()

    def write():
        tries.append(time.monotonic())
        insert(eng, 1, "after the lock")

    def sleep(s):
        sleeps.append(s)
        time.sleep(s)

    with caplog.at_level(logging.INFO, logger=LOGGER):
        call_with_retry(write, what="test write", outage=outage, bound_s=30, sleep=sleep)
    with session_scope(eng) as s:
        assert s.execute(text("SELECT v FROM t")).scalars().all() == ["after the lock"]
    assert len(tries) >= 3 and len(sleeps) == len(tries) - 1
    assert all(b > a for a, b in zip(sleeps, sleeps[1:]))  # backing off
    assert max(sleeps) <= 4.0 * 1.25
    records = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == LOGGER]
    assert [level for level, _ in records] == ["WARNING", "INFO"]  # one per outage, however many tries
    assert "store unreachable (test write)" in records[0][1] and "database is locked" in records[0][1]
    assert records[1][1].startswith("store reachable again after")
    assert outage.since is None
    eng.dispose()


def test_past_the_bound_it_raises_store_unavailable_from_the_last_error(caplog):
    eng = make_engine(closed_port_url())
    outage = Outage()
    calls = []

    def read():
        calls.append(1)
        with eng.connect() as conn:
            return conn.execute(text("SELECT 1")).scalar()

    start = time.monotonic()
    with caplog.at_level(logging.INFO, logger=LOGGER), pytest.raises(StoreUnavailable) as raised:
        call_with_retry(read, what="test read", outage=outage, bound_s=1.5)
    took = time.monotonic() - start
    assert 1.5 <= took < 6, took
    assert len(calls) >= 3 and isinstance(raised.value.__cause__, OperationalError)
    assert "past the 2 s bound" in str(raised.value) or "past the 1 s bound" in str(raised.value)
    assert [r.levelname for r in caplog.records if r.name == LOGGER] == ["WARNING"]
    # the outage outlives the call: the next failing call gives up at once, a succeeding one ends it
    calls.clear()
    with pytest.raises(StoreUnavailable):
        call_with_retry(read, what="test read", outage=outage, bound_s=1.5)
    assert len(calls) == 1
    assert call_with_retry(lambda: 42, outage=outage) == 42 and outage.since is None
    eng.dispose()


def test_an_error_that_is_not_transient_is_raised_at_once(locked_sqlite):
    url, _ = locked_sqlite
    eng = short_timeout_engine(url)
    insert(eng, 1)
    calls, sleeps, outage = [], [], Outage()

    def duplicate():
        calls.append(1)
        insert(eng, 1)

    with pytest.raises(IntegrityError):
        call_with_retry(duplicate, outage=outage, bound_s=30, sleep=sleeps.append)
    with pytest.raises(KeyError):
        call_with_retry(lambda: {}["missing"], outage=outage, bound_s=30, sleep=sleeps.append)
    assert calls == [1] and sleeps == [] and outage.since is None

    @retrying("the decorated write")
    def decorated():
        calls.append(2)
        insert(eng, 1)

    with pytest.raises(IntegrityError):
        decorated()
    assert calls == [1, 2] and decorated.__name__ == "decorated"
    eng.dispose()


# ---- Optuna's storage --------------------------------------------------------------------------


def test_every_retried_optuna_storage_method_exists_in_this_optuna():
    missing = [n for n in search._RETRIED_STORAGE_METHODS if not hasattr(optuna.storages.RDBStorage, n)]
    assert missing == []
    for name in search._RETRIED_STORAGE_METHODS:
        assert getattr(RetryingRDBStorage, name) is not getattr(optuna.storages.RDBStorage, name), name


def test_the_retrying_storage_rides_out_a_lock_pickles_and_is_still_cached_by_a_study(tmp_path, caplog):
    path = tmp_path / "optuna.db"
    # writers give up on a lock after 50 ms (optuna_storage waits 60 s): the retry does the waiting
    storage = RetryingRDBStorage(f"sqlite:///{path}", engine_kwargs={"connect_args": {"timeout": 0.05}})
    copy = pickle.loads(pickle.dumps(storage))  # Ray pickles the searcher, its study and storage
    assert isinstance(copy, RetryingRDBStorage) and copy.engine is not storage.engine
    study = optuna.create_study(study_name="s", storage=copy, direction="minimize")
    assert type(study._storage).__name__ == "_CachedStorage" and study._storage._backend is copy

    lock = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    lock.execute("BEGIN EXCLUSIVE")
    threading.Timer(0.8, lock.rollback).start()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        trial = study.ask()  # create_new_trial hits the lock, is retried, goes through
    trial.report(1.5, 1)
    study.tell(trial, 0.5)
    lock.close()
    assert [(t.state, t.value, t.intermediate_values) for t in study.trials] == [
        (optuna.trial.TrialState.COMPLETE, 0.5, {1: 1.5})]
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(messages) == 2 and "store unreachable (Optuna" in messages[0], messages
    assert messages[1].startswith("store reachable again")
    storage.engine.dispose()
    copy.engine.dispose()


def test_set_trial_state_values_again_after_a_lost_reply_is_no_error(tmp_path, monkeypatch):
    """The first try commits, then its connection drops before the reply: the retry finds the
    trial already finished in the very state it was asked for, and says so instead of failing."""
    storage = optuna_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = optuna.create_study(study_name="s", storage=storage)
    trial_id = study.ask()._trial_id
    real = optuna.storages.RDBStorage.set_trial_state_values
    lost = error_of(lambda: make_engine(closed_port_url()).connect())

    def commit_then_lose_the_reply(self, *args, **kwargs):
        real(self, *args, **kwargs)
        monkeypatch.setattr(optuna.storages.RDBStorage, "set_trial_state_values", real)
        raise lost

    monkeypatch.setattr(optuna.storages.RDBStorage, "set_trial_state_values", commit_then_lose_the_reply)
    assert storage.set_trial_state_values(trial_id, optuna.trial.TrialState.COMPLETE, [0.25]) is True
    assert storage.get_trial(trial_id).state == optuna.trial.TrialState.COMPLETE
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):  # a first try on a finished trial still fails
        storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)


# ---- the driver --------------------------------------------------------------------------------


def test_a_driver_that_loses_the_store_exits_75_and_leaves_the_sweep_running(tmp_path, monkeypatch):
    """What `python -m sweepd.service.driver ID` does when Tune's fit raises the outage (wrapped
    the way Ray Tune wraps a callback's error): no FAILED state, which would be final, but exit 75
    so the supervisor resumes the sweep. Any other error still fails it."""
    import signal

    url = f"sqlite:///{tmp_path / 'sweepd.db'}"
    upgrade(url)
    monkeypatch.setenv("SWEEPD_DATABASE_URL", url)
    monkeypatch.setenv("SWEEPD_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    handler = signal.getsignal(signal.SIGTERM)
    eng = make_engine(url)
    with session_scope(eng) as s:
        sweep_id = repo.create_sweep(s, name="d", spec={"name": "d"}).id
        repo.set_sweep_state(s, sweep_id, "running")
    monkeypatch.setattr(driver.SweepSpec, "from_stored", staticmethod(lambda doc: doc))

    def outage(*args, **kwargs):
        try:
            raise StoreUnavailable("the store has been unreachable for 120 s")
        except Exception:
            raise TuneError(traceback.format_exc())

    try:
        monkeypatch.setattr(driver, "drive", outage)
        assert driver.main([sweep_id]) == driver.EXIT_STORE_UNAVAILABLE == 75
        with session_scope(eng) as s:
            sweep = repo.get_sweep(s, sweep_id)
            assert (sweep.state, sweep.error) == ("running", None)
        def bug(*args, **kwargs):
            raise RuntimeError("a bug")

        monkeypatch.setattr(driver, "drive", bug)
        assert driver.main([sweep_id]) == 1
        with session_scope(eng) as s:
            sweep = repo.get_sweep(s, sweep_id)
            assert (sweep.state, sweep.error) == ("failed", "driver error: a bug")
    finally:
        signal.signal(signal.SIGTERM, handler)
        get_settings.cache_clear()
        eng.dispose()
