"""Fair shares of one cluster among the sweeps running on it (issue 16): pure, unit-testable.

Each running sweep gets a running-trial limit (its *grant*); its driver's searcher suggests no
trial beyond it (sweepd/engine/share_gate.py). How the limits are decided:

1. A trial's size is its dominant share of the cluster: the largest fraction of any one resource
   (CPUs, GPUs) it asks for (dominant resource fairness, as Mesos, YARN and Ray itself use it).
2. The cluster is split by weighted water-filling over those fractions: weights by priority
   (protocol.PRIORITY_WEIGHTS: low 1, normal 2, high 4), and no sweep gets more than it can use
   (its max_concurrent, or the trials it has left); what one cannot use goes to the others.
   A sweep's fair share, in trials, is its fraction over its trial size: 2 normal sweeps on
   8 GPUs get 4 each; a high one arriving gets 4 of 8 and the normal ones 2 each.
3. Limits are whole trials: each sweep gets the floor of its fair share, and the slots left over
   go one at a time to the sweeps most owed (running-trial-seconds below their fair share so far,
   kept by the caller), so 4 sweeps on 2 slots take turns and each averages half a trial.

A limit never stops a running trial (no preemption): a sweep whose limit falls runs on until its
trials end, then suggests none until it is under its limit again, and the slot goes to whoever
the limit now favours. Ray's scheduler still guards the resources themselves, so the cluster is
never oversubscribed whatever the limits say.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sweepd.protocol import PRIORITY_WEIGHTS

EPS = 1e-9


@dataclass(frozen=True)
class Demand:
    """A running sweep, as the share computation sees it."""

    sweep_id: str
    priority: str
    per_trial: Mapping[str, float]  # resource name ("CPU", "GPU") -> what one trial asks for
    max_trials: int  # the most trials it could run at once now: max_concurrent, or the trials left
    running: int = 0  # its trials running now

    @property
    def weight(self) -> int:
        return PRIORITY_WEIGHTS.get(self.priority, PRIORITY_WEIGHTS["normal"])


@dataclass(frozen=True)
class Grant:
    trial_limit: int
    fair_trials: float  # its fair share, in trials (a fraction when it shares slots in turns)
    waiting_for: str | None  # why it runs fewer trials than it could; None when it does not wait


def trial_size(per_trial: Mapping[str, float], capacity: Mapping[str, float]) -> float:
    """A trial's dominant share of the cluster; inf when it needs a resource the cluster lacks,
    0 when it asks for nothing the cluster counts."""
    size = 0.0
    for name, amount in per_trial.items():
        if amount <= 0:
            continue
        have = capacity.get(name, 0.0)
        if have <= 0:
            return math.inf
        size = max(size, amount / have)
    return size


def _water_fill(demands: Sequence[Demand], sizes: dict[str, float]) -> dict[str, float]:
    """Fractions of the cluster, by weight, none above what its sweep can use."""
    fraction: dict[str, float] = {}
    open_ = [d for d in demands if 0 < sizes[d.sweep_id] < math.inf and d.max_trials > 0]
    left = 1.0
    while open_:
        per_weight = left / sum(d.weight for d in open_)
        capped = [d for d in open_ if d.max_trials * sizes[d.sweep_id] <= d.weight * per_weight + EPS]
        if not capped:
            for d in open_:
                fraction[d.sweep_id] = d.weight * per_weight
            break
        for d in capped:
            fraction[d.sweep_id] = d.max_trials * sizes[d.sweep_id]
            left -= fraction[d.sweep_id]
        open_ = [d for d in open_ if d.sweep_id not in fraction]
    return fraction


def _fits(used: Mapping[str, float], per_trial: Mapping[str, float], capacity: Mapping[str, float]) -> bool:
    return all(used.get(name, 0.0) + amount <= capacity.get(name, 0.0) + EPS
               for name, amount in per_trial.items() if amount > 0)


def fair_shares(demands: Sequence[Demand], capacity: Mapping[str, float],
                owed: Mapping[str, float] | None = None) -> dict[str, Grant]:
    """Each running sweep's grant. ``owed``: sweep id -> running-trial-seconds it is behind its fair
    share (ahead: negative); the leftover slots go to the most owed first."""
    owed = owed or {}
    sizes = {d.sweep_id: trial_size(d.per_trial, capacity) for d in demands}
    fraction = _water_fill(demands, sizes)
    fair = {d.sweep_id: (d.max_trials if sizes[d.sweep_id] == 0 else
                         fraction.get(d.sweep_id, 0.0) / sizes[d.sweep_id] if sizes[d.sweep_id] < math.inf else 0.0)
            for d in demands}
    limit = {d.sweep_id: min(d.max_trials, math.floor(fair[d.sweep_id] + EPS)) for d in demands}
    used: dict[str, float] = {}
    for d in demands:
        if sizes[d.sweep_id] > 0:
            for name, amount in d.per_trial.items():
                used[name] = used.get(name, 0.0) + amount * limit[d.sweep_id]
    # the slots left over, one at a time: most owed first, then the larger remainder, then priority
    order = sorted((d for d in demands if 0 < sizes[d.sweep_id] < math.inf),
                   key=lambda d: (-owed.get(d.sweep_id, 0.0), -(fair[d.sweep_id] - limit[d.sweep_id]), -d.weight))
    given = True
    while given:
        given = False
        for d in order:
            if limit[d.sweep_id] < d.max_trials and _fits(used, d.per_trial, capacity):
                limit[d.sweep_id] += 1
                for name, amount in d.per_trial.items():
                    used[name] = used.get(name, 0.0) + amount
                given = True
    slots = {d.sweep_id: _slots(d.per_trial, capacity) for d in demands}
    return {d.sweep_id: Grant(limit[d.sweep_id], fair[d.sweep_id],
                              _waiting_for(d, limit[d.sweep_id], fair[d.sweep_id], sizes[d.sweep_id],
                                           slots[d.sweep_id], len(demands)))
            for d in demands}


def _slots(per_trial: Mapping[str, float], capacity: Mapping[str, float]) -> int:
    """How many such trials the whole cluster holds."""
    fits = [int(capacity.get(name, 0.0) // amount + EPS) for name, amount in per_trial.items() if amount > 0]
    return min(fits) if fits else 0


def _waiting_for(d: Demand, limit: int, fair: float, size: float, slots: int, sweeps: int) -> str | None:
    if size == math.inf:
        needs = ", ".join(f"{amount:g} {name}" for name, amount in d.per_trial.items() if amount > 0)
        return f"a cluster that has what one trial needs ({needs})"
    if limit >= d.max_trials:
        return None
    share = f"{fair:.2g}" if fair < 10 else f"{fair:.0f}"
    text = f"its fair share of the cluster: {share} of {slots} trial slots, {sweeps} sweeps sharing"
    return text + ("; it runs when its turn comes" if limit == 0 else "")
