"""The repository: every read and write the rest of sweepd does on the store.

Functions take a :class:`~sqlalchemy.orm.Session` first and never commit: the caller owns the
transaction (``with session_scope(Session) as s: ...``), so several calls can be one atomic
unit. Objects come back as ORM instances; with the package's sessionmaker
(``expire_on_commit=False``) they stay readable after the session closes.

States are validated here (the columns are plain strings so that adding a state needs no
table rebuild on SQLite).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy import Insert, and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased

from sweepd.store.models import (
    ApiToken,
    Event,
    EventKind,
    MetricPoint,
    Sweep,
    SweepState,
    Trial,
    TrialState,
    utcnow,
)

T = TypeVar("T")

METRIC_BATCH_SIZE = 500
TOKEN_PREFIX = "swd_"
TOKEN_TOUCH_EVERY = timedelta(minutes=1)


class NotFound(LookupError):
    """A sweep, trial or token that does not exist."""


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


# ----------------------------------------------------------------------------------- helpers


def new_id() -> str:
    """A short random id (12 hex digits), easy to type in `sweepd status ID`."""
    return uuid.uuid4().hex[:12]


def trial_id_for(sweep_id: str, number: int) -> str:
    """The id of trial ``number`` of a sweep: deterministic, so re-creating it is idempotent."""
    return f"{sweep_id}-{number:04d}"


def _sweep_state(state: str | SweepState) -> str:
    try:
        return SweepState(state).value
    except ValueError:
        allowed = ", ".join(s.value for s in SweepState)
        raise ValueError(f"unknown sweep state {state!r} (expected one of: {allowed})") from None


def _trial_state(state: str | TrialState) -> str:
    try:
        return TrialState(state).value
    except ValueError:
        allowed = ", ".join(s.value for s in TrialState)
        raise ValueError(f"unknown trial state {state!r} (expected one of: {allowed})") from None


def _insert(session: Session, table: Any) -> Insert:
    """INSERT with the dialect's ON CONFLICT support (SQLite and PostgreSQL)."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"the store supports SQLite and PostgreSQL, not {name}")


def _require_sweep(session: Session, sweep_id: str) -> Sweep:
    sweep = session.get(Sweep, sweep_id)
    if sweep is None:
        raise NotFound(f"no sweep {sweep_id!r}")
    return sweep


# ------------------------------------------------------------------------------------ sweeps


def create_sweep(
    session: Session,
    *,
    name: str,
    spec: Mapping[str, Any],
    id: str | None = None,
    optuna_study_name: str | None = None,
) -> Sweep:
    """A new sweep in state ``queued``. Its Optuna study name defaults to ``sweepd-<id>``."""
    sweep_id = id or new_id()
    sweep = Sweep(
        id=sweep_id,
        name=name,
        state=SweepState.queued.value,
        spec=dict(spec),
        ledger={},
        optuna_study_name=optuna_study_name or f"sweepd-{sweep_id}",
        created_at=utcnow(),
    )
    session.add(sweep)
    session.flush()
    return sweep


def get_sweep(session: Session, sweep_id: str) -> Sweep | None:
    return session.get(Sweep, sweep_id)


