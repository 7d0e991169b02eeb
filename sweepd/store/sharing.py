"""What the store holds for sweeps sharing one cluster (issue 16): each sweep's priority, the
running-trial limit the supervisor grants it and why it waits, the queue's order, and trial counts
by state. The supervisor writes the limits (sweepd/service/shares.py decides them); a driver's
searcher reads its own before each suggestion (sweepd/engine/share_gate.py); the API shows them."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from sweepd.protocol import PRIORITIES, PRIORITY_WEIGHTS, SweepState
from sweepd.store.lookup import require_sweep
from sweepd.store.models import Sweep, Trial

# highest priority first, then oldest: the order the supervisor starts queued sweeps in
_PRIORITY_RANK = case({p: -w for p, w in PRIORITY_WEIGHTS.items()}, value=Sweep.priority, else_=0)
START_ORDER = (_PRIORITY_RANK, Sweep.created_at, Sweep.id)


def queued_in_order(session: Session, *, limit: int = 1000) -> list[Sweep]:
    """Queued sweeps in the order they start: highest priority first, then oldest."""
    stmt = (select(Sweep).where(Sweep.state == SweepState.queued.value)
            .order_by(*START_ORDER).limit(limit))
    return list(session.scalars(stmt))


def queue_positions(session: Session) -> dict[str, int]:
    """Each queued sweep's place in the queue, 1 first."""
    stmt = (select(Sweep.id).where(Sweep.state == SweepState.queued.value)
            .order_by(*START_ORDER))
    return {sweep_id: i for i, sweep_id in enumerate(session.scalars(stmt), start=1)}


def set_share(session: Session, sweep_id: str, *, trial_limit: int | None, waiting_for: str | None) -> None:
    """The supervisor's grant: the sweep may run at most ``trial_limit`` trials at once (None: its
    own max_concurrent), and why it runs fewer than it could (None: it does not wait)."""
    session.execute(update(Sweep).where(Sweep.id == sweep_id)
                    .values(trial_limit=trial_limit, waiting_for=waiting_for))


def sweep_trial_limit(session: Session, sweep_id: str) -> int | None:
    return session.scalar(select(Sweep.trial_limit).where(Sweep.id == sweep_id))


def set_priority(session: Session, sweep_id: str, priority: str) -> Sweep:
    """Change a sweep's priority (a queued sweep moves in the queue; a running one's share follows
    at the supervisor's next tick). ValueError on an unknown priority."""
    if priority not in PRIORITIES:
        raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}, got {priority!r}")
    sweep = require_sweep(session, sweep_id)
    sweep.priority = priority
    return sweep


def trial_counts(session: Session, sweep_ids: Iterable[str]) -> dict[str, dict[str, int]]:
    """{sweep id: {trial state: count}} for the given sweeps (a sweep with no trials: {})."""
    ids = list(sweep_ids)
    counts: dict[str, dict[str, int]] = {i: {} for i in ids}
    if not ids:
        return counts
    stmt = (select(Trial.sweep_id, Trial.state, func.count()).where(Trial.sweep_id.in_(ids))
            .group_by(Trial.sweep_id, Trial.state))
    for sweep_id, state, n in session.execute(stmt):
        counts[sweep_id][state] = n
    return counts
