"""Store rows -> response schemas, in few queries (a page of sweeps costs a fixed number of
queries, not one per sweep; a sweep's detail never loads metric points). A stored spec is read as
it is, never validated again (api/stored.py)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import HTTPException, status
from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session

from api.schemas import BestTrialOut, BudgetOut, ObjectiveOut, ProgressOut, SweepDetail, SweepPublic
from api.stored import SpecSummary, budget_plans, summaries, summary_of
from sweepd.engine.budget import account, trial_uses
from sweepd.spec import SweepSpec
from sweepd.store import repo
from sweepd.store.models import Sweep, Trial, TrialState, utcnow
from sweepd.protocol import ACTIVE_SWEEP_STATES, FINISHED_TRIAL_STATES, PRIORITIES, SweepState

log = logging.getLogger("sweepd.api")

_MAX_ID_LEN = 128


def _plausible_id(value: str) -> bool:
    """Ids are short printable strings; anything else cannot exist (and NUL would upset
    PostgreSQL), so it is a 404 without asking the database."""
    return 0 < len(value) <= _MAX_ID_LEN and value.isprintable()


def sweep_or_404(session: Session, sweep_id: str) -> Sweep:
    sweep = repo.get_sweep(session, sweep_id) if _plausible_id(sweep_id) else None
    if sweep is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no sweep {sweep_id!r}")
    return sweep


def trial_or_404(session: Session, trial_id: str) -> Trial:
    trial = repo.get_trial(session, trial_id) if _plausible_id(trial_id) else None
    if trial is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no trial {trial_id!r}")
    return trial


def stored_spec(sweep: Sweep) -> SweepSpec | None:
    """The sweep's spec rebuilt as a model, or None when the stored dict is not a valid spec. Only
    for the analyses that need the model's semantics (calibration: the pruner's rungs, the
    budget's length); the sweep views read the stored document as it is (api/stored.py)."""
    try:
        return SweepSpec.from_stored(sweep.spec)
    except Exception:  # noqa: BLE001 - a row written by something else; never a 500 on a read
        log.warning("sweep %s: stored spec does not validate", sweep.id, exc_info=True)
        return None


def objective_of(sweep: Sweep, spec: SweepSpec | None = None) -> ObjectiveOut:
    if spec is not None:
        return ObjectiveOut(metric=spec.objective.metric, mode=spec.objective.mode)
    return summary_of(sweep.spec).objective


