"""Warm start from history: a new sweep's Optuna study and pruner start from an earlier sweep.

``search.warm_start`` says where from:

- ``previous`` (the default): the most recently finished succeeded sweep with the same name and
  fingerprint (model, data files' content, objective: sweepd/engine/fingerprint.py); none found
  is a cold start, said so in an event;
- a sweep id: that sweep (it must exist and have the same objective; checked when the sweep is
  created, ``check_reference``);
- ``none``: a cold start.

On a fresh start (never on a resume; see ``tuner.run_sweep``) ``warm_start``

1. adds the earlier sweep's own finished trials to the new study with ``study.add_trials``
   before the first suggestion: COMPLETE ones with their objective, PRUNED ones with their
   intermediate values. The trials keep only the parameters inside the new space, with the new
   space's distributions; a parameter whose key is not searched now, or whose value lies
   outside the new range or choices, is dropped, and a trial left with none is skipped. Each
   seeded trial carries the user attributes ``sweepd_seeded_from`` (the sweep) and
   ``sweepd_source_number``; the study carries ``sweepd_warm_started_from``. Adding is
   idempotent: a trial already seeded from that sweep (same source number) is not added again.
   Grid search runs its own grid: nothing is added to its study.
2. gives the earlier sweep's curves (every optimizer step's report, from the store) and
   objectives to the pruner (``pruner.add_history``), for a pruner that learns from history;
3. records the provenance on the sweep (``warm_started_from`` and ``warm_start``) and an event.

Extending a sweep (sweepd/service/extend.py) keeps its study; ``prepare_study`` makes sure the
study still fits the (maybe narrowed) space. Optuna refuses a categorical parameter whose
choices changed within one study, so a space that no longer fits the study continues in a new
study ``sweepd-<id>-x<k>``, seeded with every finished trial of the old one that fits (the same
filtering as a warm start), and the sweep's ``optuna_study_name`` follows it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sweepd.spec.errors import Problem
from sweepd.store import repo
from sweepd.store.db import make_engine, session_scope

log = logging.getLogger(__name__)

SEEDED_FROM_ATTR = "sweepd_seeded_from"  # on a seeded Optuna trial: the sweep it came from
SOURCE_NUMBER_ATTR = "sweepd_source_number"  # ... and its number there
WARM_STARTED_ATTR = "sweepd_warm_started_from"  # on the study: the sweep that seeded it
COPIED_FROM_ATTR = "sweepd_copied_from"  # on a study that continues another (a changed space)
NUMBER_ATTR = "sweepd_number"  # sweepd.engine.search.NUMBER_ATTR (not imported: that pulls in Ray)


# ---- the space --------------------------------------------------------------------------------


def distributions(spec) -> dict[str, Any]:
    """The spec's searched keys as Optuna distributions, exactly as Ray's OptunaSearch converts
    ``spec.to_tune_space()`` (tune.randint(lo, hi + 1) is IntDistribution(lo, hi))."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for key, (_, d) in spec.domains.items():
        if d.kind == "choice":
            out[key] = CategoricalDistribution(list(d.values))
        elif d.kind == "uniform":
            out[key] = FloatDistribution(d.low, d.high)
        elif d.kind == "loguniform":
            out[key] = FloatDistribution(d.low, d.high, log=True)
        elif d.kind == "int":
            out[key] = IntDistribution(d.low, d.high)
    return out


