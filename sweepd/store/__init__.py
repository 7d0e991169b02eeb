"""sweepd's SQL store: models, engine/session helpers, migrations and the repository layer.

    from sweepd.store import make_engine, make_sessionmaker, session_scope, upgrade, repo
"""

from sweepd.store import repo
from sweepd.store.db import default_url, make_engine, make_sessionmaker, session_scope
from sweepd.store.migrate import current_revision, head_revision, upgrade
from sweepd.store.models import ApiToken, Base, Event, EventKind, MetricPoint, Sweep, SweepState, Trial, TrialState

__all__ = [
    "ApiToken", "Base", "Event", "EventKind", "MetricPoint", "Sweep", "SweepState", "Trial", "TrialState",
    "current_revision", "default_url", "head_revision", "make_engine", "make_sessionmaker", "repo",
    "session_scope", "upgrade",
]
