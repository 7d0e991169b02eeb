"""Optuna under Ray Tune, with the study kept in sweepd's own database (optuna-dashboard opens it).

Ray's OptunaSearch expects the objective in every result and would record a stopped trial with its
last partial value. Ours reports the training loss at samples-seen points as the intermediate
value and leaves the objective to the final result, so a pruned trial is PRUNED with its curve.
Not every point: one database write per reported step was a third of the driver's time at 1,000
trials (benchmarks/README.md). The study gets a trial's first point, then at most one every
INTERMEDIATE_EVERY_S, and always its last before it is told (TPE ranks a PRUNED trial by its
last value); the store keeps every point and draws the curves.
"Finished" means the result carries the trainer's final marker; anything else was stopped.

It also numbers the trials it suggests (1, 2, 3 ... under NUMBER_KEY in the config, and as the
Optuna trial's user attribute NUMBER_ATTR): the number is saved with the searcher's state, so it is
stable across a resume and names the trial in the store. After a crash a trial may be finished in
Optuna's storage yet be replayed by Tune; such updates are ignored rather than allowed to fail the
sweep. And when the searcher's saved state is older than the crash, a number is suggested a second
time, as a new Optuna trial, while the trainable replays the stored result of the first (marked
REPLAYED_KEY): that new trial is told FAIL, so the study holds each sweep trial once and TPE never
learns a result under params that did not produce it.

A compute-budget sweep (``search.compute_budget``) gives the searcher a ``BudgetGate``
(engine/budget.py): before each suggestion it asks the store whether another trial's full cost
fits what is left, and suggests nothing (waits) or says ``Searcher.FINISHED`` when it does not.
Under `sweepd serve` a ``ShareGate`` (engine/share_gate.py) likewise holds suggestions back while
the sweep runs as many trials as the supervisor's fair share of the cluster grants it.
Likewise a ``failure_gate`` (recorder.SameFailureStopper): once the sweep's first max_concurrent
trials all failed with the same message, it says ``Searcher.FINISHED``.

The study's storage (``optuna_storage``) retries its database calls through a transient outage
(``RetryingRDBStorage``; sweepd/store/retry.py), like every other store call of the driver.
"""

from __future__ import annotations

import functools
import time

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from sweepd.engine.budget import FINISHED, WAIT, BudgetGate
from sweepd.engine.share_gate import ShareGate
from sweepd.protocol import FINAL_MARKER, NUMBER_KEY, REPLAYED_KEY
from sweepd.store.db import SQLITE_BUSY_TIMEOUT_MS, use_store_sync
from sweepd.store.retry import call_with_retry

NUMBER_ATTR = "sweepd_number"  # the sweep's trial number, on each Optuna trial
INTERMEDIATE_EVERY_S = 5.0  # at most one intermediate value a trial this often (see the docstring)


