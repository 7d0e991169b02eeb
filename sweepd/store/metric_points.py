"""A trial's per-step metric points in the store: idempotent bulk writes and downsampled reads.

Each point carries the attempt (1, 2, ... one per run of a retried trial) that wrote it. A later
attempt's point for a step already stored supersedes it: the earlier attempt's points from that
step on move to ``sweepd_superseded_points`` (``SupersededPoint``), so the curve keeps every step
once, each from the latest attempt that reported it, and no attempt's points are lost.

Reached through ``sweepd.store.repo`` like every other read and write; the session rules are the
repository's (the caller owns the transaction).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from sweepd.store.db import insert_or_ignore
from sweepd.store.models import MetricPoint, SupersededPoint, Trial

METRIC_BATCH_SIZE = 500


def set_trial_totals(session: Session, trial_id: str, *, samples: int, tokens: int, seconds: float) -> bool:
    """A running trial's progress (its last point's samples, tokens, seconds): one UPDATE, written with
    every flush of its points. False when no such trial is stored (the caller creates it)."""
    stmt = (update(Trial).where(Trial.id == trial_id).values(samples=samples, tokens=tokens, seconds=seconds)
            .execution_options(synchronize_session=False))
    return session.execute(stmt).rowcount == 1


def _point_row(trial_id: str, point: Mapping[str, Any] | MetricPoint, attempt: int = 1) -> dict[str, Any]:
    if isinstance(point, MetricPoint):
        point = point.to_dict()
    if "step" not in point:
        raise ValueError(f"metric point without a step: {dict(point)!r}")
    row: dict[str, Any] = {"trial_id": trial_id, "step": int(point["step"]),
                           "attempt": int(point.get("attempt") or attempt)}
    for f in MetricPoint.FIELDS[1:]:
        v = point.get(f)
        if isinstance(v, float) and not math.isfinite(v):
            v = None  # NaN/inf: stored as null on both backends
        row[f] = v
    extra = {k: v for k, v in point.items() if k not in MetricPoint.FIELDS and k not in ("trial_id", "attempt")}
    row["extra"] = extra or None
    return row


def _supersede(session: Session, trial_id: str, rows: list[dict[str, Any]]) -> None:
    """Move the points of earlier attempts that the rows' attempts report again (from each
    attempt's first step in the rows on) out of the curve. Attempt 1 supersedes nothing, so a
    trial never retried costs nothing here."""
    first: dict[int, int] = {}
    for r in rows:
        if r["attempt"] > 1:
            first[r["attempt"]] = min(first.get(r["attempt"], r["step"]), r["step"])
    if not first:
        return
    connection = session.connection()
    mp = MetricPoint.__table__
    for attempt, step in sorted(first.items()):
        where = (mp.c.trial_id == trial_id, mp.c.step >= step, mp.c.attempt < attempt)
        old = connection.execute(select(mp).where(*where)).mappings().all()
        if not old:
            continue
        moved = [{"trial_id": trial_id, "attempt": int(o["attempt"]), "step": int(o["step"]), "point": _as_point(o)}
                 for o in old]
        connection.execute(insert_or_ignore(session, SupersededPoint)
                           .on_conflict_do_nothing(index_elements=["trial_id", "attempt", "step"]), moved)
        connection.execute(delete(mp).where(*where))


def _as_point(row: Mapping[str, Any]) -> dict[str, Any]:
    point = {f: row[f] for f in MetricPoint.FIELDS}
    point.update(row["extra"] or {})
    point["attempt"] = int(row["attempt"])
    return point


def add_metric_points(
    session: Session,
    trial_id: str,
    points: Iterable[Mapping[str, Any] | MetricPoint],
    *,
    batch_size: int = METRIC_BATCH_SIZE,
    attempt: int = 1,
) -> int:
    """Store a trial's per-step metrics, idempotently; returns how many rows were new.

    Points are dicts like the trainer's JSONL lines (``step`` required; ``samples``,
    ``tokens``, ``loss``, ``grad_norm``, ``lr``, ``seconds``, ``tokens_per_second``, ``mfu``,
    ``peak_memory_gb`` go to columns, any other key to ``extra``). A step already stored is left as it is (INSERT ... ON CONFLICT DO NOTHING), so
    writing the same points again after a resume neither fails nor duplicates.
    Non-finite floats are stored as null.

    ``attempt`` (or a point's own ``attempt`` key): the run of the trial that reported them. A
    point of attempt ``a`` at step ``s`` first moves the stored points of attempts before ``a``
    at steps ``>= s`` to the superseded points (see the module's docstring); a point of an older
    attempt than the one stored at its step is ignored.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rows = [_point_row(trial_id, p, attempt) for p in points]
    _supersede(session, trial_id, rows)
    stmt = (
        insert_or_ignore(session, MetricPoint)
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


def read_superseded(session: Session, trial_id: str) -> list[dict[str, Any]]:
    """The points a trial's later attempts superseded, by attempt and step (each as it was
    stored: the metric keys, its extra keys and ``attempt``)."""
    rows = session.scalars(select(SupersededPoint).where(SupersededPoint.trial_id == trial_id)
                           .order_by(SupersededPoint.attempt, SupersededPoint.step)).all()
    return [{**r.point, "attempt": r.attempt, "step": r.step} for r in rows]


def delete_metric_points(session: Session, trial_id: str) -> None:
    """A trial's whole curve, superseded points included (a number re-suggested with other params)."""
    session.execute(delete(MetricPoint).where(MetricPoint.trial_id == trial_id))
    session.execute(delete(SupersededPoint).where(SupersededPoint.trial_id == trial_id))
