"""Writes what Ray Tune sees into the store: trial states, metric points, pruner decisions.

Both classes are pickled by Ray into the experiment (tuner.pkl) and brought back on resume, so
they hold only the database URL and open their engine lazily. Metric points are buffered and
written in batches; the store's inserts are idempotent, so a resumed sweep that replays results
writes no duplicate rows.
"""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import delete

from sweepd.protocol import FINAL_MARKER, FINISHED_TRIAL_STATES, METRIC_KEYS, NUMBER_KEY, TrialState
from sweepd.store import repo
from sweepd.store.db import make_engine, session_scope
from sweepd.store.models import MetricPoint, utcnow

FLUSH_EVERY_POINTS = 200
FLUSH_EVERY_SECONDS = 2.0


def trial_number(trial) -> int:
    """The searcher numbers trials 1, 2, 3 ... in its suggestions; stable across a resume."""
    return int(trial.config[NUMBER_KEY])


def trial_key(trial) -> str:
    """The scheduler names trials by number, so decisions carry it."""
    return str(trial_number(trial))


class _StoreClient:
    def __init__(self, db_url: str, sweep_id: str) -> None:
        self.db_url, self.sweep_id = db_url, sweep_id
        self._engine = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_engine"] = None
        return state

    def session(self):
        if self._engine is None:
            self._engine = make_engine(self.db_url)
        return session_scope(self._engine)


class DecisionWriter(_StoreClient):
    """The scheduler's on_decision: every decision is an event, with its inputs as payload."""

    def __call__(self, decision) -> None:
        number = int(decision.trial_id)
        with self.session() as s:
            trial_id = repo.trial_id_for(self.sweep_id, number)
            repo.upsert_trial(s, self.sweep_id, number)
            payload = decision.to_dict()
            payload["trial_number"] = number
            repo.add_event(s, self.sweep_id, "decision", decision.reason, trial_id=trial_id, payload=payload)
            if decision.stop:
                repo.upsert_trial(s, self.sweep_id, number, stopped_at=float(decision.rung_time),
                                  reason=decision.reason)


def _final_state(result: dict | None) -> str:
    """A final result's status (completed, diverged, stopped; anything else: completed); no final
    result at all: the trial was stopped."""
    if not result or result.get(FINAL_MARKER) is None:
        return TrialState.stopped.value
    ends = (TrialState.completed, TrialState.diverged, TrialState.stopped)
    status = result[FINAL_MARKER]
    return status if status in ends else TrialState.completed.value


def _error_text(trial) -> str:
    path = getattr(trial, "error_file", None)
    if path and Path(path).exists():
        text = Path(path).read_text(errors="replace").strip()
        return text[-4000:]
    return "trial failed (no error text recorded)"


try:
    from ray.tune import Callback
except ImportError:  # pragma: no cover - ray is a hard dependency
    Callback = object


class StoreRecorder(Callback, _StoreClient):
    def __init__(self, db_url: str, sweep_id: str, objective_metric: str) -> None:
        _StoreClient.__init__(self, db_url, sweep_id)
        self.objective_metric = objective_metric
        self._points: dict[int, list[dict]] = {}
        self._last_flush = time.monotonic()

    def __getstate__(self) -> dict:
        state = _StoreClient.__getstate__(self)
        state["_points"] = {}
        return state

    # -- helpers -------------------------------------------------------------------------------

    def _flush(self) -> None:
        if not any(self._points.values()):
            return
        with self.session() as s:
            for number, points in self._points.items():
                if points:
                    repo.add_metric_points(s, repo.trial_id_for(self.sweep_id, number), points)
                    last = points[-1]
                    repo.upsert_trial(s, self.sweep_id, number, samples=int(last.get("samples") or 0),
                                      tokens=int(last.get("tokens") or 0), seconds=float(last.get("seconds") or 0))
        self._points = {}
        self._last_flush = time.monotonic()

    # -- Ray Tune callback hooks ---------------------------------------------------------------

    def on_trial_start(self, iteration, trials, trial, **info):
        number = trial_number(trial)
        with self.session() as s:
            previous = repo.get_trial_by_number(s, self.sweep_id, number)
            if previous is not None and previous.state in FINISHED_TRIAL_STATES:
                return  # a replay after a resume (see trainable.replay_if_finished)
            attempts = (previous.attempts if previous else 0) + 1
            config = {k: v for k, v in trial.config.items() if k != NUMBER_KEY}
            if previous is not None and previous.config and previous.config != config:
                # a resume re-suggested this number with other params: the old curve is not its own
                s.execute(delete(MetricPoint).where(MetricPoint.trial_id == previous.id))
                attempts = 1
            repo.upsert_trial(s, self.sweep_id, number, config=config, state=TrialState.running,
                              attempts=attempts, started_at=utcnow())

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get(FINAL_MARKER) is not None or "loss" not in result:
            return  # the final result is recorded on completion; interim evals are not curve points
        point = {k: result.get(k) for k in METRIC_KEYS}
        self._points.setdefault(trial_number(trial), []).append(point)
        if (sum(len(p) for p in self._points.values()) >= FLUSH_EVERY_POINTS
                or time.monotonic() - self._last_flush > FLUSH_EVERY_SECONDS):
            self._flush()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._flush()
        result = trial.last_result or {}
        state = _final_state(result)
        fields = {"state": state, "finished_at": utcnow()}
        if state != TrialState.stopped:
            final = {k: v for k, v in result.items() if k not in ("config",) and not isinstance(v, dict)}
            fields.update(metrics_final=final, objective=result.get(self.objective_metric),
                          samples=int(result.get("samples") or 0), tokens=int(result.get("tokens") or 0),
                          seconds=float(result.get("seconds") or 0))
            if state == TrialState.diverged:
                fields["reason"] = result.get("reason")
        with self.session() as s:
            previous = repo.get_trial_by_number(s, self.sweep_id, trial_number(trial))
            if previous is not None and previous.state in FINISHED_TRIAL_STATES:
                return  # a replay: the stored outcome stands
            repo.upsert_trial(s, self.sweep_id, trial_number(trial), **fields)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._flush()
        with self.session() as s:
            repo.upsert_trial(s, self.sweep_id, trial_number(trial), state=TrialState.failed,
                              error=_error_text(trial), finished_at=utcnow())

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._flush()
        with self.session() as s:
            number = trial_number(trial)
            repo.add_event(s, self.sweep_id, "state", f"trial {number} crashed; retrying",
                           trial_id=repo.trial_id_for(self.sweep_id, number),
                           payload={"error": _error_text(trial)[-1000:]})

    def on_experiment_end(self, trials, **info):
        self._flush()