def trial_counts(session: Session, sweep_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """{sweep_id: {state: count}} for all the sweeps in ONE grouped query."""
    out: dict[str, dict[str, int]] = {sid: {} for sid in sweep_ids}
    if not sweep_ids:
        return out
    rows = session.execute(
        select(Trial.sweep_id, Trial.state, func.count())
        .where(Trial.sweep_id.in_(list(sweep_ids)))
        .group_by(Trial.sweep_id, Trial.state)
    ).all()
    for sid, state, n in rows:
        out[sid][state] = int(n)
    return out


def best_trials(session: Session, sweeps: Sequence[Sweep], modes: dict[str, str]) -> dict[str, Trial]:
    """{sweep_id: best trial}: the stored best trial (set when a sweep finishes), else the best
    completed trial so far (lowest trial number on ties). One query for any number of sweeps: the
    live sweeps' best is ranked in the database (row_number per sweep, in the objective's order),
    a statement whose shape does not depend on the values (it was an OR of one condition per sweep,
    rebuilt and compiled on every request: most of a page's time)."""
    stored = {s.id: s.best_trial_id for s in sweeps if s.best_trial_id}
    live = {s.id for s in sweeps if not s.best_trial_id}
    conds = []
    if stored:
        conds.append(Trial.id.in_(list(stored.values())))
    if live:
        maximize = [sid for sid in live if modes.get(sid) == "max"]
        key = case((Trial.sweep_id.in_(maximize), -Trial.objective), else_=Trial.objective) if maximize else Trial.objective
        ranked = (
            select(Trial.id, func.row_number().over(partition_by=Trial.sweep_id, order_by=(key, Trial.number)).label("rank"))
            .where(Trial.sweep_id.in_(list(live)), Trial.state == TrialState.completed.value, Trial.objective.is_not(None))
            .subquery()
        )
        conds.append(Trial.id.in_(select(ranked.c.id).where(ranked.c.rank == 1)))
    if not conds:
        return {}

    def rank(t: Trial) -> tuple[float, int]:
        return (-t.objective if modes.get(t.sweep_id) == "max" else t.objective, t.number)

    out: dict[str, Trial] = {}
    for t in session.scalars(select(Trial).where(or_(*conds))).all():
        if t.sweep_id in stored:
            if stored[t.sweep_id] == t.id:
                out[t.sweep_id] = t
        elif t.sweep_id in live and t.state == TrialState.completed.value and t.objective is not None:
            # (a stored best id of another sweep can land here: keep the ranked one)
            if t.sweep_id not in out or rank(t) < rank(out[t.sweep_id]):
                out[t.sweep_id] = t
    return out


def _progress(planned: int, counts: dict[str, int]) -> ProgressOut:
    by_state = {s.value: counts.get(s.value, 0) for s in TrialState}
    return ProgressOut(
        planned=planned, **by_state, finished=sum(by_state[s] for s in FINISHED_TRIAL_STATES)
    )


def budgets(session: Session, sweeps: Sequence[Sweep], summaries: dict[str, SpecSummary]) -> dict[str, BudgetOut]:
    """{sweep_id: budget} for the compute-budget sweeps among these, in one query (none without)."""
    plans = budget_plans(session, [s for s in sweeps if summaries[s.id].has_budget])
    ids = [sid for sid, plan in plans.items() if plan is not None]
    rows = trial_uses(session, ids) if ids else {}
    out = {}
    for s in sweeps:
        if s.id in rows:
            active = s.state in ACTIVE_SWEEP_STATES
            running_for = (utcnow() - s.started_at).total_seconds() if active and s.started_at else None
            out[s.id] = BudgetOut(**account(plans[s.id], rows[s.id]).status(active=active, running_for=running_for))
    return out


def _best(trial: Trial | None) -> BestTrialOut | None:
    if trial is None:
        return None
    return BestTrialOut(trial_id=trial.id, number=trial.number, config=trial.config or {},
                        objective=trial.objective)


def _fields(sweep: Sweep) -> dict[str, Any]:
    return {
        "id": sweep.id, "name": sweep.name, "state": sweep.state, "created_at": sweep.created_at,
        "started_at": sweep.started_at, "finished_at": sweep.finished_at, "error": sweep.error,
        "ledger": sweep.ledger or {}, "fingerprint": sweep.fingerprint,
        # a value something else wrote reads as the default rather than failing the page
        "priority": sweep.priority if sweep.priority in PRIORITIES else "normal",
        "trial_limit": sweep.trial_limit, "waiting_for": sweep.waiting_for,
    }  # fmt: skip


def queue_positions(session: Session, sweeps: Sequence[Sweep]) -> dict[str, int]:
    """{sweep_id: place in the queue} for the queued sweeps among these: one query, and none when
    no sweep of the page is queued."""
    if not any(s.state == SweepState.queued.value for s in sweeps):
        return {}
    return repo.queue_positions(session)


def sweep_publics(session: Session, sweeps: Sequence[Sweep],
                  specs: dict[str, SpecSummary] | None = None) -> list[SweepPublic]:
    """Public views of a page of sweeps, in a fixed number of queries whatever the page size.
    ``specs``: their stored specs' summaries when the caller has them (else they come from the
    cache or one query: the sweeps' spec column need not be loaded). No spec is validated again."""
    specs = specs if specs is not None else summaries(session, sweeps)
    counts = trial_counts(session, [s.id for s in sweeps])
    best = best_trials(session, sweeps, {s.id: specs[s.id].objective.mode for s in sweeps})
    budget = budgets(session, sweeps, specs)
    queue = queue_positions(session, sweeps)

    def planned(s: Sweep) -> int:
        b = budget.get(s.id)
        return specs[s.id].planned if b is None else b.trials_launched + b.projected_trials

    return [
        SweepPublic(
            **_fields(s),
            objective=specs[s.id].objective,
            progress=_progress(planned(s), counts[s.id]),
            best=_best(best.get(s.id)),
            budget=budget.get(s.id),
            max_concurrent=specs[s.id].max_concurrent,
            running_trials=counts[s.id].get(TrialState.running.value, 0),
            queue_position=queue.get(s.id),
        )
        for s in sweeps
    ]


def sweep_public(session: Session, sweep: Sweep) -> SweepPublic:
    return sweep_publics(session, [sweep], {sweep.id: summary_of(sweep.spec)})[0]


def sweep_detail(session: Session, sweep: Sweep) -> SweepDetail:
    public = sweep_public(session, sweep)
    warm = sweep.warm_start if isinstance(sweep.warm_start, dict) and {"mode", "message"} <= set(sweep.warm_start) else None
    return SweepDetail(**public.model_dump(), spec=sweep.spec if isinstance(sweep.spec, dict) else {},
                       warm_start=warm, extensions=sweep.extensions or 0, optuna_study_name=sweep.optuna_study_name)
