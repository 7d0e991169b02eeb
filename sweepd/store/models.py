"""The store's tables, as SQLAlchemy 2.0 typed models.

The schema itself comes only from the Alembic migrations in ``migrations/``; these models must
match it (``tests/store/test_migrations.py`` compares them).

Every table is prefixed ``sweepd_`` because Optuna's RDB storage lives in the same database
(so that optuna-dashboard can open a sweep's study) and owns unprefixed names such as
``trials``, ``studies`` and ``alembic_version``. Our Alembic version table is
``sweepd_alembic_version`` for the same reason.

Types are portable (SQLite and PostgreSQL): JSON, timezone-aware timestamps (always returned
as UTC-aware datetimes, also on SQLite), strings for states (validated by the repository).
"""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from sweepd.protocol import METRIC_KEYS, SweepState, TrialState  # noqa: F401  (re-exported)

TABLE_PREFIX = "sweepd_"
VERSION_TABLE = "sweepd_alembic_version"

# Deterministic constraint names: Alembic's batch mode on SQLite and later migrations rely on them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that stores UTC and always returns aware UTC datetimes.

    SQLite has no time zones: values are stored as naive UTC there and made aware on the way
    out, so code never has to care which backend it runs on. Naive inputs are taken as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        if dialect.name == "sqlite":
            value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class EventKind(str, enum.Enum):
    """Well-known event kinds; the column accepts any short string."""

    state = "state"  # a sweep or trial changed state
    decision = "decision"  # the pruner's CONTINUE/STOP, with its inputs in the payload
    info = "info"
    error = "error"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
    }


class Sweep(Base):
    __tablename__ = "sweepd_sweeps"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16), default=SweepState.queued.value)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    heartbeat_at: Mapped[datetime | None]
    # Who drives it: the sweep driver's "pid@host" (the column keeps its first name).
    controller: Mapped[str | None] = mapped_column(String(200))
    # No foreign key (it would make a cycle with trials); the repository keeps it consistent.
    best_trial_id: Mapped[str | None] = mapped_column(String(64))
    ledger: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    optuna_study_name: Mapped[str | None] = mapped_column(String(200))
    # sha256 of the model, the data files' contents and the objective (sweepd/engine/fingerprint.py):
    # sweeps with the same name and fingerprint may warm-start from each other.
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    # Where the study's prior came from (a sweep id; None: a cold start, or not started yet) and
    # what was taken from it: {"mode", "source", "trials_added", "curves", "message", ...}.
    warm_started_from: Mapped[str | None] = mapped_column(String(32))
    warm_start: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # How often the sweep was extended (`sweepd extend`); segment k > 0 runs as its own Tune run.
    extensions: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # POST /sweeps's Idempotency-Key (0007): a retried submit finds the sweep its first try made;
    # the digest is the sha256 of that request's body (the same key with another body is refused).
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    idempotency_digest: Mapped[str | None] = mapped_column(String(64))
    # Sharing one Ray cluster (0008; sweepd/service/shares.py): the sweep's priority (low, normal,
    # high; from the spec, changeable while it runs), the running-trial limit the supervisor grants
    # it (None: no limit but its own max_concurrent), and why it runs fewer trials than it could.
    priority: Mapped[str] = mapped_column(String(8), default="normal", server_default="normal")
    trial_limit: Mapped[int | None] = mapped_column(Integer)
    waiting_for: Mapped[str | None] = mapped_column(Text)

    trials: Mapped[list[Trial]] = relationship(
        back_populates="sweep",
        order_by="Trial.number",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )

    __table_args__ = (Index("ix_sweepd_sweeps_state_created_at", "state", "created_at"),
                      Index("ix_sweepd_sweeps_created_at", "created_at"),
                      Index("ix_sweepd_sweeps_fingerprint_name", "fingerprint", "name"))

    def __repr__(self) -> str:
        return f"Sweep(id={self.id!r}, name={self.name!r}, state={self.state!r})"


