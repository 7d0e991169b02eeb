"""Score signals: how a trial's early training becomes one score at a rung.

Every signal scores a whole rung cohort at once (rank-based signals need the cohort), and every
score is oriented so that LOWER IS BETTER. A missing or non-finite input (a diverged run)
always counts as the worst value, whatever the direction.

- ``grad_norm``  smoothed gradient norm, lower is better (arXiv 2412.13337: early low grad norm
                 went with better final models)
- ``loss``       smoothed training loss, lower is better (what stock ASHA does; the paper finds
                 the opposite sign, which is why it is not the default)
- ``paper``      mean of the grad-norm rank (low first) and the loss rank (high first)
- ``objective``  the latest value of the sweep's objective metric (an eval like ``eval_loss``)
- ``calibrated`` learns each feature's direction and weight from the sweep's own finished
                 trials (Spearman rho with the final objective, per rung); ``paper`` until
                 ``min_completed`` trials have finished
- ``learned``    loss, grad norm, their slopes over the window and an interim objective,
                 weighted by what rung-to-rung pairs, finished trials and earlier sweeps say;
                 the ``loss`` prior until there is evidence (``sweepd.pruners.learned``)
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from typing import Any

from sweepd.pruners.base import finite, fmt_num

FEATURES = ("loss", "grad_norm")  # reported every step, smoothed over a window
OBJECTIVE = "objective"  # the latest reported value of the objective metric, not smoothed
SIGNALS = ("grad_norm", "loss", "paper", "objective", "calibrated", "learned")
SMOOTHERS = ("median", "mean")
_LABELS = {"grad_norm": "grad norm", "loss": "loss"}
SLOPE = "_slope"  # a snapshot's "loss_slope": the feature's slope over the window, per time unit
_PAPER_WEIGHTS = {"grad_norm": 1.0, "loss": -1.0}  # + : lower ranks better, - : higher does


# ---- per-trial smoothing --------------------------------------------------------------------


class TrialWindow:
    """The last ``size`` values of each feature for one trial (bounded), the times they were
    reported at (for slopes), and its latest objective.

    Non-finite values are kept as +inf, so a median over the window shrugs off one spike while a
    run that stays diverged scores as the worst.
    """

    def __init__(self, size: int, smooth: str = "median"):
        self.smooth = smooth
        self.values: dict[str, deque[float]] = {f: deque(maxlen=size) for f in FEATURES}
        self.times: dict[str, deque[float | None]] = {f: deque(maxlen=size) for f in FEATURES}
        self.objective: float | None = None  # None: never reported; inf: non-finite

    def add(self, result: dict, metric: str, time: float | None = None) -> None:
        """``time``: where the report is on the pruner's time axis (None: unknown)."""
        for feature in FEATURES:
            if result.get(feature) is not None:
                self.values[feature].append(_inf_if_bad(result[feature]))
                self.times[feature].append(finite(time))
        if result.get(metric) is not None:
            self.objective = _inf_if_bad(result[metric])

    def has(self, feature: str) -> bool:
        if feature == OBJECTIVE:
            return self.objective is not None
        return bool(self.values[feature])

    def slope(self, feature: str) -> float | None:
        """The feature's slope over the window per time unit (None: fewer than 2 finite points
        at distinct times): the median of the pairwise slopes (Theil-Sen, so one spike does not
        tip it) with the median smoother, the least-squares slope with the mean one."""
        points = [(t, v) for t, v in zip(self.times[feature], self.values[feature])
                  if t is not None and math.isfinite(v)]  # fmt: skip
        return window_slope(points, self.smooth)

    def snapshot(self, slopes: bool = False) -> dict[str, float | None]:
        """The inputs recorded at a rung: smoothed features (and, with ``slopes``, their slopes
        over the window) and the latest objective."""
        out: dict[str, float | None] = {}
        for feature, window in self.values.items():
            if window:
                out[feature] = finite(smoothed(window, self.smooth))
            else:
                out[feature] = None
        if slopes:
            for feature in FEATURES:
                out[feature + SLOPE] = finite(self.slope(feature))
        out[OBJECTIVE] = finite(self.objective)
        return out

    def state(self) -> dict[str, Any]:
        return {
            "values": {f: [finite(v) for v in w] for f, w in self.values.items()},
            "times": {f: list(w) for f, w in self.times.items()},
            "objective": None if self.objective is None else finite(self.objective),
            "objective_seen": self.objective is not None,
        }

    def load(self, state: dict[str, Any]) -> None:
        times = state.get("times") or {}  # a state saved before slopes has none
        for feature, values in state["values"].items():
            self.values[feature].clear()
            self.values[feature].extend(math.inf if v is None else v for v in values)
            self.times[feature].clear()
            self.times[feature].extend(times.get(feature) or [None] * len(values))
        seen, value = state["objective_seen"], state["objective"]
        self.objective = (math.inf if value is None else value) if seen else None