class SweepOptunaSearch(OptunaSearch):
    def __init__(self, *args, intermediate_key: str = "loss", time_attr: str = "samples",
                 budget: BudgetGate | None = None, first_number: int = 1, failure_gate=None,
                 share: ShareGate | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._intermediate_key = intermediate_key
        self._time_attr = time_attr
        self._numbered = first_number - 1  # an extended sweep's new Tune run numbers on from its last trial
        self._budget = budget
        self._failure_gate = failure_gate  # recorder.SameFailureStopper: the first trials all failed alike
        self._share = share  # the running-trial limit the service grants the sweep (engine/share_gate.py)
        self._launched: dict[str, tuple[int, dict]] = {}  # trial id -> (number, params)

    def running_trials(self) -> dict[int, dict]:
        """The trials suggested and not ended yet: {number: params}."""
        return {n: params for tid, (n, params) in self._launched.items() if tid not in self._completed_trials}

    def suggest(self, trial_id: str):
        if (getattr(self, "_failure_gate", None) is not None and trial_id not in self._ot_trials
                and self._failure_gate.finished()):
            return Searcher.FINISHED
        if (getattr(self, "_share", None) is not None and trial_id not in self._ot_trials
                and not self._share.allows(len(self.running_trials()))):
            return None  # over its share of the cluster: ask again later (a slot frees, or the share grows)
        if self._budget is not None and trial_id not in self._ot_trials:
            verdict = self._budget.verdict(self.running_trials())
            if verdict == FINISHED:
                return Searcher.FINISHED
            if verdict == WAIT:
                return None
        config = super().suggest(trial_id)
        if isinstance(config, dict):
            self._numbered += 1
            # a trial run again after a resume from the store comes enqueued under its own number
            # (engine/store_resume.py); it keeps it, and takes one of the run's places all the same
            number = self._ot_trials[trial_id].user_attrs.get(NUMBER_ATTR, self._numbered)
            self._launched[trial_id] = (number, config)
            config = {**config, NUMBER_KEY: number}
            self._ot_trials[trial_id].set_user_attr(NUMBER_ATTR, number)
        return config

    def _finished_in_storage(self, trial_id: str) -> bool:
        ot_trial = self._ot_trials[trial_id]
        return self._ot_study._storage.get_trial(ot_trial._trial_id).state.is_finished()

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self._budget is not None:
            self._budget.touch()
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        value, at = result.get(self._intermediate_key), result.get(self._time_attr)
        if value is not None and at is not None:
            self._unreported()[trial_id] = (float(value), int(at))
            if time.monotonic() - self._reported_at().get(trial_id, -float("inf")) >= INTERMEDIATE_EVERY_S:
                self._report_intermediate(trial_id)

    # Restored from a searcher state saved before these existed, they start empty.
    def _unreported(self) -> dict[str, tuple[float, int]]:
        return self.__dict__.setdefault("_intermediate_unreported", {})  # trial id -> its last (value, step)

    def _reported_at(self) -> dict[str, float]:
        return self.__dict__.setdefault("_intermediate_reported_at", {})  # trial id -> monotonic time

    def _report_intermediate(self, trial_id: str) -> None:
        """Write the trial's latest intermediate value to the study, if it has one not written yet."""
        latest = self._unreported().pop(trial_id, None)
        if latest is None:
            return
        self._reported_at()[trial_id] = time.monotonic()
        try:
            self._ot_trials[trial_id].report(*latest)
        except optuna.exceptions.UpdateFinishedTrialError:
            self._completed_trials.add(trial_id)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if self._budget is not None:
            self._budget.touch()
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        if self._finished_in_storage(trial_id):  # told before a crash; Tune replays it
            self._unreported().pop(trial_id, None)
            self._completed_trials.add(trial_id)
            return
        if result and result.get(REPLAYED_KEY):  # a new Optuna trial under a finished trial's number
            ot_trial = self._ot_trials[trial_id]
            self._ot_study._storage.set_trial_system_attr(
                ot_trial._trial_id, "sweepd_replayed",
                f"trial {ot_trial.user_attrs.get(NUMBER_ATTR)} finished before a crash; its stored result stands")
            self._ot_study.tell(ot_trial, state=TrialState.FAIL)
            self._unreported().pop(trial_id, None)
            self._completed_trials.add(trial_id)
            return
        self._report_intermediate(trial_id)  # its last point, before it is told
        self._reported_at().pop(trial_id, None)
        if trial_id in self._completed_trials:  # that write found it finished already
            return
        finished = bool(result) and result.get(FINAL_MARKER) is not None
        value = result.get(self._metric) if finished else None
        if error or (finished and value is None):
            # crashed, diverged, failed or out of memory: no objective to learn from. An oom trial is
            # FAIL, not PRUNED: TPE ranks PRUNED trials as worse than every complete one and would
            # steer away from its learning rate and warmup, which have nothing to do with memory
            # (the micro-batch, not the effective batch, sets it); FAIL trials are left out of the
            # sampler's model. The reason goes on the Optuna trial for optuna-dashboard.
            state = TrialState.FAIL
            if finished and result.get(FINAL_MARKER) == "oom" and result.get("reason"):
                self._ot_study._storage.set_trial_system_attr(
                    self._ot_trials[trial_id]._trial_id, "sweepd_oom", str(result["reason"]))
        elif not finished:
            state = TrialState.PRUNED
        else:
            state = TrialState.COMPLETE
        self._ot_study.tell(self._ot_trials[trial_id], value if state == TrialState.COMPLETE else None, state=state)
        self._completed_trials.add(trial_id)


def make_sampler(algorithm: str, seed: int, grid: dict[str, list] | None = None) -> optuna.samplers.BaseSampler:
    if algorithm == "tpe":
        # few startup trials: sweeps here are small; TPE must get a chance to act
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=4)
    if algorithm == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if algorithm == "grid":
        return optuna.samplers.GridSampler(grid or {}, seed=seed)
    raise ValueError(f"search.algorithm: unknown algorithm {algorithm!r}")


