"""The compute ledger of a sweep: what was spent, and what stopping trials early saved.

A stopped trial "would have spent" the full budget; its tokens and seconds at full budget are
extrapolated from its own rate (tokens per sample, seconds per sample) so far.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrialCost:
    state: str  # completed | stopped | failed | diverged | running | pending
    samples: int
    tokens: int
    seconds: float
    full_samples: int  # the trial's budget at full length


def _extrapolate(spent: float, samples: int, full: int) -> float:
    return spent * full / samples if samples else 0.0


def compute_ledger(trials: list[TrialCost]) -> dict:
    spent = {"samples": 0, "tokens": 0, "seconds": 0.0}
    full = {"samples": 0, "tokens": 0.0, "seconds": 0.0}
    stopped_remaining = {"samples": 0, "tokens": 0.0, "seconds": 0.0}
    for t in trials:
        spent["samples"] += t.samples
        spent["tokens"] += t.tokens
        spent["seconds"] += t.seconds
        if t.state == "stopped":
            at_full = {"samples": t.full_samples, "tokens": _extrapolate(t.tokens, t.samples, t.full_samples),
                       "seconds": _extrapolate(t.seconds, t.samples, t.full_samples)}
            for k in stopped_remaining:
                stopped_remaining[k] += max(0.0, at_full[k] - {"samples": t.samples, "tokens": t.tokens,
                                                               "seconds": t.seconds}[k])
        else:
            at_full = {"samples": t.samples, "tokens": t.tokens, "seconds": t.seconds}
        for k in full:
            full[k] += at_full[k]
    saved_fraction = stopped_remaining["samples"] / full["samples"] if full["samples"] else 0.0
    return {
        "spent": {"samples": spent["samples"], "tokens": spent["tokens"], "seconds": round(spent["seconds"], 2)},
        "stopped_trials_would_have_spent": {"samples": int(stopped_remaining["samples"]),
                                            "tokens": int(stopped_remaining["tokens"]),
                                            "seconds": round(stopped_remaining["seconds"], 2)},
        "without_pruning": {"samples": int(full["samples"]), "tokens": int(full["tokens"]),
                            "seconds": round(full["seconds"], 2)},
        "fraction_saved": round(saved_fraction, 4),
        "trials_stopped": sum(1 for t in trials if t.state == "stopped"),
    }
