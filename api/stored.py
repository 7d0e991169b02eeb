"""What the read views need from a sweep's stored spec, taken from the stored document as it is.

The spec was validated when it was stored (POST /sweeps, extend); a read never validates it again
(#15: every GET of a sweep, and every row of the list, used to rebuild the whole ``SweepSpec``).
A read needs four things from it: the objective, the trial count the spec plans, whether it
has a compute budget, and how many trials it runs at once. ``summaries`` gets them with the database's JSON operators, so a page of
sweeps never loads whole specs (a spec may be a megabyte), and keeps them per sweep and extension
(a stored spec changes only when its sweep is extended); ``summary_of`` reads them from a document
already loaded. A document that something else wrote is read as far as it makes sense.

The one exception is the compute budget's account: its costs per batch size come from the spec's
budgets and space (and, for an epochs budget, the train files' lengths). That plan is built from
the stored spec once per process, sweep and extension (``budget_plans``), not on every read.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.schemas import ObjectiveOut
from sweepd.engine.budget import BudgetPlan
from sweepd.spec import METRICS, SweepSpec
from sweepd.store.models import Sweep

log = logging.getLogger("sweepd.api")

CACHE_SIZE = 20_000  # sweeps whose summary and plan are kept (a few hundred bytes each)


@dataclass(frozen=True)
class SpecSummary:
    objective: ObjectiveOut
    planned: int  # trials the spec plans: num_trials, capped by the grid's size for grid search
    has_budget: bool  # search.compute_budget is set
    max_concurrent: int = 1  # search.max_concurrent: trials at once (the share shown without a limit)


def _objective(raw: Any) -> ObjectiveOut:
    raw = raw if isinstance(raw, dict) else {}
    metric = raw.get("metric") if isinstance(raw.get("metric"), str) else "eval_loss"
    mode = raw.get("mode") if raw.get("mode") in ("min", "max") else METRICS.get(metric, "min")
    return ObjectiveOut(metric=metric, mode=mode)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _grid_size(space: Any) -> int | None:
    """Points of a grid over ``space`` (the product of its choice lists), or None when it is not a
    grid the engine could run (then validation refused it; the plan is num_trials)."""
    if not isinstance(space, dict):
        return None
    sizes = []
    for domain in space.values():
        if isinstance(domain, dict):  # a domain; anything else is a fixed value
            choice = domain.get("choice") if len(domain) == 1 else None
            if not isinstance(choice, list):
                return None
            sizes.append(len(choice))
    return math.prod(sizes)


def _summary(objective: Any, algorithm: Any, num_trials: Any, compute_budget: Any, space: Any = None,
             max_concurrent: Any = None) -> SpecSummary:
    planned = _int(num_trials)
    if algorithm == "grid":  # as SweepSpec.planned_trials
        size = _grid_size(space)
        if size is not None:
            planned = min(planned, size)
    return SpecSummary(objective=_objective(objective), planned=planned, has_budget=compute_budget is not None,
                       max_concurrent=_int(max_concurrent) or 1)


def summary_of(doc: Any) -> SpecSummary:
    """The summary of a stored spec document already loaded."""
    doc = doc if isinstance(doc, dict) else {}
    search = doc.get("search") if isinstance(doc.get("search"), dict) else {}
    return _summary(doc.get("objective"), search.get("algorithm"), search.get("num_trials"),
                    search.get("compute_budget"), search.get("space"), search.get("max_concurrent"))


def summaries(session: Session, sweeps: Sequence[Sweep]) -> dict[str, SpecSummary]:
    """{sweep_id: summary}: from the cache, else from the stored documents' few fields in one
    query for all the misses (a second one, for the search spaces of grid sweeps only). The
    database still parses each document it extracts from (PostgreSQL's ``json`` type is text: a
    megabyte spec costs it ~15 ms), so summaries are kept, like the budget plans, per sweep and
    extension."""
    out, missing = _cached(_summaries, sweeps)
    if not missing:
        return out
    search = ("search",)
    rows = session.execute(
        select(Sweep.id, Sweep.spec["objective"], Sweep.spec[search + ("algorithm",)],
               Sweep.spec[search + ("num_trials",)], Sweep.spec[search + ("compute_budget",)],
               Sweep.spec[search + ("max_concurrent",)])
        .where(Sweep.id.in_(list(missing)))
    ).all()
    grids = [sid for sid, _, algorithm, _, _, _ in rows if algorithm == "grid"]
    spaces: dict[str, Any] = {}
    if grids:
        spaces = dict(session.execute(select(Sweep.id, Sweep.spec[search + ("space",)])
                                      .where(Sweep.id.in_(grids))).all())
    for sid, obj, algorithm, n, budget, concurrent in rows:
        out[sid] = _keep(_summaries, missing[sid], _summary(obj, algorithm, n, budget, spaces.get(sid), concurrent))
    return out


# ---- what is kept per sweep and extension ------------------------------------------------------

CacheKey = tuple[str, datetime | None, int]
_summaries: OrderedDict[CacheKey, SpecSummary] = OrderedDict()
_plans: OrderedDict[CacheKey, BudgetPlan | None] = OrderedDict()
_lock = threading.Lock()


def _key(sweep: Sweep) -> CacheKey:
    # a stored spec changes only when the sweep is extended (sweep_history.extend_sweep counts it);
    # created_at tells apart two databases' sweeps with one id (tests, benchmarks)
    return (sweep.id, sweep.created_at, sweep.extensions or 0)


def _cached(cache: OrderedDict, sweeps: Sequence[Sweep]) -> tuple[dict[str, Any], dict[str, Sweep]]:
    """(what ``cache`` holds for these sweeps, by id; the sweeps it misses, by id)."""
    found: dict[str, Any] = {}
    missing: dict[str, Sweep] = {}
    with _lock:
        for s in sweeps:
            key = _key(s)
            if key in cache:
                cache.move_to_end(key)
                found[s.id] = cache[key]
            else:
                missing[s.id] = s
    return found, missing


def _keep(cache: OrderedDict, sweep: Sweep, value: Any) -> Any:
    with _lock:
        cache[_key(sweep)] = value
        while len(cache) > CACHE_SIZE:
            cache.popitem(last=False)
    return value


def budget_plans(session: Session, sweeps: Sequence[Sweep]) -> dict[str, BudgetPlan | None]:
    """{sweep_id: its budget plan (None when its stored spec cannot give one)} for these
    compute-budget sweeps: from the cache, else built from the stored spec (loaded in one query for
    all the misses) and kept."""
    out, missing = _cached(_plans, sweeps)
    if not missing:
        return out
    docs = dict(session.execute(select(Sweep.id, Sweep.spec).where(Sweep.id.in_(list(missing)))).all())
    for sid, sweep in missing.items():
        try:
            plan = BudgetPlan.of(SweepSpec.from_stored(docs.get(sid)))
        except Exception:  # noqa: BLE001 - a document written by something else: no account, never a 500
            log.warning("sweep %s: no budget plan from its stored spec", sid, exc_info=True)
            plan = None
        out[sid] = _keep(_plans, sweep, plan)
    return out
