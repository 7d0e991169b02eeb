"""What the rung-based pruners (ASHA, median) share: the time axis, the per-trial smoothing
windows, the inputs recorded at each rung, the finished trials' objectives, earlier sweeps'
curves (for the ``learned`` signal), and their state.

A subclass says where its rungs are (``rung_time``) and how a cohort is judged (``_judge``).

History (earlier sweeps of the same fingerprint), for the ``learned`` signal::

    pruner.add_history("sweep-41", [{"curve": [report, ...], "objective": 1.87}, ...])
    pruner.history_summary()  # {"sweeps": 1, "trials": 1, "curves": 1}

``add_history`` returns how many trials it took (0: this pruner ignores history).

A report is what ``on_result`` receives (``step``, ``samples``, ``loss``, ``grad_norm``, maybe
the objective metric), in time order; the pruner replays each curve through its own window and
smoother and keeps the inputs at its own rungs (not the curve) plus the final objective (None:
the trial did not finish; its curve then teaches nothing). Adding a sweep id again replaces it.
With any other signal ``add_history`` does nothing. Call it once the objective metric is known
(``set_objective`` to another metric forgets the interim evals read from earlier curves).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sweepd.pruners.base import Decision, Pruner, finite, fmt_num
from sweepd.pruners.signals import OBJECTIVE, SIGNALS, SMOOTHERS, TrialWindow, make_signal

# time_attr -> the key the trainer reports it under
TIME_KEYS = {"samples": "samples", "steps": "step"}
MODES = ("min", "max")


@dataclass
class Verdict:
    """How a cohort judged one trial; the words after "stopped/continued at N samples: "."""

    stop: bool
    rank: int
    keep: int | None
    cutoff: float | None
    sentence: str


class RungPruner(Pruner):
    # config keys that fix where the rungs are: a saved state only loads into the same rungs
    _rung_keys: tuple[str, ...] = ("grace", "time_attr", "max_t")

    # Every option's default is written here once; subclasses add their own options in front
    # and pass the rest through (factory.option_defaults reads them). ``learned`` (which starts
    # from ``loss``, the best fixed signal) measured lowest in mean regret over every bank
    # (README, "Choosing the default pruner"), so it is the default.
    def __init__(
        self,
        *,
        signal: str = "learned",
        grace: float = 1024,
        time_attr: str = "samples",
        max_t: float | None = None,
        window: int = 5,
        smooth: str = "median",
        metric: str = "eval_loss",
        mode: str = "min",
        min_completed: int = 4,
    ):
        _choice("signal", signal, SIGNALS)
        _positive("grace", grace)
        _choice("time_attr", time_attr, tuple(TIME_KEYS))
        if max_t is not None:
            _positive("max_t", max_t)
            if max_t <= grace:
                raise ValueError(f"max_t ({max_t!r}) must be greater than grace ({grace!r})")
        _int_at_least("window", window, 1)
        _choice("smooth", smooth, SMOOTHERS)
        if not isinstance(metric, str) or not metric:
            raise ValueError(f"metric must be a non-empty string, got {metric!r}")
        _choice("mode", mode, MODES)
        _int_at_least("min_completed", min_completed, 3)  # rho of 2 points is always +-1

        self.signal_name, self.grace, self.time_attr, self.max_t = signal, grace, time_attr, max_t
        self.window, self.smooth, self.min_completed = window, smooth, min_completed
        self.metric, self.mode = metric, mode
        self.signal = self._make_signal()
        self._rungs: list[dict[str, dict]] = []  # rung index -> {trial_id: inputs recorded}
        self._windows: dict[str, TrialWindow] = {}  # live trials only
        self._finals: dict[str, float] = {}  # final objective of trials that finished
        self._stopped: set[str] = set()
        # learned signal only: sweep id -> [{"rungs": [inputs at each rung], "objective": y}]
        # (inputs only, never the curves: the Tune adapter pickles the pruner, and saves its
        # state after every decision)
        self._history: dict[str, list[dict]] = {}
        self._history_metric = metric  # the metric the history's interim evals were read as
        self._version = [0, 0]  # bumped when finals / history change: the signal's cache key

    # ---- subclass hooks ---------------------------------------------------------------------

    def rung_time(self, index: int) -> float:
        raise NotImplementedError

    def _judge(self, trial_id: str, scores: dict[str, float], what: str) -> Verdict:
        """``scores``: the cohort at the rung, this trial's included; ``what``: its score in
        words ("grad norm 1.84")."""
        raise NotImplementedError

    @property
    def needed(self) -> int:
        """The smallest cohort (this trial included) this pruner decides on."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        return {
            "signal": self.signal_name,
            "grace": self.grace,
            "time_attr": self.time_attr,
            "max_t": self.max_t,
            "window": self.window,
            "smooth": self.smooth,
            "metric": self.metric,
            "mode": self.mode,
            "min_completed": self.min_completed,
        }

    # ---- rungs ------------------------------------------------------------------------------

    def has_rung(self, index: int) -> bool:
        # A rung at max_t itself would stop a trial that has already spent its whole budget.
        return self.max_t is None or self.rung_time(index) < self.max_t

    def rung_times(self, upto: float | None = None) -> list[float]:
        """The rung schedule up to max_t (exclusive), or up to ``upto`` when max_t is None."""
        if self.max_t is None and upto is None:
            raise ValueError("rung_times() needs `upto` when max_t is None")
        out, i = [], 0
        while self.has_rung(i) and (upto is None or self.rung_time(i) <= upto):
            out.append(self.rung_time(i))
            i += 1
        return out

    def _recorded(self, index: int) -> dict[str, dict]:
        while len(self._rungs) <= index:
            self._rungs.append({})
        return self._rungs[index]

    # ---- events -----------------------------------------------------------------------------

    def on_result(self, trial_id: str, result: dict) -> Decision | None:
        decisions = self.on_result_all(trial_id, result)
        return decisions[-1] if decisions else None

    def on_result_all(self, trial_id: str, result: dict) -> list[Decision]:
        if trial_id in self._stopped:
            return []  # a late, buffered report of a trial already stopped
        window = self._windows.get(trial_id)
        if window is None:
            window = self._windows[trial_id] = TrialWindow(self.window, self.smooth)
        now = finite(result.get(TIME_KEYS[self.time_attr]))
        window.add(result, self.metric, now)
        if now is None:
            return []
        decisions: list[Decision] = []
        index = 0
        # Judge every rung crossed and not yet recorded, in order, up to the first stop.
        while self.has_rung(index) and self.rung_time(index) <= now:
            recorded = self._recorded(index)
            if trial_id not in recorded:
                if not all(window.has(f) for f in self.signal.needs):
                    break  # e.g. no eval yet for `objective`: judged when it arrives
                recorded[trial_id] = window.snapshot(slopes=self.signal.slopes)
                decision = self._decide(trial_id, index, now)
                decisions.append(decision)
                if decision.stop:
                    self._stopped.add(trial_id)
                    break
            index += 1
        return decisions

    def _decide(self, trial_id: str, index: int, now: float) -> Decision:
        recorded = self._rungs[index]
        ids = list(recorded)
        if self.signal.learns:
            raw, detail = self.signal.rung_scores(
                index, ids, self._rungs, self._finals, self._history, tuple(self._version)
            )
        else:
            history = [(recorded[t], self._finals[t]) for t in ids if t in self._finals]
            raw, detail = self.signal.scores([recorded[t] for t in ids], history)
        scores = {t: (math.inf if math.isnan(s) else s) for t, s in zip(ids, raw)}
        values = dict(recorded[trial_id])
        what = self.signal.describe(values, scores[trial_id], detail)
        verdict = self._judge(trial_id, scores, what)
        rung_time = _tidy(self.rung_time(index))
        unit = self.time_attr if rung_time != 1 else self.time_attr.rstrip("s")
        verb = "stopped" if verdict.stop else "continued"
        return Decision(
            trial_id=trial_id,
            action="stop" if verdict.stop else "continue",
            pruner=self.name,
            signal=self.signal_name,
            rung=index,
            rung_time=rung_time,
            time_attr=self.time_attr,
            time=_tidy(now),
            score=scores[trial_id],
            values=values,
            cohort=len(ids),
            rank=verdict.rank,
            keep=verdict.keep,
            cutoff=verdict.cutoff,
            needed=self.needed,
            reason=f"{verb} at {fmt_num(rung_time)} {unit}: {verdict.sentence}",
            detail=detail,
        )

    def on_trial_complete(self, trial_id: str, objective: float | None = None) -> None:
        self._windows.pop(trial_id, None)
        value = finite(objective)
        # A stopped trial's "final" value is partial: it must not teach `calibrated` anything.
        if trial_id not in self._stopped and value is not None:
            self._finals[trial_id] = value
            self._version[0] += 1

    def on_trial_remove(self, trial_id: str) -> None:
        self._windows.pop(trial_id, None)

    def set_objective(self, metric: str | None, mode: str | None) -> None:
        if mode is not None:
            _choice("mode", mode, MODES)
            self.mode = mode
        if metric:
            self.metric = metric
        self.signal = self._make_signal()
        if self._history and self.metric != self._history_metric:
            # The earlier curves' interim evals were read under another metric's name: forget
            # them (the curves are not kept). Call add_history once the objective is known.
            for trial in (t for sweep in self._history.values() for t in sweep):
                for inputs in trial["rungs"]:
                    inputs[OBJECTIVE] = None
            self._history_metric = self.metric
            self._version[1] += 1

    # ---- history (the learned signal) -------------------------------------------------------

    def add_history(self, sweep_id: str, trials: list[dict]) -> int:
        """An earlier sweep's trials, ``[{"curve": [report, ...], "objective": float | None}]``,
        as evidence for the ``learned`` signal (module docstring). Returns how many trials it
        took: all of them, or 0 with any other signal (which ignores history)."""
        if not self.signal.learns:
            return 0
        if not isinstance(sweep_id, str) or not sweep_id:
            raise ValueError(f"sweep_id must be a non-empty string, got {sweep_id!r}")
        if not isinstance(trials, (list, tuple)):
            raise ValueError(f"history of {sweep_id!r} must be a list of trials, got {trials!r}")
        recorded = []
        for i, trial in enumerate(trials):
            curve = trial.get("curve") if isinstance(trial, Mapping) else None
            if not isinstance(curve, (list, tuple)):
                raise ValueError(
                    f"history of {sweep_id!r}, trial {i}: expected {{'curve': [report, ...], "
                    f"'objective': float | None}}, got {_short(trial)}"
                )
            rungs = self._replay(sweep_id, i, curve)
            recorded.append({"rungs": rungs, "objective": finite(trial.get("objective"))})
        self._history[sweep_id] = recorded
        self._history_metric = self.metric
        self._version[1] += 1
        return len(recorded)

    def history_summary(self) -> dict[str, int]:
        """``sweeps``: earlier sweeps given; ``trials``: their trials with a final objective
        (the ones that teach); ``curves``: all their trials."""
        trials = [t for sweep in self._history.values() for t in sweep]
        return {
            "sweeps": len(self._history),
            "trials": sum(t["objective"] is not None for t in trials),
            "curves": len(trials),
        }

    def _replay(self, sweep_id: str, i: int, curve) -> list[dict]:
        """The inputs this pruner would have recorded at each of its rungs for ``curve``: the
        crossing logic of ``on_result_all``, without the decisions."""
        window = TrialWindow(self.window, self.smooth)
        time_key, out = TIME_KEYS[self.time_attr], []
        for result in curve:
            if not isinstance(result, Mapping):
                raise ValueError(
                    f"history of {sweep_id!r}, trial {i}: a report must be a mapping, "
                    f"got {_short(result)}"
                )
            now = finite(result.get(time_key))
            window.add(result, self.metric, now)
            if now is None:
                continue
            while self.has_rung(len(out)) and self.rung_time(len(out)) <= now:
                if not all(window.has(f) for f in self.signal.needs):
                    break
                out.append(window.snapshot(slopes=self.signal.slopes))
            if not self.has_rung(len(out)):
                break  # past the last rung: the rest of the curve is never looked at
        return out

    def _make_signal(self):
        return make_signal(
            self.signal_name, metric=self.metric, mode=self.mode, min_completed=self.min_completed
        )

    # ---- state ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "pruner": self.name,
            "config": self.config(),
            "rungs": [{t: dict(v) for t, v in rung.items()} for rung in self._rungs],
            "finals": dict(self._finals),
            "stopped": sorted(self._stopped),
            "windows": {t: w.state() for t, w in self._windows.items()},
            "history": {s: [dict(t, rungs=[dict(r) for r in t["rungs"]]) for t in trials]
                        for s, trials in self._history.items()},  # fmt: skip
            "history_metric": self._history_metric,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("pruner") != self.name:
            saved_by = state.get("pruner")
            raise ValueError(f"state was saved by pruner {saved_by!r}, not {self.name!r}")
        saved, ours = state["config"], self.config()
        for key in self._rung_keys:
            if saved.get(key) != ours[key]:
                raise ValueError(
                    f"state was saved with {key}={saved.get(key)!r}, this pruner has "
                    f"{key}={ours[key]!r}: its rungs would not line up"
                )
        self._rungs = [{t: dict(v) for t, v in rung.items()} for rung in state["rungs"]]
        self._finals = {t: float(v) for t, v in state["finals"].items()}
        self._stopped = set(state["stopped"])
        self._windows = {}
        for trial_id, window_state in state["windows"].items():
            window = self._windows[trial_id] = TrialWindow(self.window, self.smooth)
            window.load(window_state)
        self._history = {
            sweep: [{"rungs": [dict(r) for r in t["rungs"]], "objective": t["objective"]}
                    for t in trials]
            for sweep, trials in (state.get("history") or {}).items()
        }  # fmt: skip
        self._history_metric = state.get("history_metric", self.metric)
        self.signal = self._make_signal()  # what it cached was learned from the old state


# ---- argument checks (the bad value goes in the message) ------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive(name: str, value: Any) -> None:
    if not _is_number(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def _int_at_least(name: str, value: Any, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _choice(name: str, value: Any, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(options)}; got {value!r}")


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _tidy(value: float) -> float:
    """2048.0 -> 2048, so times read and serialise as integers where they are."""
    return int(value) if float(value).is_integer() else value
