"""Fixtures shared by the whole suite.

``db_url``: an empty database, once on SQLite and once on PostgreSQL (the test runs twice).
Migrate it with ``sweepd.store.upgrade(db_url)``. The PostgreSQL server is the throwaway one
``make test`` starts (scripts/run_tests.sh exports SWEEPD_TEST_POSTGRES_URL); each test gets its
own fresh database on it, dropped afterwards. Without that variable the postgres cases FAIL
(they are part of the suite, not optional): run through `make test`, or
``export SWEEPD_TEST_POSTGRES_URL="$(scripts/postgres.sh start)"``.

Every test under tests/e2e, tests/browser, tests/cluster and tests/docker is marked ``slow``
here (real sweeps, a browser, a Ray cluster, the Docker files), so ``make test-fast``
(``-m "not slow"``) leaves them out; ``make test`` runs them all. Slow tests elsewhere carry
``@pytest.mark.slow`` themselves.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

POSTGRES_URL_ENV = "SWEEPD_TEST_POSTGRES_URL"
# Starlette's TestClient sends Host: testserver; the servers the tests start are on 127.0.0.1.
os.environ.setdefault("SWEEPD_ALLOWED_HOSTS", "localhost,127.0.0.1,testserver")

TESTS = Path(__file__).resolve().parent
SLOW_FOLDERS = tuple(TESTS / name for name in ("e2e", "browser", "cluster", "docker"))


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test in the slow folders ``slow``, whatever its file or name."""
    for item in items:
        path = Path(item.path).resolve()
        if any(path.is_relative_to(folder) for folder in SLOW_FOLDERS):
            item.add_marker(pytest.mark.slow)


class _PostgresDatabases:
    """Creates and drops per-test databases on the test server."""

    def __init__(self, server_url: str) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url
        from sqlalchemy.pool import NullPool

        self.url = make_url(server_url)
        if self.url.drivername in ("postgresql", "postgres"):
            self.url = self.url.set(drivername="postgresql+psycopg")
        self.admin = create_engine(self.url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        self.prefix = f"sweepd_test_{uuid.uuid4().hex[:8]}_"
        self.counter = itertools.count()

    def create(self) -> str:
        name = f"{self.prefix}{next(self.counter)}"
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        return self.url.set(database=name).render_as_string(hide_password=False)

    def drop(self, name: str) -> None:
        with self.admin.connect() as conn:
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %(n)s AND pid <> pg_backend_pid()",
                {"n": name},
            )
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')

    def drop_all(self) -> None:
        with self.admin.connect() as conn:
            names = conn.exec_driver_sql(
                "SELECT datname FROM pg_database WHERE datname LIKE %(p)s",
                {"p": self.prefix + "%"},
            ).scalars().all()
        for name in names:
            self.drop(name)
        self.admin.dispose()


@pytest.fixture(scope="session")
def _postgres_databases() -> Iterator[_PostgresDatabases]:
    url = os.environ.get(POSTGRES_URL_ENV)
    if not url:
        pytest.fail(
            f"{POSTGRES_URL_ENV} is not set, so the PostgreSQL half of the store tests cannot run. "
            "Run the suite with `make test` (it starts a throwaway server), or start one yourself: "
            f'export {POSTGRES_URL_ENV}="$(scripts/postgres.sh start)"',
            pytrace=False,
        )
    dbs = _PostgresDatabases(url)
    try:
        with dbs.admin.connect():
            pass
    except Exception as exc:  # noqa: BLE001 - say which server and why
        pytest.fail(f"cannot connect to {POSTGRES_URL_ENV}={url}: {exc}", pytrace=False)
    yield dbs
    dbs.drop_all()


@pytest.fixture(
    params=[pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]
)
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """The URL of an empty database (not migrated), on each backend in turn."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'sweepd.db'}"
        return
    dbs: _PostgresDatabases = request.getfixturevalue("_postgres_databases")
    url = dbs.create()
    yield url
    from sqlalchemy.engine import make_url

    dbs.drop(make_url(url).database)