def fit_params(params: Mapping[str, Any], dists: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(the params that lie inside ``dists``, the keys dropped): a key not searched now, or a
    value outside its range or choices, is dropped."""
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in params.items():
        dist = dists.get(key)
        try:
            inside = dist is not None and dist._contains(dist.to_internal_repr(value))
        except (ValueError, TypeError):
            inside = False
        if inside:
            kept[key] = dist.to_external_repr(dist.to_internal_repr(value))
        else:
            dropped.append(key)
    return kept, dropped


# ---- seeding a study --------------------------------------------------------------------------


@dataclass
class Seeded:
    """What ``seed_trials`` did."""

    added: int = 0
    already: int = 0  # seeded before (a fresh start again after a crash)
    skipped: int = 0  # no parameter left inside the new space
    dropped: dict[str, int] = field(default_factory=dict)  # key -> trials that lost it


def finished_trials(study, *, own_only: bool) -> list:
    """The study's COMPLETE (with a value) and PRUNED trials; ``own_only``: only the sweep's own
    (numbered by its searcher, not seeded from another sweep)."""
    from optuna.trial import TrialState

    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if t.state == TrialState.COMPLETE and t.value is None:
            continue
        if own_only and (NUMBER_ATTR not in t.user_attrs or SEEDED_FROM_ATTR in t.user_attrs):
            continue
        out.append(t)
    return out


def seed_trials(study, trials: list, dists: Mapping[str, Any], *, source: str | None) -> Seeded:
    """Add ``trials`` (FrozenTrials of another study) to ``study``, each with only its params
    inside ``dists`` and those distributions. ``source``: the sweep they come from (set as
    SEEDED_FROM_ATTR); None keeps each trial's own user attributes (a study continued after a
    change of space). Idempotent: a trial whose (origin, number) the study holds is skipped."""
    from optuna.trial import TrialState, create_trial

    def held(t) -> tuple:  # where a trial comes from: (sweep or None for its own, number there)
        attrs = t.user_attrs
        if SEEDED_FROM_ATTR in attrs:
            return (attrs[SEEDED_FROM_ATTR], attrs.get(SOURCE_NUMBER_ATTR))
        return (None, attrs.get(NUMBER_ATTR))

    origin = (lambda t: (source, t.user_attrs.get(NUMBER_ATTR))) if source is not None else held
    have = {held(t) for t in study.get_trials(deepcopy=False)}
    report = Seeded()
    new = []
    for t in trials:
        if origin(t) in have and origin(t)[1] is not None:
            report.already += 1
            continue
        params, dropped = fit_params(t.params, dists)
        for key in dropped:
            report.dropped[key] = report.dropped.get(key, 0) + 1
        if not params:
            report.skipped += 1
            continue
        if source is not None:
            attrs = {SEEDED_FROM_ATTR: source, SOURCE_NUMBER_ATTR: t.user_attrs.get(NUMBER_ATTR)}
        else:
            attrs = dict(t.user_attrs)
        complete = t.state == TrialState.COMPLETE
        new.append(create_trial(
            state=t.state, value=t.value if complete else None, params=params,
            distributions={k: dists[k] for k in params}, user_attrs=attrs,
            intermediate_values=dict(t.intermediate_values) or None,
        ))
    if new:
        study.add_trials(new)
    report.added = len(new)
    return report


def _study(storage, name: str, mode: str, *, create: bool):
    import optuna

    direction = "minimize" if mode == "min" else "maximize"
    if create:
        return optuna.create_study(study_name=name, storage=storage, direction=direction, load_if_exists=True)
    return optuna.load_study(study_name=name, storage=storage)


# ---- resolving search.warm_start --------------------------------------------------------------


def _objective(doc: Any) -> tuple[str | None, str | None]:
    obj = doc.get("objective") if isinstance(doc, Mapping) else None
    return (obj.get("metric"), obj.get("mode")) if isinstance(obj, Mapping) else (None, None)


def check_reference(session, spec) -> list[Problem]:
    """Problems with an explicit ``search.warm_start: <sweep id>``: the sweep must exist and
    optimise the same objective (``previous`` and ``none`` are always fine)."""
    ref = spec.search.warm_start
    if ref in ("previous", "none"):
        return []
    source = repo.get_sweep(session, ref)
    if source is None:
        return [("search.warm_start", f"no sweep {ref!r} to warm-start from (use previous, none or an existing sweep id)")]
    metric, mode = _objective(source.spec)
    if (metric, mode) != (spec.objective.metric, spec.objective.mode):
        return [("search.warm_start", f"sweep {ref!r} optimises {metric} ({mode}), this sweep "
                                      f"{spec.objective.metric} ({spec.objective.mode}): warm-start only "
                                      f"from a sweep with the same objective")]
    return []


def resolve(session, spec, sweep) -> tuple[str | None, str]:
    """(the sweep to start from or None, why): ``search.warm_start`` resolved for ``sweep``."""
    ref = spec.search.warm_start
    if ref == "none":
        return None, "warm start off (search.warm_start: none): cold start"
    if ref == "previous":
        source = repo.previous_sweep(session, name=sweep.name, fingerprint=sweep.fingerprint, exclude=sweep.id)
        if source is None:
            fp = f" {sweep.fingerprint[:12]}" if sweep.fingerprint else ""
            return None, (f"no earlier succeeded sweep named {sweep.name!r} with the same fingerprint{fp} "
                          f"(model, data, objective): cold start")
        return source.id, f"the previous succeeded sweep named {sweep.name!r} with the same fingerprint"
    problems = check_reference(session, spec)
    if problems:
        return None, f"{problems[0][1]}: cold start"
    if ref == sweep.id:
        return None, "search.warm_start names this very sweep: cold start"
    return ref, f"sweep {ref} (search.warm_start)"


def curves_of(session, sweep_id: str) -> list[dict[str, Any]]:
    """The sweep's finished trials as the pruner's history: completed ones with their objective,
    stopped ones with None; each with its curve (every step's report, in order)."""
    out = []
    for t in repo.list_trials(session, sweep_id, state=["completed", "stopped"]):
        objective = t.objective if t.state == "completed" else None
        if t.state == "completed" and objective is None:
            continue
        curve = [p.to_dict() for p in repo.read_metrics(session, t.id)]
        if curve:
            out.append({"curve": curve, "objective": objective})
    return out


def give_history(pruner: Any, source: str, trials: list[dict[str, Any]]) -> int | None:
    """Hand ``trials`` to the pruner: how many it took, or None when it takes none (no
    ``add_history``, or a signal that ignores history: it answers 0)."""
    add = getattr(pruner, "add_history", None)
    if add is None or not trials:
        return None if add is None else 0
    taken = add(source, trials)
    if taken is None:  # an add_history that does not say: it took them all
        return len(trials)
    return int(taken) or None


def warm_start(spec, *, sweep_id: str, db_url: str, study_name: str, pruner: Any = None) -> dict[str, Any]:
    """Seed the study and the pruner of a sweep starting afresh, as ``search.warm_start`` says;
    record and return the provenance. A failure is recorded as an error event and the sweep
    starts cold: history is a head start, never a reason not to run."""
    try:
        return _warm_start(spec, sweep_id=sweep_id, db_url=db_url, study_name=study_name, pruner=pruner)
    except Exception as err:  # noqa: BLE001
        log.exception("sweep %s: warm start failed", sweep_id)
        details = {"mode": spec.search.warm_start, "source": None, "trials_added": 0, "curves": 0,
                   "message": f"warm start failed ({type(err).__name__}: {err}): cold start"}
        try:
            engine = make_engine(db_url)
            with session_scope(engine) as s:
                repo.add_event(s, sweep_id, "error", details["message"], payload={"warm_start": details})
            engine.dispose()
        except Exception:  # noqa: BLE001 - the store is down too: the log has it
            pass
        return details


def _warm_start(spec, *, sweep_id: str, db_url: str, study_name: str, pruner: Any = None) -> dict[str, Any]:
    from sweepd.engine.search import optuna_storage

    engine = make_engine(db_url)
    storage = optuna_storage(db_url)
    try:
        study = _study(storage, study_name, spec.objective.mode, create=True)
        with session_scope(engine) as s:
            sweep = repo.get_sweep(s, sweep_id)
            recorded = sweep.warm_start is not None
            before = study.user_attrs.get(WARM_STARTED_ATTR)
            if before:  # seeded by an earlier start of this sweep: the same source again
                source, why = before, f"sweep {before}, as on this sweep's first start"
            else:
                source, why = resolve(s, spec, sweep)
            details: dict[str, Any] = {"mode": spec.search.warm_start, "source": source, "why": why}
            if source is None:
                details.update(trials_added=0, curves=0, message=f"warm start: none; {why}")
            else:
                details.update(_seed_from(s, spec, study, source, pruner))
            if not recorded:
                repo.record_warm_start(s, sweep_id, source=source, details=details)
                repo.add_event(s, sweep_id, "info", details["message"], payload={"warm_start": details})
        log.info("sweep %s: %s", sweep_id, details["message"])
        return details
    finally:
        storage.remove_session()
        engine.dispose()


def _seed_from(session, spec, study, source: str, pruner: Any) -> dict[str, Any]:
    sweep = repo.get_sweep(session, source)
    out: dict[str, Any] = {}
    if spec.search.algorithm == "grid":
        seeded, note = Seeded(), "grid search runs its own grid: no trials added to the study"
    else:
        try:
            name = (sweep.optuna_study_name if sweep is not None else None) or f"sweepd-{source}"
            src = _study(study._storage, name, spec.objective.mode, create=False)
            src_trials = finished_trials(src, own_only=True)
        except KeyError:
            src_trials = []
        seeded = seed_trials(study, src_trials, distributions(spec), source=source)
        note = None
        study.set_user_attr(WARM_STARTED_ATTR, source)
    history = curves_of(session, source)
    given = give_history(pruner, source, history) if pruner is not None else None
    added = seeded.added + seeded.already
    parts = [f"warm start: {added} trial{'s' if added != 1 else ''} from sweep {source} added to the study"
             if note is None else f"warm start from sweep {source}: {note}"]
    if seeded.skipped:
        parts.append(f"{seeded.skipped} skipped (no parameter inside this space)")
    if seeded.dropped:
        parts.append("dropped outside this space: " + ", ".join(f"{k} ({n})" for k, n in sorted(seeded.dropped.items())))
    if given is not None or not history:
        parts.append(f"{given or 0} curve{'s' if given != 1 else ''} to the pruner")
    else:
        signal = getattr(pruner, "signal_name", None)
        kind = spec.pruner.type + (f" on {signal}" if signal and spec.pruner.type != "none" else "")
        parts.append(f"the pruner ({kind}) takes no history: {len(history)} curves not used")
    out.update(trials_added=added, trials_skipped=seeded.skipped, params_dropped=seeded.dropped,
               curves=given or 0, curves_available=len(history), message="; ".join(parts))
    summary = getattr(pruner, "history_summary", None)
    if given is not None and callable(summary):
        try:
            out["pruner_history"] = summary()
        except Exception:  # noqa: BLE001 - a summary is for people; never fail the sweep on it
            log.warning("history_summary failed", exc_info=True)
    return out


# ---- extending: the study goes on -------------------------------------------------------------


def study_fits(study, dists: Mapping[str, Any]) -> str | None:
    """None when every trial's distributions agree with ``dists`` (Optuna can go on sampling the
    new space in this study), else the first key that does not, with why."""
    from optuna.distributions import check_distribution_compatibility

    for t in study.get_trials(deepcopy=False):
        for key, old in t.distributions.items():
            new = dists.get(key)
            if new is None:
                continue
            try:
                check_distribution_compatibility(old, new)
            except ValueError as err:
                return f"{key}: {err}"
    return None


def prepare_study(spec, *, sweep_id: str, db_url: str, segment: int, study_name: str) -> str:
    """The study segment ``segment`` (> 0: an extension) of the sweep continues: the same one
    when the spec's space still fits it, else ``sweepd-<id>-x<segment>``, seeded with the old
    study's finished trials that fit (the sweep's study name is updated, with an event)."""
    if segment <= 0:
        return study_name
    from sweepd.engine.search import optuna_storage

    storage = optuna_storage(db_url)
    engine = make_engine(db_url)
    try:
        dists = distributions(spec)
        study = _study(storage, study_name, spec.objective.mode, create=True)
        if study.user_attrs.get(COPIED_FROM_ATTR) is not None and study_name.endswith(f"-x{segment}"):
            return study_name  # this segment's own copy, made on an earlier start
        why = study_fits(study, dists)
        if why is None:
            return study_name
        new_name = f"sweepd-{sweep_id}-x{segment}"
        target = _study(storage, new_name, spec.objective.mode, create=True)
        seeded = seed_trials(target, finished_trials(study, own_only=False), dists, source=None)
        target.set_user_attr(COPIED_FROM_ATTR, study_name)
        with session_scope(engine) as s:
            repo.set_study_name(s, sweep_id, new_name)
            repo.add_event(s, sweep_id, "info",
                           f"the narrowed space does not fit study {study_name} ({why}): continuing in study "
                           f"{new_name} with its {seeded.added + seeded.already} finished trials that fit"
                           + (f" ({seeded.skipped} skipped)" if seeded.skipped else ""),
                           payload={"study": new_name, "copied_from": study_name, "trials": seeded.added + seeded.already,
                                    "skipped": seeded.skipped, "params_dropped": seeded.dropped})
        return new_name
    finally:
        storage.remove_session()
        engine.dispose()
