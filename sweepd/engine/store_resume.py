"""Resume from the store: a sweep goes on from what its database holds when Ray Tune's experiment
cannot be restored.

A resumed sweep normally restores its Tune experiment (engine/tuner.py, ``Tuner.restore``). When
that folder is gone (a lost SWEEPD_HOME, the driver on another machine) or never came with the
database (restored from a backup; the frozen databases of tests/data/frozen/), and Ray's pickles
would not survive an upgrade of Ray or sweepd anyway, the store still holds everything that
counts. The sweep then goes on as a new Tune run on the same study, the way an extension does
(service/extend.py; ``first_number`` in tuner.py):

- finished trials stay as they are: never rerun, their numbers never suggested again;
- a trial that was running is run again from scratch under its own number and params, as its
  next attempt (the recorder counts attempts; the new attempt's points supersede the old ones,
  store/metric_points.py). Its Optuna trial, left RUNNING by the crash, is closed as FAIL with the
  reason, and its params are enqueued in the study with its number (``NUMBER_ATTR``), which
  ``SweepOptunaSearch`` keeps: the new run's first suggestions are these reruns;
- the rest of the planned trials are suggested by the same study, numbered on from the last;
- the pruner's rung state is rebuilt from the store (``rebuild_pruner``).

The rung state comes from the pruner's stored decisions, not from replaying metric points: each
decision holds exactly the inputs the pruner recorded at its rung (``Decision.values``, its
smoothing window's snapshot), whatever order the trials' reports came in, while the metric points
lack the interim evaluations a signal reading the objective needs. Only finished trials' decisions
count; a rerun trial is judged afresh at every rung (its first attempt's decisions stay in the
store's events, as history).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from sweepd.engine import warm_start
from sweepd.protocol import FINISHED_TRIAL_STATES, TrialState
from sweepd.store import repo
from sweepd.store.db import make_engine, session_scope
from sweepd.store.models import Event

log = logging.getLogger(__name__)

NUMBER_ATTR = warm_start.NUMBER_ATTR  # sweepd.engine.search.NUMBER_ATTR


@dataclass
class StoreResume:
    """What the store holds of a sweep whose Tune experiment is gone, and how the new run goes on."""

    sweep_id: str
    last: int  # the highest trial number held
    finished: list[int]  # kept as they are
    reruns: dict[int, dict[str, Any]] = field(default_factory=dict)  # number -> params (stored config)

    @property
    def first_number(self) -> int:
        """The new Tune run's ``first_number``: the searcher counts the reruns first (each keeps its
        own number) and numbers new trials on from ``last + 1``."""
        return self.last + 1 - len(self.reruns)

    def describe(self) -> str:
        again = ", ".join(f"trial {n}" for n in self.reruns)
        return (f"resumed from the store (no Ray Tune experiment to restore): {len(self.finished)} finished "
                f"trial{'s' if len(self.finished) != 1 else ''} kept"
                + (f"; {again} run again from the start" if again else "")
                + f"; new trials numbered from {self.last + 1}")


def plan(db_url: str, sweep_id: str, first_number: int) -> StoreResume | None:
    """The store's view of a sweep about to start a Tune run numbered from ``first_number``
    (an extension's) with no experiment to restore; None when the store holds nothing that run
    would clash with: no trial numbered from ``first_number`` on, and none left unfinished."""
    engine = make_engine(db_url)
    try:
        with session_scope(engine) as s:
            trials = repo.list_trials(s, sweep_id)
    finally:
        engine.dispose()
    unfinished = [t for t in trials if t.state not in FINISHED_TRIAL_STATES]
    if not unfinished and not any(t.number >= first_number for t in trials):
        return None
    return StoreResume(sweep_id=sweep_id, last=max(t.number for t in trials),
                       finished=[t.number for t in trials if t.state in FINISHED_TRIAL_STATES],
                       reruns={t.number: dict(t.config or {}) for t in unfinished})


def apply(resume: StoreResume, spec, *, db_url: str, study_name: str, scheduler) -> None:
    """Ready the study and the pruner for the new run (before its first suggestion): close the
    reruns' orphaned Optuna trials, enqueue their params under their numbers, rebuild the rungs."""
    import optuna

    from sweepd.engine.search import close_orphaned_trials, optuna_storage

    storage = optuna_storage(db_url)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
        params = {n: _params_of(study, n, config, spec) for n, config in resume.reruns.items()}
        close_orphaned_trials(db_url, study_name, reasons={
            n: f"interrupted: the sweep's driver died while it ran; run again as trial {n}'s next attempt"
            for n in resume.reruns})
        for number, values in params.items():
            enqueue_rerun(study, number, values)
    finally:
        storage.remove_session()
    rebuilt = rebuild_pruner(scheduler, db_url, resume.sweep_id, resume.finished)
    message = resume.describe() + (f"; the pruner's rungs rebuilt from {rebuilt} decisions" if rebuilt is not None
                                   else "")
    log.info("sweep %s: %s", resume.sweep_id, message)
    engine = make_engine(db_url)
    try:
        with session_scope(engine) as s:
            repo.add_event(s, resume.sweep_id, "info", message, payload={
                "resumed_from_store": {"finished": resume.finished, "reruns": sorted(resume.reruns),
                                       "first_new_number": resume.last + 1, "decisions": rebuilt}})
    finally:
        engine.dispose()


# ---- the study ----------------------------------------------------------------------------------


def _params_of(study, number: int, config: Mapping[str, Any], spec) -> dict[str, Any]:
    """Trial ``number``'s params: its stored config's searched keys (what its last attempt ran
    with), else, where the store lacks them, its latest Optuna trial's; none at all: the study
    suggests new ones under its number."""
    from optuna.trial import TrialState as OptunaState

    params, dropped = warm_start.fit_params(config, warm_start.distributions(spec))
    if params and not dropped:
        return params
    mine = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(NUMBER_ATTR) == number
            and t.state != OptunaState.WAITING]
    return dict(mine[-1].params) if mine else params


