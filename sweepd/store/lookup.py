"""Finding a row or saying clearly that it is not there: shared by the repository's modules."""

from __future__ import annotations

from sqlalchemy.orm import Session

from sweepd.store.models import Sweep


class NotFound(LookupError):
    """A sweep, trial or token that does not exist."""


def require_sweep(session: Session, sweep_id: str) -> Sweep:
    sweep = session.get(Sweep, sweep_id)
    if sweep is None:
        raise NotFound(f"no sweep {sweep_id!r}")
    return sweep
