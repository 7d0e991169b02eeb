"""A sweep's events in the store: pruner decisions, state changes, errors, each with a sentence.

Reached through ``sweepd.store.repo`` like every other read and write; the session rules are the
repository's (the caller owns the transaction).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from sweepd.store.models import Event, EventKind, utcnow


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


def add_preflight_event(session: Session, sweep_id: str, summary: Mapping[str, Any]) -> Event:
    """The data preflight's summary (trainer/preflight.py) as the sweep's "data" event: the
    sweep page shows its sentence, the payload keeps the per-file figures."""
    t = summary.get("totals") or {}
    return add_event(session, sweep_id, "data",
                     f"data preflight: {t.get('train_samples', 0):,} train samples, "
                     f"{t.get('dropped_overlong', 0):,} over-long dropped, {t.get('truncated', 0):,} truncated",
                     payload=summary)
