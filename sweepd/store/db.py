"""Engines and sessions for SQLite (the default) and PostgreSQL (psycopg 3).

    engine = make_engine(url)             # or make_engine() for SWEEPD_DATABASE_URL / the default
    Session = make_sessionmaker(engine)
    with session_scope(Session) as s:     # commits on success, rolls back on error
        repo.create_sweep(s, name="demo", spec={...})

No secrets in pickles: what a sweep hands to other processes and to Ray Tune (whose experiment
state pickles the searcher, the scheduler, the callbacks and the trainable's parameters) is
``public_url(url)``, the URL without its password. Any PostgreSQL connection made without a
password gets it back at connect time (`_fill_password`, on every engine of the process, Optuna's
included) from SWEEPD_DATABASE_URL when that names the same server, user and database; else
libpq's own PGPASSWORD or ~/.pgpass apply. Ray's workers have the same environment (a local Ray
inherits it; on a cluster its nodes are started with the service's settings).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Insert, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

from sweepd.formatting import json_safe

SQLITE_BUSY_TIMEOUT_MS = 30_000


def default_url() -> str:
    """The URL from the settings: SWEEPD_DATABASE_URL, else a SQLite file under SWEEPD_HOME."""
    from sweepd.settings import Settings

    return Settings().resolved_database_url


def normalize_url(url: str | URL) -> URL:
    """Parse a URL; plain ``postgresql://`` / ``postgres://`` mean psycopg 3."""
    if isinstance(url, str) and url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    u = make_url(url)
    if u.drivername == "postgresql":
        u = u.set(drivername="postgresql+psycopg")
    return u


def public_url(url: str | URL) -> str:
    """``url`` without its password: what may be handed around, logged and pickled."""
    u = normalize_url(url)  # (URL.set ignores None: build it anew)
    return URL.create(u.drivername, u.username, None, u.host, u.port, u.database,
                      u.query).render_as_string(hide_password=False)


def _server(host: Any, port: Any, user: Any, database: Any) -> tuple:
    return (host or None, int(port) if port else None, user or None, database or None)


@event.listens_for(Engine, "do_connect")
def _fill_password(dialect: Any, _record: Any, _cargs: Any, cparams: dict) -> None:
    """A PostgreSQL connection to the settings' database made without a password (from a
    public_url) gets the settings' password, read from the environment now, never stored."""
    if dialect.name != "postgresql" or cparams.get("password"):
        return
    from sweepd.settings import Settings

    configured = Settings().database_url
    if not configured:
        return
    u = normalize_url(configured)
    if u.get_backend_name() != "postgresql" or not u.password:
        return
    if _server(u.host, u.port, u.username, u.database) == _server(
            cparams.get("host"), cparams.get("port"), cparams.get("user"), cparams.get("dbname")):
        cparams["password"] = u.password


def json_dumps(obj: Any) -> str:
    """JSON for the store: NaN and infinities become null (PostgreSQL's JSON rejects them and
    SQLite can't keep them)."""
    return json.dumps(json_safe(obj), default=str, allow_nan=False)


def _sqlite_file(u: URL) -> Path | None:
    db = u.database
    if not db or db == ":memory:" or db.startswith("file:") or u.query.get("mode") == "memory":
        return None
    return Path(db).expanduser()


def make_engine(url: str | URL | None = None, **kwargs: Any) -> Engine:
    """An engine for ``url`` (default: :func:`default_url`).

    SQLite: creates the file's folder; every connection gets WAL, a 30 s busy timeout,
    foreign keys ON and synchronous=NORMAL. PostgreSQL: psycopg 3, pre-ping.
    """
    u = normalize_url(url if url is not None else default_url())
    kwargs.setdefault("json_serializer", json_dumps)
    if u.get_backend_name() == "sqlite":
        path = _sqlite_file(u)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        connect_args = kwargs.setdefault("connect_args", {})
        connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
        engine = create_engine(u, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(u, **kwargs)


def use_store_sync(engine: Engine) -> None:
    """Give a SQLite engine made elsewhere (Optuna's) the store's synchronous=NORMAL: in WAL mode its
    commits then skip the fsync that the default (FULL) makes on every one, as the store's do."""
    if engine.dialect.name != "sqlite":
        return
    event.listen(engine, "connect", _sqlite_sync_normal)
    engine.dispose()  # connections opened before the listener keep the default


def _sqlite_sync_normal(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA synchronous=NORMAL")
    finally:
        cur.close()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
    finally:
        cur.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (expire_on_commit=False)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(bind: Engine | sessionmaker[Session]) -> Iterator[Session]:
    """A session in one transaction: commit on success, rollback on error, always closed."""
    factory = make_sessionmaker(bind) if isinstance(bind, Engine) else bind
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def insert_or_ignore(session: Session, table: Any) -> Insert:
    """INSERT with the dialect's ON CONFLICT support (SQLite and PostgreSQL): the repository's
    idempotent writes add ``.on_conflict_do_nothing(...)`` or ``.on_conflict_do_update(...)``."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"the store supports SQLite and PostgreSQL, not {name}")