def window_slope(points: list[tuple[float, float]], how: str) -> float | None:
    """Slope of (time, value) points: Theil-Sen for ``median``, least squares for ``mean``."""
    if how == "median":
        slopes = [(v2 - v1) / (t2 - t1) for i, (t1, v1) in enumerate(points)
                  for t2, v2 in points[i + 1 :] if t2 != t1]  # fmt: skip
        return statistics.median(slopes) if slopes else None
    if len(points) < 2:
        return None
    mt = statistics.fmean(t for t, _ in points)
    mv = statistics.fmean(v for _, v in points)
    stt = sum((t - mt) ** 2 for t, _ in points)
    return None if stt == 0 else sum((t - mt) * (v - mv) for t, v in points) / stt


def smoothed(values: Any, how: str) -> float:
    """The window's value as a pruner sees it: its median or its mean (``how``, in SMOOTHERS)."""
    return statistics.median(values) if how == "median" else statistics.fmean(values)


def _inf_if_bad(value: Any) -> float:
    number = finite(value)
    return math.inf if number is None else number


# ---- ranking helpers ------------------------------------------------------------------------


def ranks(values: list[float | None], lower_is_better: bool = True) -> list[float]:
    """1-based ranks, 1 = best, ties share their average rank, None ranks worst."""
    keys = [math.inf if v is None else (v if lower_is_better else -v) for v in values]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    out = [0.0] * len(keys)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and keys[order[j + 1]] == keys[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def rank_correlation(xs: list[float], ys: list[float]) -> float | None:
    """Spearman's rho (Pearson on average ranks); None when either side is constant."""
    rx, ry = ranks(list(xs)), ranks(list(ys))
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    return None if sxx == 0 or syy == 0 else max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))


def spearman(xs: list[float], ys: list[float]) -> float:
    """Spearman's rho; 0.0 (no evidence either way) when either side is constant."""
    rho = rank_correlation(xs, ys)
    return 0.0 if rho is None else rho


def weighted_ranks(cohort: list[dict], weights: dict[str, float]) -> list[float]:
    """Weighted mean rank per trial (1 = best). A positive weight ranks low values first."""
    total = sum(abs(w) for w in weights.values())
    scores = [0.0] * len(cohort)
    for feature, weight in weights.items():
        if weight == 0:
            continue
        feature_ranks = ranks([c.get(feature) for c in cohort], lower_is_better=weight > 0)
        for i, r in enumerate(feature_ranks):
            scores[i] += abs(weight) * r / total
    return scores


# ---- signals --------------------------------------------------------------------------------


class Signal:
    """Scores a rung cohort (lower is better) and says in words what a trial's score is."""

    name = ""
    needs: tuple[str, ...] = ()  # inputs a trial must have reported before it can be judged
    slopes = False  # True: the pruner records the features' window slopes at each rung
    learns = False  # True: scored by ``rung_scores`` with the pruner's whole evidence (learned)

    def scores(
        self, cohort: list[dict], history: list[tuple[dict, float]]
    ) -> tuple[list[float], dict[str, Any]]:
        """``cohort``: the recorded inputs at the rung; ``history``: (inputs at this rung,
        final objective) of the finished trials. Returns the scores and signal details."""
        raise NotImplementedError

    def describe(self, values: dict, score: float, detail: dict) -> str:
        raise NotImplementedError

    def display(self, score: float) -> float:
        """A score (or cut-off) back in the units ``describe`` shows."""
        return score