def list_sweeps(
    session: Session,
    *,
    state: str | SweepState | Sequence[str | SweepState] | None = None,
    limit: int = 50,
    offset: int = 0,
) -> Page[Sweep]:
    """Sweeps, newest first, optionally only those in ``state`` (one state or several)."""
    if limit < 1 or offset < 0:
        raise ValueError(f"need limit >= 1 and offset >= 0, got limit={limit}, offset={offset}")
    cond = []
    if state is not None:
        states = [state] if isinstance(state, (str, SweepState)) else list(state)
        cond.append(Sweep.state.in_([_sweep_state(s) for s in states]))
    total = session.scalar(select(func.count()).select_from(Sweep).where(*cond)) or 0
    items = session.scalars(
        select(Sweep)
        .where(*cond)
        .order_by(Sweep.created_at.desc(), Sweep.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return Page(items=list(items), total=total, limit=limit, offset=offset)


def set_sweep_state(
    session: Session,
    sweep_id: str,
    state: str | SweepState,
    *,
    error: str | None = None,
    only_from: Iterable[str | SweepState] | None = None,
    message: str | None = None,
) -> Sweep | None:
    """Move a sweep to ``state`` and record a ``state`` event.

    ``running`` sets ``started_at`` (first time only); a terminal state sets ``finished_at``.
    ``only_from``: change only if the sweep is currently in one of these states (an atomic
    compare-and-set, e.g. so a finishing controller does not overwrite ``cancelled``); returns
    None when the sweep was not in one of them.
    """
    new = SweepState(_sweep_state(state))
    now = utcnow()
    values: dict[str, Any] = {"state": new.value}
    if error is not None:
        values["error"] = error
    if new.terminal:
        values["finished_at"] = now
    stmt = update(Sweep).where(Sweep.id == sweep_id)
    if only_from is not None:
        stmt = stmt.where(Sweep.state.in_([_sweep_state(s) for s in only_from]))
    if session.execute(stmt.values(**values)).rowcount == 0:
        if session.get(Sweep, sweep_id) is None:
            raise NotFound(f"no sweep {sweep_id!r}")
        return None
    if new is SweepState.running:
        session.execute(
            update(Sweep)
            .where(Sweep.id == sweep_id, Sweep.started_at.is_(None))
            .values(started_at=now)
        )
    add_event(
        session,
        sweep_id,
        EventKind.state,
        message or f"sweep {new.value}" + (f": {error}" if error else ""),
        payload={"state": new.value, **({"error": error} if error else {})},
    )
    sweep = session.get(Sweep, sweep_id)
    assert sweep is not None
    session.refresh(sweep)
    return sweep


def heartbeat(session: Session, sweep_id: str, *, controller: str | None = None) -> datetime:
    """Record that the sweep's controller is alive (and who it is)."""
    now = utcnow()
    values: dict[str, Any] = {"heartbeat_at": now}
    if controller is not None:
        values["controller"] = controller
    if session.execute(update(Sweep).where(Sweep.id == sweep_id).values(**values)).rowcount == 0:
        raise NotFound(f"no sweep {sweep_id!r}")
    return now


def stale_sweeps(session: Session, *, older_than: timedelta) -> list[Sweep]:
    """Running sweeps whose controller has not sent a heartbeat for ``older_than``."""
    cutoff = utcnow() - older_than
    return list(
        session.scalars(
            select(Sweep)
            .where(
                Sweep.state == SweepState.running.value,
                or_(
                    Sweep.heartbeat_at < cutoff,
                    and_(Sweep.heartbeat_at.is_(None), Sweep.started_at < cutoff),
                ),
            )
            .order_by(Sweep.created_at)
        ).all()
    )


def update_ledger(
    session: Session, sweep_id: str, changes: Mapping[str, Any], *, replace: bool = False
) -> dict[str, Any]:
    """Merge ``changes`` into the sweep's ledger (or replace it); returns the new ledger."""
    sweep = _require_sweep(session, sweep_id)
    ledger = dict(changes) if replace else {**(sweep.ledger or {}), **changes}
    sweep.ledger = ledger  # a new dict, so the change is seen
    session.flush()
    return ledger


def set_best_trial(session: Session, sweep_id: str, trial_id: str | None) -> None:
    sweep = _require_sweep(session, sweep_id)
    if trial_id is not None:
        trial = session.get(Trial, trial_id)
        if trial is None or trial.sweep_id != sweep_id:
            raise NotFound(f"no trial {trial_id!r} in sweep {sweep_id!r}")
    sweep.best_trial_id = trial_id
    session.flush()


# ------------------------------------------------------------------------------------ trials

_TRIAL_FIELDS = frozenset(
    {
        "config", "state", "objective", "metrics_final", "stopped_at", "reason", "error",
        "attempts", "started_at", "finished_at", "samples", "tokens", "seconds",
    }
)


def upsert_trial(session: Session, sweep_id: str, number: int, **fields: Any) -> Trial:
    """Create trial ``number`` of a sweep, or update it: (sweep_id, number) is the key.

    ``fields`` are Trial columns (config, state, objective, metrics_final, stopped_at, reason,
    error, attempts, started_at, finished_at, samples, tokens, seconds); those not given keep
    their value. Safe to call again after a resume, and safe against a concurrent writer.
    """
    unknown = set(fields) - _TRIAL_FIELDS
    if unknown:
        raise ValueError(f"unknown trial field(s): {', '.join(sorted(unknown))}")
    if "state" in fields:
        fields["state"] = _trial_state(fields["state"])
    _require_sweep(session, sweep_id)
    trial_id = trial_id_for(sweep_id, number)
    base = {
        "id": trial_id,
        "sweep_id": sweep_id,
        "number": number,
        "config": {},
        "state": TrialState.pending.value,
        "attempts": 0,
        "samples": 0,
        "tokens": 0,
        "seconds": 0.0,
    }
    session.execute(
        _insert(session, Trial).values(**base).on_conflict_do_nothing(
            index_elements=["sweep_id", "number"]
        )
    )
    if fields:
        session.execute(
            update(Trial)
            .where(Trial.sweep_id == sweep_id, Trial.number == number)
            .values(**fields)
            .execution_options(synchronize_session=False)
        )
    trial = session.scalars(
        select(Trial)
        .where(Trial.sweep_id == sweep_id, Trial.number == number)
        .execution_options(populate_existing=True)
    ).one()
    return trial


def get_trial(session: Session, trial_id: str) -> Trial | None:
    return session.get(Trial, trial_id)


def get_trial_by_number(session: Session, sweep_id: str, number: int) -> Trial | None:
    return session.scalars(
        select(Trial).where(Trial.sweep_id == sweep_id, Trial.number == number)
    ).one_or_none()


def list_trials(
    session: Session,
    sweep_id: str,
    *,
    state: str | TrialState | Sequence[str | TrialState] | None = None,
) -> list[Trial]:
    """A sweep's trials in number order, optionally only those in ``state``."""
    stmt = select(Trial).where(Trial.sweep_id == sweep_id).order_by(Trial.number)
    if state is not None:
        states = [state] if isinstance(state, (str, TrialState)) else list(state)
        stmt = stmt.where(Trial.state.in_([_trial_state(s) for s in states]))
    return list(session.scalars(stmt).all())


def count_trials(session: Session, sweep_id: str | None = None, *, state: str | None = None) -> int:
    stmt = select(func.count()).select_from(Trial)
    if sweep_id is not None:
        stmt = stmt.where(Trial.sweep_id == sweep_id)
    if state is not None:
        stmt = stmt.where(Trial.state == _trial_state(state))
    return session.scalar(stmt) or 0


# ----------------------------------------------------------------------------- metric points


def _point_row(trial_id: str, point: Mapping[str, Any] | MetricPoint) -> dict[str, Any]:
    if isinstance(point, MetricPoint):
        point = point.to_dict()
    if "step" not in point:
        raise ValueError(f"metric point without a step: {dict(point)!r}")
    row: dict[str, Any] = {"trial_id": trial_id, "step": int(point["step"])}
    for f in MetricPoint.FIELDS[1:]:
        v = point.get(f)
        if isinstance(v, float) and not math.isfinite(v):
            v = None  # NaN/inf: stored as null on both backends
        row[f] = v
    extra = {k: v for k, v in point.items() if k not in MetricPoint.FIELDS and k != "trial_id"}
    row["extra"] = extra or None
    return row


def add_metric_points(
    session: Session,
    trial_id: str,
    points: Iterable[Mapping[str, Any] | MetricPoint],
    *,
    batch_size: int = METRIC_BATCH_SIZE,
) -> int:
    """Store a trial's per-step metrics, idempotently; returns how many rows were new.

    Points are dicts like the trainer's JSONL lines (``step`` required; ``samples``,
    ``tokens``, ``loss``, ``grad_norm``, ``lr``, ``seconds`` go to columns, any other key to
    ``extra``). A step already stored is left as it is (INSERT ... ON CONFLICT DO NOTHING), so
    writing the same points again after a resume neither fails nor duplicates.
    Non-finite floats are stored as null.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rows = [_point_row(trial_id, p) for p in points]
    stmt = (
        _insert(session, MetricPoint)
        .on_conflict_do_nothing(index_elements=["trial_id", "step"])
        .execution_options(preserve_rowcount=True)  # INSERT rowcount is opt-in in SA 2.1
    )
    # One statement, executemany over the rows, through the Core connection: ~10x faster than a
    # multi-row VALUES per batch (SQLAlchemy recompiles that for every batch length), and the
    # drivers (sqlite3, psycopg 3) sum the rowcount over the rows, so the count stays exact.
    connection = session.connection()
    inserted = 0
    for i in range(0, len(rows), batch_size):
        inserted += max(connection.execute(stmt, rows[i : i + batch_size]).rowcount, 0)
    return inserted


def count_metric_points(session: Session, trial_id: str) -> int:
    return session.scalar(
        select(func.count()).select_from(MetricPoint).where(MetricPoint.trial_id == trial_id)
    ) or 0


def read_metrics(
    session: Session, trial_id: str, *, max_points: int | None = None
) -> list[MetricPoint]:
    """A trial's metric points in step order, downsampled in the database to ``max_points``.

    Downsampling keeps the first and the last point and evenly spaced points between them:
    exactly ``max_points`` points when there are more (``max_points=1``: the last one).
    """
    base = select(MetricPoint).where(MetricPoint.trial_id == trial_id)
    if max_points is None:
        return list(session.scalars(base.order_by(MetricPoint.step)).all())
    if max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")
    n = count_metric_points(session, trial_id)
    if n <= max_points:
        return list(session.scalars(base.order_by(MetricPoint.step)).all())
    if max_points == 1:
        return list(session.scalars(base.order_by(MetricPoint.step.desc()).limit(1)).all())
    # Row k (0-based, in step order) is kept when it is the first row of a new bucket
    # floor(k * (m-1) / (n-1)): exactly m rows, evenly spread, first and last included.
    m1, n1 = max_points - 1, n - 1
    rn = func.row_number().over(order_by=MetricPoint.step).label("rn")
    numbered = select(MetricPoint, rn).where(MetricPoint.trial_id == trial_id).subquery()
    mp = aliased(MetricPoint, numbered)
    k = numbered.c.rn - 1
    stmt = (
        select(mp)
        .where(or_(k == 0, (k * m1) // n1 > ((k - 1) * m1) // n1))
        .order_by(numbered.c.step)
    )
    return list(session.scalars(stmt).all())


# ------------------------------------------------------------------------------------ events


def add_event(
    session: Session,
    sweep_id: str,
    kind: str | EventKind,
    message: str,
    *,
    trial_id: str | None = None,
    payload: Mapping[str, Any] | None = None,
) -> Event:
    """Record something that happened: a pruner decision (with its inputs in ``payload``), a
    state change, an error. ``message`` is a sentence a person can read."""
    kind = kind.value if isinstance(kind, EventKind) else str(kind)
    event = Event(
        sweep_id=sweep_id,
        trial_id=trial_id,
        kind=kind,
        message=message,
        payload=dict(payload) if payload is not None else None,
        created_at=utcnow(),
    )
    session.add(event)
    session.flush()
    return event


def list_events(
    session: Session,
    sweep_id: str,
    *,
    kind: str | EventKind | None = None,
    trial_id: str | None = None,
    after_id: int | None = None,
    limit: int | None = None,
) -> list[Event]:
    """A sweep's events in the order they were written (``after_id``: only newer ones)."""
    stmt = select(Event).where(Event.sweep_id == sweep_id)
    if kind is not None:
        stmt = stmt.where(Event.kind == (kind.value if isinstance(kind, EventKind) else kind))
    if trial_id is not None:
        stmt = stmt.where(Event.trial_id == trial_id)
    if after_id is not None:
        stmt = stmt.where(Event.id > after_id)
    stmt = stmt.order_by(Event.id)
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(session.scalars(stmt).all())


# ------------------------------------------------------------------------------------ tokens


def hash_token(plaintext: str) -> str:
    """sha256 hex of a token: the only form a token is stored in."""
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def create_token(session: Session, name: str) -> tuple[ApiToken, str]:
    """A new API token named ``name``; returns (row, plaintext). The plaintext is not stored
    anywhere: show it once. Raises ValueError if the name is taken."""
    name = name.strip()
    if not name or len(name) > 100:
        raise ValueError(f"token name must be 1..100 characters, got {name!r}")
    if session.scalar(select(ApiToken.id).where(ApiToken.name == name)) is not None:
        raise ValueError(f"a token named {name!r} already exists")
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(name=name, token_hash=hash_token(plaintext), created_at=utcnow(), revoked=False)
    session.add(token)
    session.flush()
    return token, plaintext


def touch_token(session: Session, token_id: int, *, every: timedelta = TOKEN_TOUCH_EVERY) -> bool:
    """Set ``last_used_at`` now unless it was set within ``every``: one conditional UPDATE, meant
    for a short session of its own so that readers never hold a write lock."""
    now = utcnow()
    stmt = (update(ApiToken).where(ApiToken.id == token_id,
                                   or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at < now - every))
            .values(last_used_at=now))
    return session.execute(stmt).rowcount > 0


def verify_token(session: Session, plaintext: str, *, touch: bool = True) -> ApiToken | None:
    """The live (not revoked) token with this plaintext, or None.

    ``touch``: update ``last_used_at`` (when it is older than a minute); the caller commits.
    """
    if not plaintext:
        return None
    digest = hash_token(plaintext)
    token = session.scalars(select(ApiToken).where(ApiToken.token_hash == digest)).one_or_none()
    if token is None or token.revoked or not hmac.compare_digest(token.token_hash, digest):
        return None
    now = utcnow()
    if touch and (token.last_used_at is None or now - token.last_used_at > TOKEN_TOUCH_EVERY):
        token.last_used_at = now  # at most once a minute: reads stay reads on a busy server
        session.flush()
    return token


def revoke_token(session: Session, name: str) -> bool:
    """Revoke the token named ``name``; False if there is none."""
    result = session.execute(update(ApiToken).where(ApiToken.name == name).values(revoked=True))
    return result.rowcount > 0


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.id)).all())
