"""Store calls that ride out a transient database outage: SQLite locked past its busy timeout, a
PostgreSQL server restarting.

    rows = call_with_retry(read_rows, engine, what="read the trials")

    @retrying("write the points")
    def flush(...): ...

A transient error (``is_transient``: a lost or refused connection, an operational error of the
server, SQLite busy/locked) is retried with exponential backoff (FIRST_DELAY_S doubling up to
MAX_DELAY_S); any other error, an integrity error included, is raised at once. An outage is shared
by every caller of the process: it starts with the first failing call (one warning, with the
error), ends with the first call that succeeds (one info), and is bounded from its start: past
``SWEEPD_STORE_RETRY_SECONDS`` (default 120) a failing call raises ``StoreUnavailable``. The sweep
driver then exits without failing the sweep, and the supervisor resumes it later.

A retried call runs again from its start, so it must be idempotent: it opens its own transaction
(a failed one was rolled back) and writes what an earlier try may already have committed without
harm (the store's upserts and ON CONFLICT inserts).
"""

from __future__ import annotations

import functools
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from sqlalchemy import exc as sa_exc

log = logging.getLogger("sweepd.store.retry")

RETRY_SECONDS_ENV = "SWEEPD_STORE_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 120.0
FIRST_DELAY_S = 0.25
MAX_DELAY_S = 4.0
SQLITE_BUSY_CODES = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED (the primary code, the low byte)

T = TypeVar("T")


class StoreUnavailable(RuntimeError):
    """The store stayed unreachable past the retry bound: step aside and resume later."""


def retry_seconds() -> float:
    """The bound on an outage, from SWEEPD_STORE_RETRY_SECONDS (read on each outage, so a test or an
    operator can set it for one process)."""
    raw = os.environ.get(RETRY_SECONDS_ENV)
    try:
        return max(0.0, float(raw)) if raw else DEFAULT_RETRY_SECONDS
    except ValueError:
        log.warning("%s=%r is not a number of seconds; using %.0f", RETRY_SECONDS_ENV, raw, DEFAULT_RETRY_SECONDS)
        return DEFAULT_RETRY_SECONDS


def _chain(exc: BaseException, link: str = "orig") -> Iterator[BaseException]:
    """The exception, then its causes: ``__cause__``, ``__context__`` and the ``link`` attribute
    (default a DBAPI error's ``orig``: Optuna raises StorageInternalError from SQLAlchemy's error,
    which wraps the driver's; Ray Tune's wrappers keep theirs as ``cause``)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        linked = getattr(e, link, None)
        todo += [linked if isinstance(linked, BaseException) else None, e.__cause__, e.__context__]


def _sqlite_busy(err: sqlite3.Error) -> bool:
    code = getattr(err, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in SQLITE_BUSY_CODES
    text = str(err).lower()
    return "locked" in text or "busy" in text


def _psycopg_operational(err: BaseException) -> bool:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    # connection refused or lost, the server shutting down or starting up, a deadlock or
    # serialization failure: all psycopg.OperationalError (SQLSTATE classes 08, 40, 53, 57)
    return isinstance(err, psycopg.OperationalError)


def is_transient(exc: BaseException) -> bool:
    """Would the same call succeed once the database is back? The first decisive link of the
    chain says: an integrity error never (retrying cannot fix the data), a disconnect, a pool
    timeout, a psycopg operational error or SQLite busy/locked yes. SQLite's other operational
    errors (no such table, a syntax error) are not transient."""
    for e in _chain(exc):
        if isinstance(e, (StoreUnavailable, sa_exc.IntegrityError)):
            return False
        if isinstance(e, sa_exc.DBAPIError) and e.connection_invalidated:
            return True
        if isinstance(e, sa_exc.TimeoutError):  # no pooled connection came free
            return True
        if isinstance(e, sqlite3.Error):
            return isinstance(e, sqlite3.OperationalError) and _sqlite_busy(e)
        if _psycopg_operational(e):
            return True
    return False


def store_outage(exc: BaseException) -> StoreUnavailable | None:
    """The StoreUnavailable in an exception's chain (also under Ray Tune's wrappers, which keep it
    as ``__context__`` or ``.cause``), if any."""
    return next((e for e in _chain(exc, link="cause") if isinstance(e, StoreUnavailable)), None)


class Outage:
    """The process's view of the store: reachable, or down since a moment. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.since: float | None = None  # time.monotonic() when the first failing call started
        self.failures = 0

    def failed(self, started: float, what: str, err: BaseException, bound: float) -> float:
        """A call that started at ``started`` failed transiently; returns the outage's age."""
        with self._lock:
            if self.since is None:
                self.since, self.failures = started, 0
                log.warning("store unreachable (%s): %s; retrying for up to %.0f s", what, _short(err), bound)
            self.failures += 1
            return time.monotonic() - self.since

    def succeeded(self, what: str) -> None:
        if self.since is None:  # the common case: no lock taken
            return
        with self._lock:
            if self.since is None:
                return
            log.info("store reachable again after %.1f s (%s; %d failed tries)",
                     time.monotonic() - self.since, what, self.failures)
            self.since, self.failures = None, 0


OUTAGE = Outage()


def _short(err: BaseException) -> str:
    """One line: the innermost cause (the driver's own error: Optuna's and SQLAlchemy's wrappers
    add a guess and the SQL), its type and message."""
    seen = {id(err)}
    while err.__cause__ is not None and id(err.__cause__) not in seen:
        err = err.__cause__
        seen.add(id(err))
    text = " ".join(str(err).split())
    return f"{type(err).__module__.split('.')[0]}.{type(err).__name__}: {text[:300]}"


def call_with_retry(fn: Callable[..., T], *args: Any, what: str = "store call", outage: Outage | None = None,
                    bound_s: float | None = None, sleep: Callable[[float], None] = time.sleep, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, again after each transient error until it succeeds or the outage
    is older than ``bound_s`` (default: ``retry_seconds()``); then StoreUnavailable, from the last
    error. ``what`` names the call in the log."""
    outage = outage or OUTAGE
    delay = FIRST_DELAY_S
    while True:
        started = time.monotonic()
        try:
            result = fn(*args, **kwargs)
        except Exception as err:
            if not is_transient(err):
                raise
            bound = retry_seconds() if bound_s is None else bound_s
            age = outage.failed(started, what, err, bound)
            if age >= bound:
                raise StoreUnavailable(f"the store has been unreachable for {age:.0f} s, past the {bound:.0f} s "
                                       f"bound ({RETRY_SECONDS_ENV}); last error ({what}): {_short(err)}") from err
            sleep(min(delay * random.uniform(0.75, 1.25), bound - age))  # jitter: drivers do not retry in step
            delay = min(delay * 2, MAX_DELAY_S)
        else:
            outage.succeeded(what)
            return result


def retrying(what: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorator: the function through ``call_with_retry``."""
    def wrap(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            return call_with_retry(fn, *args, what=what, **kwargs)
        return wrapper
    return wrap
