"""The compute ledger of a sweep: what was spent, and what stopping trials early saved.

A stopped trial "would have spent" the full budget; its tokens and seconds at full budget are
extrapolated from its own rate (tokens per sample, seconds per sample) so far. Every other trial
(completed, failed, diverged, still running) counts at what it spent.
"""

from __future__ import annotations

from dataclasses import dataclass

from sweepd.protocol import TrialState

KINDS = ("samples", "tokens", "seconds")


@dataclass
class TrialCost:
    state: str  # a TrialState value
    samples: int
    tokens: int
    seconds: float
    full_samples: int  # the trial's budget at full length

    def spent(self) -> dict[str, float]:
        return {"samples": self.samples, "tokens": self.tokens, "seconds": self.seconds}

    def at_full_budget(self) -> dict[str, float]:
        """What the trial would have spent had it run its full budget (a stopped trial)."""
        if self.state != TrialState.stopped:
            return self.spent()
        def scaled(spent: float) -> float:  # at the trial's own rate per sample so far
            return spent * self.full_samples / self.samples if self.samples else 0.0

        return {"samples": self.full_samples, "tokens": scaled(self.tokens), "seconds": scaled(self.seconds)}


def compute_ledger(trials: list[TrialCost]) -> dict:
    spent = dict.fromkeys(KINDS, 0.0)
    full = dict.fromkeys(KINDS, 0.0)
    stopped_remaining = dict.fromkeys(KINDS, 0.0)
    for t in trials:
        mine, at_full = t.spent(), t.at_full_budget()
        for k in KINDS:
            spent[k] += mine[k]
            full[k] += at_full[k]
            stopped_remaining[k] += max(0.0, at_full[k] - mine[k])
    saved_fraction = stopped_remaining["samples"] / full["samples"] if full["samples"] else 0.0
    return {
        "spent": _rounded(spent),
        "stopped_trials_would_have_spent": _rounded(stopped_remaining),
        "without_pruning": _rounded(full),
        "fraction_saved": round(saved_fraction, 4),
        "trials_stopped": sum(1 for t in trials if t.state == TrialState.stopped),
    }


def _rounded(cost: dict[str, float]) -> dict:
    """Whole samples and tokens, seconds to the hundredth."""
    return {"samples": int(cost["samples"]), "tokens": int(cost["tokens"]), "seconds": round(cost["seconds"], 2)}
