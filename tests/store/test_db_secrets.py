"""#15 finding 9: no database password in what sweepd hands around or Ray Tune pickles.

`public_url` drops the password; a connection made from it gets the password back at connect
time from SWEEPD_DATABASE_URL (the process's settings) when that names the same server, user and
database: for sweepd's engines and for Optuna's storage alike."""

from __future__ import annotations

import pickle

import optuna
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from sweepd.store import make_engine, upgrade
from sweepd.store.db import public_url
from tests.secret_db import password_database


def test_public_url_drops_only_the_password():
    assert public_url("postgresql+psycopg://me:hunter2@db.example:6543/sweeps?sslmode=require") == \
        "postgresql+psycopg://me@db.example:6543/sweeps?sslmode=require"
    assert public_url("postgres://me:hunter2@db/sweeps") == "postgresql+psycopg://me@db/sweeps"
    assert public_url("sqlite:////tmp/x/sweepd.db") == "sqlite:////tmp/x/sweepd.db"
    assert public_url("postgresql+psycopg://me@db/sweeps") == "postgresql+psycopg://me@db/sweeps"


@pytest.fixture
def secret_db(_postgres_databases, monkeypatch):
    """(url, public url, password) of a password-protected database named by SWEEPD_DATABASE_URL."""
    with password_database(_postgres_databases) as (url, password):
        monkeypatch.setenv("SWEEPD_DATABASE_URL", url)
        yield url, public_url(url), password


def password_of(connection) -> str | None:
    """The password psycopg connected with (libpq's PQpass)."""
    return connection.connection.dbapi_connection.info.password or None


def test_a_connection_from_the_public_url_gets_the_password_at_connect_time(secret_db, monkeypatch):
    url, public, password = secret_db
    assert password not in public and make_url(public).username == make_url(url).username
    upgrade(url)
    engine = make_engine(public)
    try:
        with engine.connect() as conn:
            assert password_of(conn) == password
            assert conn.execute(text("SELECT current_user")).scalar() == make_url(url).username
        # read from the environment at each connect, never kept: without it, no password
        engine.dispose()
        monkeypatch.delenv("SWEEPD_DATABASE_URL")
        with engine.connect() as conn:
            assert password_of(conn) is None
    finally:
        engine.dispose()


def test_optuna_storage_from_the_public_url_connects_with_the_password_and_pickles_without_it(secret_db):
    url, public, password = secret_db
    storage = optuna.storages.RDBStorage(public)
    try:
        study = optuna.create_study(storage=storage, study_name="secret")
        study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
        with storage.engine.connect() as conn:
            assert password_of(conn) == password
        blob = pickle.dumps(storage)
        assert password.encode() not in blob and make_url(url).username.encode() in blob
        restored = pickle.loads(blob)  # how Tune's searcher state comes back on a resume
        assert len(restored.get_all_trials(study._study_id)) == 2
        restored.remove_session()
    finally:
        storage.remove_session()
        storage.engine.dispose()


def test_the_password_goes_only_to_the_database_it_belongs_to(secret_db, _postgres_databases):
    _url, _public, password = secret_db
    other = make_engine(_postgres_databases.url)  # same server, another user and database
    try:
        with other.connect() as conn:
            assert password_of(conn) != password
    finally:
        other.dispose()