class ValueSignal(Signal):
    """One input as it is: grad_norm, loss, or the objective metric."""

    def __init__(self, name: str, feature: str, label: str, lower_is_better: bool = True):
        self.name, self.feature, self.label = name, feature, label
        self.lower_is_better = lower_is_better
        self.needs = (feature,)

    def scores(self, cohort, history):
        sign = 1.0 if self.lower_is_better else -1.0
        values = [c.get(self.feature) for c in cohort]
        return [math.inf if v is None else sign * v for v in values], {}

    def describe(self, values, score, detail):
        return f"{self.label} {fmt_num(values.get(self.feature))}"

    def display(self, score):
        return score if self.lower_is_better else -score


class PaperSignal(Signal):
    name = "paper"
    needs = FEATURES

    def scores(self, cohort, history):
        return weighted_ranks(cohort, _PAPER_WEIGHTS), {"weights": dict(_PAPER_WEIGHTS)}

    def describe(self, values, score, detail, note: str = ""):
        return (
            f"paper score {fmt_num(score)} (mean rank of low grad norm "
            f"{fmt_num(values.get('grad_norm'))} and high loss {fmt_num(values.get('loss'))}{note})"
        )


class CalibratedSignal(Signal):
    """Weights from this sweep's finished trials: rho(feature at this rung, final objective).

    The weight of a feature is its Spearman rho with the final objective oriented lower-is-better,
    so a positive weight means "a lower value went with a better final". Only trials that
    finished are known, i.e. the survivors of earlier rungs; with few of them rho is noisy,
    hence the ``paper`` prior until ``min_completed`` have finished.
    """

    name = "calibrated"
    needs = FEATURES

    def __init__(self, metric: str = "eval_loss", mode: str = "min", min_completed: int = 4):
        self.metric, self.mode, self.min_completed = metric, mode, min_completed

    def weights(self, history: list[tuple[dict, float]]) -> dict[str, float] | None:
        if len(history) < self.min_completed:
            return None
        sign = 1.0 if self.mode == "min" else -1.0
        weights = {}
        for feature in FEATURES:
            pairs = [(f[feature], sign * y) for f, y in history if f.get(feature) is not None]
            ok = len(pairs) >= self.min_completed
            weights[feature] = spearman(*zip(*pairs)) if ok else 0.0
        return weights if any(weights.values()) else None

    def scores(self, cohort, history):
        weights = self.weights(history)
        detail: dict[str, Any] = {"completed": len(history), "min_completed": self.min_completed}
        if weights is None:
            scores, paper = PaperSignal().scores(cohort, history)
            return scores, {**detail, **paper, "fallback": "paper"}
        return weighted_ranks(cohort, weights), {**detail, "weights": weights, "fallback": None}

    def describe(self, values, score, detail):
        if detail.get("fallback"):
            why = (
                f"{detail['completed']} finished trials, {detail['min_completed']} needed"
                if detail["completed"] < detail["min_completed"]
                else "no correlation with the objective yet"
            )
            return PaperSignal().describe(values, score, detail, f"; calibrated falls back: {why}")
        sign = 1.0 if self.mode == "min" else -1.0  # show rho with the objective as reported
        parts = ", ".join(f"{_LABELS[f]} {sign * w:+.2f}" for f, w in detail["weights"].items())
        return (
            f"calibrated score {fmt_num(score)} (grad norm {fmt_num(values.get('grad_norm'))}, "
            f"loss {fmt_num(values.get('loss'))}; Spearman rho with {_label(self.metric)} over "
            f"{detail['completed']} finished trials: {parts})"
        )


def make_signal(
    name: str, *, metric: str = "eval_loss", mode: str = "min", min_completed: int = 4
) -> Signal:
    if name == "grad_norm":
        return ValueSignal("grad_norm", "grad_norm", "grad norm")
    if name == "loss":
        return ValueSignal("loss", "loss", "loss")
    if name == "paper":
        return PaperSignal()
    if name == "objective":
        return ValueSignal("objective", OBJECTIVE, _label(metric), lower_is_better=mode == "min")
    if name == "calibrated":
        return CalibratedSignal(metric, mode, min_completed)
    if name == "learned":
        from sweepd.pruners.learned import LearnedSignal  # it builds on this module

        return LearnedSignal(metric, mode, min_completed)
    raise ValueError(f"signal must be one of {', '.join(SIGNALS)}; got {name!r}")


def _label(metric: str) -> str:
    return metric.replace("_", " ")
