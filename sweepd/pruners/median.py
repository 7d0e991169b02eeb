"""Median stopping, the baseline: at each check point (grace, grace + interval, ... below
max_t) a trial stops if its score is worse than the median of the other trials' scores
recorded at that point. It needs ``min_samples`` other scores; a score equal to the median
continues.
"""

from __future__ import annotations

import statistics
from typing import Any

from sweepd.pruners.base import fmt_num
from sweepd.pruners.rungs import RungPruner, Verdict, _int_at_least, _positive


class MedianPruner(RungPruner):
    name = "median"
    _rung_keys = ("grace", "interval", "time_attr", "max_t")

    def __init__(self, *, interval: float | None = None, min_samples: int = 3, **options: Any):
        super().__init__(**options)
        interval = self.grace if interval is None else interval  # None: every `grace`
        _positive("interval", interval)
        _int_at_least("min_samples", min_samples, 1)
        self.interval, self.min_samples = interval, min_samples

    def rung_time(self, index: int) -> float:
        return self.grace + self.interval * index

    @property
    def needed(self) -> int:
        return self.min_samples + 1

    def config(self):
        return {**super().config(), "interval": self.interval, "min_samples": self.min_samples}

    def _judge(self, trial_id, scores, what):
        score = scores[trial_id]
        rank = 1 + sum(s < score for s in scores.values())
        others = [s for t, s in scores.items() if t != trial_id]
        if len(others) < self.min_samples:
            sentence = (
                f"only {len(others)} other score{'s' if len(others) != 1 else ''} at this point, "
                f"fewer than {self.min_samples} needed to decide"
            )
            return Verdict(stop=False, rank=rank, keep=None, cutoff=None, sentence=sentence)
        median = statistics.median(others)
        shown = fmt_num(self.signal.display(median))
        worse = score > median
        sentence = (
            f"{what} is {'worse than' if worse else 'no worse than'} the median {shown} "
            f"of {len(others)} other trials at this point"
        )
        return Verdict(stop=worse, rank=rank, keep=None, cutoff=median, sentence=sentence)

    def describe(self) -> str:
        return (
            f"median stopping on {self.signal_name}: every {self.interval:,} {self.time_attr} "
            f"from {self.grace:,}"
        )
