"""The pruner interface and the explained decision every pruner returns.

A pruner is pure, event-fed Python: the Ray Tune adapter (sweepd.engine.tune_scheduler) feeds it the
trials' reports and turns its decisions into CONTINUE/STOP, so everything here is testable
without Ray.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from sweepd import formatting
from sweepd.formatting import finite, json_safe  # finite: pruners import it from here

Action = Literal["continue", "stop"]


@dataclass(frozen=True)
class Decision:
    """One verdict on one trial at one rung, with every input needed to explain it.

    Scores are oriented so that lower is better for every signal (an objective maximised is
    negated); the trial's raw, unoriented inputs are in ``values``.
    """

    trial_id: str
    action: Action
    pruner: str  # "asha" | "median"
    signal: str  # "grad_norm" | "loss" | "paper" | "objective" | "calibrated" | "learned"
    rung: int  # index of the rung (0 = the first, at `grace`)
    rung_time: float  # where the rung is on the time axis, e.g. 2048 samples
    time_attr: str  # "samples" | "steps"
    time: float  # the trial's own time at the report that crossed the rung
    score: float  # the trial's score against this rung's cohort (inf: missing or diverged)
    values: dict[str, float | None]  # smoothed loss / grad_norm, latest objective
    cohort: int  # scores recorded at this rung so far, this trial's included
    rank: int  # 1 = best; tied scores share the better rank
    keep: int | None  # ASHA: how many of the cohort continue (top k); None for median
    cutoff: float | None  # the worst score that still continues (ASHA), or the median;
    # None when the cohort was too small to decide
    needed: int  # the smallest cohort this pruner decides on
    reason: str  # a sentence a person can read
    detail: dict[str, Any] = field(default_factory=dict)  # signal specifics, e.g. weights

    @property
    def stop(self) -> bool:
        return self.action == "stop"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (non-finite floats become None)."""
        return json_safe(asdict(self))


class Pruner:
    """Base class: implement ``on_result``; the other hooks default to no-ops.

    ``on_result`` returns the decision taken on this report, or None when the report crossed
    no rung. Pruners that can take several decisions on one report (a trial jumping over
    several rungs) also override ``on_result_all``.
    """

    name = "base"

    def on_result(self, trial_id: str, result: dict) -> Decision | None:
        raise NotImplementedError

    def on_result_all(self, trial_id: str, result: dict) -> list[Decision]:
        """Every decision taken on this report, in rung order (the last one is the verdict)."""
        decision = self.on_result(trial_id, result)
        return [decision] if decision is not None else []

    def on_trial_complete(self, trial_id: str, objective: float | None = None) -> None:
        """The trial finished; ``objective`` is its final objective (None if it has none)."""

    def on_trial_remove(self, trial_id: str) -> None:
        """The trial is gone without a final objective (removed, errored)."""

    def set_objective(self, metric: str | None, mode: str | None) -> None:
        """The sweep's objective metric and mode, when they are known only later (Ray)."""

    def add_history(self, sweep_id: str, trials: list[dict]) -> int:
        """Earlier sweeps' curves, ``[{"curve": [report, ...], "objective": float | None}]``:
        evidence for the ``learned`` signal (``sweepd.pruners.rungs``). Returns how many trials
        were taken: 0 here and for every other signal, which ignore history."""
        return 0

    def history_summary(self) -> dict[str, int]:
        """How much history was given: ``{"sweeps": 2, "trials": 31, "curves": 40}``."""
        return {"sweeps": 0, "trials": 0, "curves": 0}

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state, so that a resumed sweep keeps its rungs."""
        return {"pruner": self.name}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def describe(self) -> str:
        return self.name


# ---- small shared helpers -------------------------------------------------------------------


def fmt_num(value: float | None) -> str:
    """A number in a decision's sentence: 1.8412 -> '1.84', 2048 -> '2,048', 1234.5 -> '1,234';
    missing or non-finite -> 'n/a'."""
    return formatting.fmt_num(finite(value), digits=3, missing="n/a")


def ordinal(n: int) -> str:
    if 10 <= n % 100 <= 20:
        return f"{n}th"
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
