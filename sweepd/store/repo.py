"""The repository: every read and write the rest of sweepd does on the store.

Functions take a :class:`~sqlalchemy.orm.Session` first and never commit: the caller owns the
transaction (``with session_scope(Session) as s: ...``), so several calls can be one atomic
unit. Objects come back as ORM instances; with the package's sessionmaker
(``expire_on_commit=False``) they stay readable after the session closes.

States are validated here (the columns are plain strings so that adding a state needs no
table rebuild on SQLite).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Generic, TypeVar

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session, defer

from sweepd.store.db import insert_or_ignore
from sweepd.store.events import add_event, add_preflight_event, list_events  # noqa: F401  (the repository is their door)
from sweepd.store.lookup import NotFound, require_sweep
from sweepd.store.models import (
    EventKind,
    Sweep,
    SweepState,
    Trial,
    TrialState,
    utcnow,
)

T = TypeVar("T")



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


def _state(kind: type[SweepState] | type[TrialState], state: str | SweepState | TrialState) -> str:
    try:
        return kind(state).value
    except ValueError:
        allowed = ", ".join(s.value for s in kind)
        noun = kind.__name__.removesuffix("State").lower()
        raise ValueError(f"unknown {noun} state {state!r} (expected one of: {allowed})") from None


_sweep_state = partial(_state, SweepState)
_trial_state = partial(_state, TrialState)


# ------------------------------------------------------------------------------------ sweeps


def create_sweep(
    session: Session,
    *,
    name: str,
    spec: Mapping[str, Any],
    id: str | None = None,
    optuna_study_name: str | None = None,
    fingerprint: str | None = None,
    state: str | SweepState = SweepState.queued,
    idempotency_key: str | None = None,
    idempotency_digest: str | None = None,
) -> Sweep:
    """A new sweep in state ``queued`` (or ``state``: ``validating`` while the API's data
    preflight runs). Its Optuna study name defaults to ``sweepd-<id>``; ``fingerprint``: see
    sweepd/engine/fingerprint.py. ``idempotency_key`` (POST /sweeps's header) is unique: a second
    sweep with the same key raises IntegrityError at the flush (then look it up with
    :func:`sweep_by_idempotency_key`)."""
    sweep_id = id or new_id()
    sweep = Sweep(
        id=sweep_id,
        name=name,
        state=_sweep_state(state),
        spec=dict(spec),
        ledger={},
        optuna_study_name=optuna_study_name or f"sweepd-{sweep_id}",
        fingerprint=fingerprint,
        extensions=0,
        created_at=utcnow(),
        idempotency_key=idempotency_key,
        idempotency_digest=idempotency_digest,
        priority=str(spec.get("priority") or "normal"),
    )
    session.add(sweep)
    session.flush()
    return sweep


def get_sweep(session: Session, sweep_id: str) -> Sweep | None:
    return session.get(Sweep, sweep_id)


def sweep_by_idempotency_key(session: Session, key: str) -> Sweep | None:
    """The sweep submitted with this Idempotency-Key, if any (the key is unique)."""
    return session.scalars(select(Sweep).where(Sweep.idempotency_key == key)).one_or_none()


def list_sweeps(
    session: Session,
    *,
    state: str | SweepState | Sequence[str | SweepState] | None = None,
    limit: int = 50,
    offset: int = 0,
    load_spec: bool = True,
    order: str = "newest",
) -> Page[Sweep]:
    """Sweeps, newest first (``order="start"``: in the order queued sweeps start, highest
    priority first, then oldest), optionally only those in ``state`` (one state or several).
    ``load_spec=False``: the spec column is not read (a spec may be a megabyte; the API's list
    reads only the few fields it shows); touching ``.spec`` then loads it, one query per sweep."""
    if limit < 1 or offset < 0:
        raise ValueError(f"need limit >= 1 and offset >= 0, got limit={limit}, offset={offset}")
    if order not in ("newest", "start"):
        raise ValueError(f"order must be 'newest' or 'start', got {order!r}")
    cond = []
    if state is not None:
        states = [state] if isinstance(state, (str, SweepState)) else list(state)
        cond.append(Sweep.state.in_([_sweep_state(s) for s in states]))
    total = session.scalar(select(func.count()).select_from(Sweep).where(*cond)) or 0
    items = session.scalars(
        select(Sweep)
        .options(*(() if load_spec else (defer(Sweep.spec),)))
        .where(*cond)
        .order_by(*(START_ORDER if order == "start" else (Sweep.created_at.desc(), Sweep.id.desc())))
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
    compare-and-set, e.g. so a finishing driver does not overwrite ``cancelled``); returns
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
    """Record that the sweep's driver is alive (and who it is: ``controller``, its "pid@host")."""
    now = utcnow()
    values: dict[str, Any] = {"heartbeat_at": now}
    if controller is not None:
        values["controller"] = controller
    if session.execute(update(Sweep).where(Sweep.id == sweep_id).values(**values)).rowcount == 0:
        raise NotFound(f"no sweep {sweep_id!r}")
    return now


def claim_sweep(session: Session, sweep_id: str, *, controller: str, expected: str | None) -> bool:
    """Make ``controller`` the sweep's driver, with a fresh heartbeat, only if the column still
    holds ``expected`` (what the caller saw; None: no driver). A compare-and-set: of two claims
    made on the same sight, one wins; False for the other."""
    held = Sweep.controller.is_(None) if expected is None else Sweep.controller == expected
    stmt = (update(Sweep).where(Sweep.id == sweep_id, held)
            .values(controller=controller, heartbeat_at=utcnow())
            .execution_options(synchronize_session=False))
    return session.execute(stmt).rowcount == 1


def beat(session: Session, sweep_id: str, *, controller: str) -> bool:
    """A driver's heartbeat: fresh only while ``controller`` still holds the sweep; False once
    another driver claimed it (the caller then stops driving)."""
    stmt = (update(Sweep).where(Sweep.id == sweep_id, Sweep.controller == controller)
            .values(heartbeat_at=utcnow()).execution_options(synchronize_session=False))
    return session.execute(stmt).rowcount == 1


def sweep_controller(session: Session, sweep_id: str) -> str | None:
    """Who holds the sweep now, read from the store (not from an object the session may keep)."""
    return session.scalar(select(Sweep.controller).where(Sweep.id == sweep_id))


def stale_sweeps(session: Session, *, older_than: timedelta, host: str | None = None) -> list[Sweep]:
    """Running sweeps, oldest first, whose driver may be gone: no heartbeat for ``older_than``
    (none since it started), or, with ``host``, a driver on that host whatever its heartbeat
    (`Sweep.controller` holds the driver's "pid@host": a caller on that host can tell at once
    whether the pid still runs, see sweepd.service.driver.driver_alive)."""
    cutoff = utcnow() - older_than
    maybe_gone = [
        Sweep.heartbeat_at < cutoff,
        and_(Sweep.heartbeat_at.is_(None), Sweep.started_at < cutoff),
    ]
    if host is not None:
        maybe_gone.append(Sweep.controller.endswith(f"@{host}", autoescape=True))
    return list(
        session.scalars(
            select(Sweep)
            .where(Sweep.state == SweepState.running.value, or_(*maybe_gone))
            .order_by(Sweep.created_at)
        ).all()
    )


def update_ledger(
    session: Session, sweep_id: str, changes: Mapping[str, Any], *, replace: bool = False
) -> dict[str, Any]:
    """Merge ``changes`` into the sweep's ledger (or replace it); returns the new ledger."""
    sweep = require_sweep(session, sweep_id)
    ledger = dict(changes) if replace else {**(sweep.ledger or {}), **changes}
    sweep.ledger = ledger  # a new dict, so the change is seen
    session.flush()
    return ledger


def set_best_trial(session: Session, sweep_id: str, trial_id: str | None) -> None:
    sweep = require_sweep(session, sweep_id)
    if trial_id is not None:
        trial = session.get(Trial, trial_id)
        if trial is None or trial.sweep_id != sweep_id:
            raise NotFound(f"no trial {trial_id!r} in sweep {sweep_id!r}")
    sweep.best_trial_id = trial_id
    session.flush()


# ------------------------------------------------------------------------------------ trials

_TRIAL_FIELDS = frozenset(
    {
        "config", "state", "objective", "metrics_final", "stopped_at", "reason", "error", "error_detail",
        "attempts", "started_at", "finished_at", "samples", "tokens", "seconds",
    }
)


def upsert_trial(session: Session, sweep_id: str, number: int, **fields: Any) -> Trial:
    """Create trial ``number`` of a sweep, or update it: (sweep_id, number) is the key.

    ``fields`` are Trial columns (config, state, objective, metrics_final, stopped_at, reason,
    error, error_detail, attempts, started_at, finished_at, samples, tokens, seconds); those not given keep
    their value. Safe to call again after a resume, and safe against a concurrent writer.
    """
    unknown = set(fields) - _TRIAL_FIELDS
    if unknown:
        raise ValueError(f"unknown trial field(s): {', '.join(sorted(unknown))}")
    if "state" in fields:
        fields["state"] = _trial_state(fields["state"])
    require_sweep(session, sweep_id)
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
        insert_or_ignore(session, Trial).values(**base).on_conflict_do_nothing(
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


# ---- metric points, tokens and sweep history live in their own modules; the repository is
# their one door (``repo.add_metric_points``, ``repo.create_token``, ``repo.extend_sweep`` ...) ----

from sweepd.store.metric_points import (  # noqa: E402,F401
    METRIC_BATCH_SIZE,
    add_metric_points,
    count_metric_points,
    delete_metric_points,
    read_metrics,
    read_superseded,
    set_trial_totals,
)
from sweepd.store.tokens import (  # noqa: E402,F401
    DEFAULT_SCOPE,
    SCOPES,
    TOKEN_PREFIX,
    TOKEN_TOUCH_EVERY,
    create_token,
    find_token,
    get_token,
    hash_token,
    list_tokens,
    parse_duration,
    revoke_token,
    scope_allows,
    token_problem,
    token_state,
    touch_token,
    verify_token,
)
from sweepd.store.sharing import (  # noqa: E402,F401
    START_ORDER,
    queue_positions,
    queued_in_order,
    set_priority,
    set_share,
    sweep_trial_limit,
    trial_counts,
)
from sweepd.store.sweep_history import (  # noqa: E402,F401
    extend_sweep,
    previous_sweep,
    record_warm_start,
    set_study_name,
)
