"""Reads over many trials at once: every trial's downsampled curve (the dashboard's chart) and the
calibration of the early signals against the final objective."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from api.schemas import Calibration, CalibrationRow, ObjectiveOut
from api.views import objective_of, stored_spec
from sweepd.spec import PrunerSpec, SweepSpec
from sweepd.store.models import MetricPoint, Sweep, Trial, TrialState
from sweepd.pruners.rungs import TIME_KEYS
from sweepd.pruners.signals import rank_correlation, smoothed
from sweepd.pruners.signals import ranks as average_ranks  # ascending ranks, ties averaged
from sweepd.protocol import METRIC_KEYS
from sweepd.formatting import json_safe

CALIBRATION_SIGNALS = ("loss", "grad_norm")
CALIBRATION_RUNGS = 3  # the first rungs only: where an early decision is taken
MIN_SPEARMAN_N = 3


# ---- curves -----------------------------------------------------------------------------------


def kept_indexes(n: int, max_points: int) -> list[int]:
    """Which of ``n`` points (0-based, in step order) a curve of ``max_points`` keeps: all of
    them, or the first row of each bucket ``k * (m-1) // (n-1)`` (``repo.read_metrics``' rule:
    exactly ``m`` points, first and last included). The first row of bucket ``j`` is
    ``ceil(j * (n-1) / (m-1))``."""
    if n <= max_points:
        return list(range(n))
    m1, n1 = max_points - 1, n - 1
    return [-(-j * n1 // m1) for j in range(max_points)]


def _windowed(
    session: Session, trial_ids: list[str], max_points: int, fields: tuple[str, ...] = METRIC_KEYS
) -> list[Any]:
    """The downsampled points of trials whose steps have gaps: a window function numbers them."""
    cols = [getattr(MetricPoint, f) for f in fields]
    numbered = (
        select(
            MetricPoint.trial_id,
            *cols,
            func.row_number().over(partition_by=MetricPoint.trial_id, order_by=MetricPoint.step).label("rn"),
            func.count().over(partition_by=MetricPoint.trial_id).label("n"),
        )
        .where(MetricPoint.trial_id.in_(trial_ids))
        .subquery()
    )
    k = numbered.c.rn - 1
    n1 = func.nullif(numbered.c.n - 1, 0)
    m1 = max_points - 1
    keep = or_(numbered.c.n <= max_points, k == 0, (k * m1) // n1 > ((k - 1) * m1) // n1)
    return list(session.connection().execute(
        select(numbered.c.trial_id, *[numbered.c[f] for f in fields]).where(keep)
    ).all())  # fmt: skip


def sweep_curves(
    session: Session, sweep_id: str, max_points: int, fields: tuple[str, ...] = METRIC_KEYS
) -> list[dict[str, Any]]:
    """Every trial of the sweep with its curve downsampled to ``max_points`` points (the same
    rule as ``repo.read_metrics``: first and last point kept, evenly spaced between), in columns:
    one list per field in ``fields`` (``step`` always comes first), index ``i`` of every list
    being the trial's ``i``-th kept point in step order. A stopped trial's last point (where the
    pruner stopped it) is always kept.

    Without reading every point: one grouped query gives each trial's first step and point
    count; trials whose steps are contiguous (the trainer reports every step) and have the same
    first step and count keep the same steps, so each such group is one indexed query
    (``trial_id IN (...) AND step IN (...)``). Trials with gaps in their steps take one windowed
    query together. A sweep of 500 trials × 2,000 steps is a handful of queries.
    """
    if max_points < 2:
        raise ValueError(f"max_points must be >= 2, got {max_points}")
    unknown = set(fields) - set(METRIC_KEYS)
    if unknown:
        raise ValueError(f"unknown curve fields {sorted(unknown)}; known: {list(METRIC_KEYS)}")
    fields = ("step", *[f for f in METRIC_KEYS if f in fields and f != "step"])
    trials = session.execute(
        select(Trial.id, Trial.number, Trial.state, Trial.stopped_at, Trial.reason)
        .where(Trial.sweep_id == sweep_id)
        .order_by(Trial.number)
    ).all()
    if not trials:
        return []
    step = MetricPoint.step
    stats = session.execute(
        select(MetricPoint.trial_id, func.min(step), func.max(step), func.count())
        .where(MetricPoint.trial_id.in_(select(Trial.id).where(Trial.sweep_id == sweep_id)))
        .group_by(MetricPoint.trial_id)
    ).all()
    groups: dict[tuple[int, int], list[str]] = defaultdict(list)
    gaps: list[str] = []
    for tid, lo, hi, n in stats:
        if hi - lo + 1 == n:
            groups[(lo, n)].append(tid)
        else:
            gaps.append(tid)
    cols = [MetricPoint.trial_id, *[getattr(MetricPoint, f) for f in fields]]
    rows: list[Any] = []
    for (lo, n), tids in groups.items():
        for i in range(0, len(tids), 500):
            stmt = select(*cols).where(MetricPoint.trial_id.in_(tids[i : i + 500]))
            if n > max_points:
                stmt = stmt.where(step.in_([lo + k for k in kept_indexes(n, max_points)]))
            rows += session.connection().execute(stmt).all()  # Core rows: no ORM overhead
    for i in range(0, len(gaps), 500):
        rows += _windowed(session, gaps[i : i + 500], max_points, fields)
    by_trial: dict[str, list[Any]] = defaultdict(list)
    for row in rows:  # values are finite: the store writes non-finite floats as null
        by_trial[row[0]].append(row[1:])
    out = []
    for t in trials:
        points = by_trial.get(t.id)
        if points:
            points.sort(key=lambda p: p[0])  # by step
            columns = [list(c) for c in zip(*points)]
        else:
            columns = [[] for _ in fields]
        doc = {"id": t.id, "number": t.number, "state": t.state, "stopped_at": json_safe(t.stopped_at),
               "reason": t.reason}
        doc.update(zip(fields, columns))
        out.append(doc)
    return out


# ---- calibration ------------------------------------------------------------------------------


def spearman(xs: list[float], ys: list[float]) -> float | None:
    """Spearman's rho: Pearson's correlation of the average ranks. None when there are fewer
    than 3 pairs or either side is constant (undefined)."""
    if len(xs) != len(ys):
        raise ValueError(f"need pairs, got {len(xs)} and {len(ys)} values")
    if len(xs) < MIN_SPEARMAN_N:
        return None
    return rank_correlation(xs, ys)


def _pruner_axis(spec: SweepSpec | None) -> tuple[list[float], str, int, str]:
    """(the first rungs, the time column, the smoothing window, the smoother) of the sweep's
    pruner as its class resolves it (``PrunerSpec.on_axis``: a sweep without a pruner gets the
    rungs ASHA with its options would have)."""
    pruner = (spec.pruner if spec is not None else PrunerSpec()).on_axis()
    rungs = [pruner.rung_time(i) for i in range(CALIBRATION_RUNGS)]
    max_t = None
    if spec is not None:
        try:
            max_t = spec.max_time()
        except Exception:  # noqa: BLE001 - e.g. unreadable train files: keep every rung
            max_t = None
    if max_t is not None:
        rungs = [r for r in rungs if r < max_t] or rungs[:1]
    return rungs, TIME_KEYS[pruner.time_attr], pruner.window, pruner.smooth


def _value_at(series: list[tuple[float, float | None]], rung: float, window: int, smooth: str) -> float | None:
    """The pruner's smoothed value (``smooth`` over the ``window`` values ending at the point
    nearest to ``rung``; ties: the earlier point), ignoring missing values. ``series``: (time,
    value) in time order."""
    if not series:
        return None
    nearest = min(range(len(series)), key=lambda i: (abs(series[i][0] - rung), i))
    values = [v for _, v in series[max(0, nearest - window + 1) : nearest + 1] if v is not None]
    return smoothed(values, smooth) if values else None


def calibration(session: Session, sweep: Sweep) -> Calibration:
    spec = stored_spec(sweep)
    objective: ObjectiveOut = objective_of(sweep, spec)
    rungs, column, window, smooth = _pruner_axis(spec)
    finished = session.execute(
        select(Trial.id, Trial.objective).where(
            Trial.sweep_id == sweep.id,
            Trial.state == TrialState.completed.value,
            Trial.objective.is_not(None),
        )
    ).all()
    objectives = {tid: obj for tid, obj in finished if json_safe(obj) is not None}
    series: dict[str, dict[str, list[tuple[float, float | None]]]] = {
        tid: {s: [] for s in CALIBRATION_SIGNALS} for tid in objectives
    }
    if objectives:
        time_col = getattr(MetricPoint, column)
        # Points past twice the last rung can never be the nearest one to a rung that a trial
        # reached: the read stays small however long the trials ran.
        horizon = 2 * rungs[-1] + 1
        rows = session.connection().execute(
            select(MetricPoint.trial_id, time_col, MetricPoint.loss, MetricPoint.grad_norm)
            .where(
                MetricPoint.trial_id.in_(list(objectives)),
                time_col.is_not(None),
                time_col <= horizon,
            )
            .order_by(MetricPoint.trial_id, MetricPoint.step)
        ).all()
        for tid, t, loss, grad_norm in rows:
            series[tid]["loss"].append((float(t), json_safe(loss)))
            series[tid]["grad_norm"].append((float(t), json_safe(grad_norm)))
    out: list[CalibrationRow] = []
    for rung in rungs:
        for signal in CALIBRATION_SIGNALS:
            xs, ys = [], []
            for tid, obj in objectives.items():
                s = series[tid][signal]
                if not s or s[-1][0] < rung:  # never reached this rung
                    continue
                value = _value_at(s, rung, window, smooth)
                if value is not None:
                    xs.append(value)
                    ys.append(float(obj))
            at = int(rung) if float(rung).is_integer() else rung
            out.append(CalibrationRow(signal=signal, at=at, spearman=spearman(xs, ys), n=len(xs)))
    return Calibration(objective=objective, n_trials=len(objectives), rows=out)