# The RDBStorage methods that reach the database: the public API, and the private ones Optuna's
# _CachedStorage (which wraps an RDBStorage in every Study) calls directly. A name missing from this
# Optuna is skipped (tests/store/test_retry.py checks they all exist).
_RETRIED_STORAGE_METHODS = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
    "get_study_name_from_id", "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
    "get_all_studies", "create_new_trial", "set_trial_param", "get_trial_param", "set_trial_intermediate_value",
    "set_trial_user_attr", "set_trial_system_attr", "get_trial_user_attrs", "get_trial_system_attrs",
    "get_trial_id_from_study_id_trial_number", "get_trial", "get_all_trials", "get_n_trials", "get_best_trial",
    "record_heartbeat", "_create_new_trial", "_set_trial_param", "_get_trials", "_get_best_trial_id",
    "_get_stale_trial_ids",
)


class RetryingRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDBStorage, each database call retried through a transient outage like the rest of
    the driver's store calls (sweepd/store/retry.py). A subclass, not a proxy, so that a Study still
    wraps it in Optuna's trial cache. Retried calls are safe to repeat: reads, upserts of attributes
    and intermediate values, params (a duplicate is ignored), and set_trial_state_values, below. A
    trial created twice (a commit whose reply was lost) stays RUNNING and is closed as FAIL by
    close_orphaned_trials."""

    def __init__(self, url: str, engine_kwargs: dict | None = None, **kwargs) -> None:
        call_with_retry(super().__init__, url, engine_kwargs, what="open the Optuna storage", **kwargs)
        use_store_sync(self.engine)

    def __setstate__(self, state: dict) -> None:  # unpickled with the searcher on a resume: connects
        call_with_retry(super().__setstate__, state, what="open the Optuna storage")
        use_store_sync(self.engine)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values=None) -> bool:
        tries = []

        def once() -> bool:
            tries.append(trial_id)
            try:
                return optuna.storages.RDBStorage.set_trial_state_values(self, trial_id, state, values)
            except optuna.exceptions.UpdateFinishedTrialError:
                # an earlier try committed before its connection dropped: already done
                if len(tries) > 1 and optuna.storages.RDBStorage.get_trial(self, trial_id).state == state:
                    return True
                raise

        return call_with_retry(once, what=f"Optuna set_trial_state_values({trial_id}, {state.name})")


def _retried(name: str):
    method = getattr(optuna.storages.RDBStorage, name)

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        return call_with_retry(method, self, *args, what=f"Optuna {name}", **kwargs)
    return call


for _name in _RETRIED_STORAGE_METHODS:
    if hasattr(optuna.storages.RDBStorage, _name):
        setattr(RetryingRDBStorage, _name, _retried(_name))


def optuna_storage(database_url: str) -> RetryingRDBStorage:
    """The sweep's Optuna storage, in sweepd's database. SQLite: the store's busy timeout, past
    which a locked write is retried like any other; PostgreSQL: pooled connections pre-pinged, so
    none left dead by a server restart fails a call after the outage."""
    if database_url.startswith("sqlite"):
        kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}}
    else:
        kwargs = {"pool_pre_ping": True}
    for attempt in range(1, SCHEMA_RACE_TRIES):
        try:
            return RetryingRDBStorage(database_url, engine_kwargs=kwargs)
        except Exception as err:
            # several drivers opening a fresh database at once all create Optuna's tables; the
            # losers see them half made. Once the winner is done, opening it again just works.
            if not _schema_race(err):
                raise
            time.sleep(0.5 * attempt)
    return RetryingRDBStorage(database_url, engine_kwargs=kwargs)


SCHEMA_RACE_TRIES = 6


def _schema_race(err: BaseException) -> bool:
    text = str(err).lower()
    return ("already exists" in text or "alembic_version" in text or "duplicate key" in text
            or "unique constraint" in text)


def close_orphaned_trials(database_url: str, study_name: str, reasons: dict[int, str] | None = None) -> int:
    """After the sweep: Optuna trials still RUNNING were asked for before a crash and never run
    (the resumed searcher does not know them). Mark them FAIL so the study reads true. ``reasons``:
    a reason of its own for the trial of a sweep number (NUMBER_ATTR), e.g. one that was running
    when the driver died and is run again (engine/store_resume.py)."""
    storage = optuna_storage(database_url)
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return 0
    orphans = [t for t in storage.get_all_trials(study_id, deepcopy=False) if t.state == TrialState.RUNNING]
    for t in orphans:
        why = (reasons or {}).get(t.user_attrs.get(NUMBER_ATTR), "asked before a crash, never run")
        storage.set_trial_system_attr(t._trial_id, "sweepd_orphaned", why)
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    storage.remove_session()
    return len(orphans)