class Trial(Base):
    __tablename__ = "sweepd_trials"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sweep_id: Mapped[str] = mapped_column(ForeignKey("sweepd_sweeps.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16), default=TrialState.pending.value)
    objective: Mapped[float | None] = mapped_column(Float)
    metrics_final: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Where the pruner stopped it, on the sweep's time axis (samples by default).
    stopped_at: Mapped[float | None] = mapped_column(Float)
    reason: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    # A crash's last traceback lines (the dashboard folds them away); none for a trainer error.
    error_detail: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    samples: Mapped[int] = mapped_column(BigInteger, default=0)
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)

    sweep: Mapped[Sweep] = relationship(back_populates="trials")

    __table_args__ = (
        UniqueConstraint("sweep_id", "number"),
        Index("ix_sweepd_trials_state", "state"),
    )

    def __repr__(self) -> str:
        return f"Trial(id={self.id!r}, number={self.number}, state={self.state!r})"


class MetricPoint(Base):
    """One optimizer step of one trial. The primary key (trial_id, step) is the uniqueness
    guarantee behind idempotent writes and the index a curve is read through, in step order."""

    __tablename__ = "sweepd_metric_points"

    trial_id: Mapped[str] = mapped_column(
        ForeignKey("sweepd_trials.id", ondelete="CASCADE"), primary_key=True
    )
    step: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    samples: Mapped[int | None] = mapped_column(BigInteger)
    tokens: Mapped[int | None] = mapped_column(BigInteger)
    loss: Mapped[float | None] = mapped_column(Float)
    grad_norm: Mapped[float | None] = mapped_column(Float)
    lr: Mapped[float | None] = mapped_column(Float)
    seconds: Mapped[float | None] = mapped_column(Float)
    # the step's throughput and memory (trainer/throughput.py); null on points from before 0004
    tokens_per_second: Mapped[float | None] = mapped_column(Float)
    mfu: Mapped[float | None] = mapped_column(Float)  # null on CPU and on an unknown GPU
    peak_memory_gb: Mapped[float | None] = mapped_column(Float)
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # which run of the trial wrote it: 1, then 2, 3 ... for each retry (0006; see SupersededPoint)
    attempt: Mapped[int] = mapped_column(Integer, default=1, server_default="1")

    # Columns a metric dict maps onto; anything else goes into `extra`.
    FIELDS = METRIC_KEYS

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {f: getattr(self, f) for f in self.FIELDS}
        if self.extra:
            d.update(self.extra)
        d["attempt"] = self.attempt if self.attempt is not None else 1
        return d

    def __repr__(self) -> str:
        return f"MetricPoint(trial_id={self.trial_id!r}, step={self.step})"


class SupersededPoint(Base):
    """A step an earlier attempt of a trial reported and a later attempt reported again (a retry
    resumed from an older checkpoint, or restarted from step 0): moved out of the curve, kept
    here as it was (``MetricPoint.to_dict()``), so each attempt's steps stay apart and the curve
    (``sweepd_metric_points``) has every step once."""

    __tablename__ = "sweepd_superseded_points"

    trial_id: Mapped[str] = mapped_column(
        ForeignKey("sweepd_trials.id", ondelete="CASCADE"), primary_key=True
    )
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    step: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    point: Mapped[dict[str, Any]] = mapped_column(JSON)

    def __repr__(self) -> str:
        return f"SupersededPoint(trial_id={self.trial_id!r}, attempt={self.attempt}, step={self.step})"


class Event(Base):
    __tablename__ = "sweepd_events"

    # Autoincrement id: the order events were written in (created_at can tie).
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sweep_id: Mapped[str] = mapped_column(ForeignKey("sweepd_sweeps.id", ondelete="CASCADE"))
    trial_id: Mapped[str | None] = mapped_column(
        ForeignKey("sweepd_trials.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    message: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (
        Index("ix_sweepd_events_sweep_id_id", "sweep_id", "id"),
        Index("ix_sweepd_events_trial_id", "trial_id"),
    )

    def __repr__(self) -> str:
        return f"Event(id={self.id}, kind={self.kind!r}, message={self.message!r})"


class ApiToken(Base):
    """A bearer token. Only its sha256 (hex) is stored; the plaintext is shown once."""

    __tablename__ = "sweepd_api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # read < write < admin (each implies the ones before it); see sweepd/store/tokens.py
    scope: Mapped[str] = mapped_column(String(16), default="write", server_default="write")
    expires_at: Mapped[datetime | None]  # None: never expires

    def __repr__(self) -> str:
        return f"ApiToken(id={self.id}, name={self.name!r}, scope={self.scope!r}, revoked={self.revoked})"
