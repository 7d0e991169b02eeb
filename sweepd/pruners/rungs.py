"""What the rung-based pruners (ASHA, median) share: the time axis, the per-trial smoothing
windows, the inputs recorded at each rung, the finished trials' objectives, and their state.

A subclass says where its rungs are (``rung_time``) and how a cohort is judged (``_judge``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sweepd.pruners.base import Decision, Pruner, finite, fmt_num
from sweepd.pruners.signals import SIGNALS, SMOOTHERS, TrialWindow, make_signal

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
    # and pass the rest through (see ``defaults()``). ``loss`` is the signal that measured best
    # on every bank (README, "Choosing the default pruner"), so it is the default.
    def __init__(
        self,
        *,
        signal: str = "loss",
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
        window.add(result, self.metric)
        now = finite(result.get(TIME_KEYS[self.time_attr]))
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
                recorded[trial_id] = window.snapshot()
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

    def on_trial_remove(self, trial_id: str) -> None:
        self._windows.pop(trial_id, None)

    def set_objective(self, metric: str | None, mode: str | None) -> None:
        if mode is not None:
            _choice("mode", mode, MODES)
            self.mode = mode
        if metric:
            self.metric = metric
        self.signal = self._make_signal()

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


def _tidy(value: float) -> float:
    """2048.0 -> 2048, so times read and serialise as integers where they are."""
    return int(value) if float(value).is_integer() else value
