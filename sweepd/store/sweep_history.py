"""A sweep's history in the store: the earlier sweep it warm-starts from, where its prior came
from, and extending a finished sweep.

Reached through ``sweepd.store.repo`` like every other read and write; the session rules are the
repository's (the caller owns the transaction).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from sweepd.store.events import add_event
from sweepd.store.lookup import require_sweep
from sweepd.store.models import EventKind, Sweep, SweepState


def previous_sweep(session: Session, *, name: str, fingerprint: str | None, exclude: str | None = None) -> Sweep | None:
    """The most recently finished succeeded sweep with this name and fingerprint (other than
    ``exclude``), or None. A sweep without a fingerprint has no previous one."""
    if not fingerprint:
        return None
    stmt = select(Sweep).where(Sweep.name == name, Sweep.fingerprint == fingerprint,
                               Sweep.state == SweepState.succeeded.value)
    if exclude is not None:
        stmt = stmt.where(Sweep.id != exclude)
    stmt = stmt.order_by(Sweep.finished_at.desc(), Sweep.created_at.desc(), Sweep.id.desc()).limit(1)
    return session.scalars(stmt).first()


def record_warm_start(session: Session, sweep_id: str, *, source: str | None, details: Mapping[str, Any]) -> Sweep:
    """Store where the sweep's prior came from (``source``: a sweep id, None for a cold start)
    and what was taken from it."""
    sweep = require_sweep(session, sweep_id)
    sweep.warm_started_from = source
    sweep.warm_start = dict(details)
    session.flush()
    return sweep


def set_study_name(session: Session, sweep_id: str, study_name: str) -> None:
    sweep = require_sweep(session, sweep_id)
    sweep.optuna_study_name = study_name
    session.flush()


def extend_sweep(
    session: Session,
    sweep_id: str,
    spec: Mapping[str, Any],
    *,
    message: str,
    payload: Mapping[str, Any] | None = None,
) -> Sweep | None:
    """Queue a finished sweep again with ``spec`` (more trials or budget, maybe a narrowed
    space): state ``queued``, one more extension, no finish time, error or chosen best trial
    (the driver picks them again). A compare-and-set: None when the sweep is not finished
    (NotFound when there is no such sweep). Records a ``state`` event with ``message``."""
    terminal = [s.value for s in SweepState if s.terminal]
    stmt = (
        update(Sweep)
        .where(Sweep.id == sweep_id, Sweep.state.in_(terminal))
        .values(state=SweepState.queued.value, spec=dict(spec), extensions=Sweep.extensions + 1,
                finished_at=None, error=None, best_trial_id=None, heartbeat_at=None, controller=None)
        .execution_options(synchronize_session=False)
    )
    if session.execute(stmt).rowcount == 0:
        require_sweep(session, sweep_id)
        return None
    sweep = session.get(Sweep, sweep_id)
    assert sweep is not None
    session.refresh(sweep)
    add_event(session, sweep_id, EventKind.state, message,
              payload={"state": SweepState.queued.value, "extension": sweep.extensions, **(payload or {})})
    return sweep