def enqueue_rerun(study, number: int, params: Mapping[str, Any]) -> bool:
    """Enqueue trial ``number``'s params under its number (once: a WAITING trial with that number,
    left by an earlier resume that died before asking it, is used as it is). True when added."""
    from optuna.trial import TrialState as OptunaState

    waiting = study.get_trials(deepcopy=False, states=(OptunaState.WAITING,))
    if any(t.user_attrs.get(NUMBER_ATTR) == number for t in waiting):
        return False
    study.enqueue_trial(dict(params), user_attrs={NUMBER_ATTR: number})
    return True


# ---- the pruner ---------------------------------------------------------------------------------


def rung_state(db_url: str, sweep_id: str, finished: list[int]) -> tuple[list[dict], dict, list, int]:
    """(rungs, finals, stopped, decisions used) of the finished trials, as a rung pruner's
    ``state_dict`` holds them: each trial's inputs at each rung from its latest decision there, the
    completed trials' objectives, the trials the pruner stopped."""
    keep = set(finished)
    engine = make_engine(db_url)
    try:
        with session_scope(engine) as s:
            events = s.scalars(select(Event).where(Event.sweep_id == sweep_id, Event.kind == "decision")
                               .order_by(Event.id)).all()
            trials = repo.list_trials(s, sweep_id, state=[TrialState.completed])
            finals = {str(t.number): float(t.objective) for t in trials
                      if t.number in keep and t.objective is not None}
    finally:
        engine.dispose()
    latest: dict[tuple[int, int], dict] = {}  # (rung, number) -> the decision; in arrival order
    for event in events:
        decision = event.payload or {}
        number = decision.get("trial_number")
        if number in keep and isinstance(decision.get("rung"), int):
            latest[(decision["rung"], number)] = decision
    rungs: list[dict] = [{} for _ in range(1 + max((r for r, _ in latest), default=-1))]
    for (rung, number), decision in latest.items():
        rungs[rung][str(number)] = dict(decision.get("values") or {})
    stopped = sorted({str(n) for (_, n), d in latest.items() if d.get("action") == "stop"})
    for trial_id in stopped:
        finals.pop(trial_id, None)  # a stopped trial's value is partial (RungPruner.on_trial_complete)
    return rungs, finals, stopped, len(latest)


def rebuild_pruner(scheduler, db_url: str, sweep_id: str, finished: list[int]) -> int | None:
    """Give the scheduler's pruner the rung state of the sweep's finished trials, from the store,
    keeping what else its state holds (earlier sweeps' history, from the warm start or the sweep's
    state file), and write it to the scheduler's state file, which the scheduler reads on first
    use. Returns the decisions it was rebuilt from; None for a pruner without rungs."""
    from sweepd.pruners.rungs import RungPruner

    pruner = scheduler.pruner
    if not isinstance(pruner, RungPruner):
        return None
    path = scheduler.state_path
    if path is not None and path.exists():
        try:
            scheduler.restore(str(path))  # history and learned weights of earlier segments
        except (ValueError, KeyError) as err:
            log.warning("sweep %s: pruner state %s not used (%s); rebuilt from the store alone", sweep_id, path, err)
    rungs, finals, stopped, used = rung_state(db_url, sweep_id, finished)
    state = pruner.state_dict()
    state.update(rungs=rungs, finals=finals, stopped=stopped, windows={})
    pruner.load_state_dict(state)
    if path is not None:
        scheduler.save(str(path))
    return used
