"""The supervisor's bookkeeping of fair shares: every tick, what each running sweep may run at once
(its grant, decided by sweepd/service/shares.py) and why a sweep waits, written to the store where
drivers (engine/share_gate.py), the API and the dashboard read them.

Grants are decided every tick from the account of how far each sweep is behind its fair share
(``owed``, running-trial-seconds), so the next free slot goes to the sweep most owed, and sweeps
that share one slot take turns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from sqlalchemy import select

from sweepd.protocol import FINISHED_TRIAL_STATES
from sweepd.service.shares import Demand, Grant, fair_shares
from sweepd.store import repo
from sweepd.store.db import session_scope
from sweepd.store.models import Sweep

log = logging.getLogger("sweepd.service.shares")
OWED_BOUND_S = 3600.0  # running-trial-seconds: an old debt must not decide the turns for hours


def per_trial_resources(resources) -> dict[str, float]:
    """What one trial of a spec's resources holds on the cluster (every worker of it)."""
    workers = resources.workers_per_trial
    return {"CPU": workers * resources.cpus_per_worker, "GPU": workers * resources.gpus_per_worker}


class ShareKeeper:
    def __init__(self, engine, cluster) -> None:
        self.engine, self.cluster = engine, cluster
        self.owed: dict[str, float] = {}
        self.grants: dict[str, Grant] = {}
        self._limits: dict[str, int] = {}
        self._at: float | None = None
        # what the store holds, as this keeper wrote it (None: unknown, so the first tick writes all)
        self._written: dict[str, tuple[int | None, str | None]] | None = None
        self._specs: dict[tuple[str, int], tuple[dict[str, float], int, int]] = {}

    def _spec_facts(self, sweep_id: str, extensions: int, doc: dict) -> tuple[dict[str, float], int, int]:
        """(resources per trial, max_concurrent, planned trials) of a stored spec, read once."""
        key = (sweep_id, extensions or 0)
        if key not in self._specs:
            from sweepd.spec import SweepSpec

            spec = SweepSpec.from_stored(doc)
            self._specs[key] = (per_trial_resources(spec.resources), spec.search.max_concurrent,
                                spec.planned_trials)
        return self._specs[key]

    def demands(self, running_ids: Sequence[str]) -> list[Demand]:
        with session_scope(self.engine) as s:
            rows = s.execute(select(Sweep.id, Sweep.priority, Sweep.spec, Sweep.extensions)
                             .where(Sweep.id.in_(list(running_ids)))).all()
            counts = repo.trial_counts(s, running_ids)
        demands = []
        for sweep_id, priority, doc, extensions in rows:
            try:
                per_trial, max_concurrent, planned = self._spec_facts(sweep_id, extensions, doc)
            except Exception as err:  # noqa: BLE001 - its driver fails it with the reason; no share meanwhile
                log.warning("sweep %s: cannot read its spec for its share: %s", sweep_id, err)
                continue
            c = counts.get(sweep_id, {})
            finished = sum(n for state, n in c.items() if state in FINISHED_TRIAL_STATES)
            live = c.get("running", 0) + c.get("pending", 0)
            demands.append(Demand(sweep_id, priority or "normal", per_trial,
                                  max_trials=max(0, min(max_concurrent, planned - finished)), running=live))
        return sorted(demands, key=lambda d: d.sweep_id)

    def tick(self, running_ids: Sequence[str], waiting_queued: dict[str, str | None]) -> None:
        """Decide and write the grants of the running sweeps, and what the
        queued ones wait for (``waiting_queued``: sweep id -> sentence or None)."""
        capacity = self.cluster.capacity() if self.cluster is not None else None
        now = time.monotonic()
        demands = self.demands(running_ids) if capacity and running_ids else []
        dt = 0.0 if self._at is None else now - self._at
        self._at = now
        ids = {d.sweep_id for d in demands}
        self.owed = {k: v for k, v in self.owed.items() if k in ids}
        if len(demands) > 1:  # a sweep alone owes nothing and is owed nothing
            for d in demands:
                last = self.grants.get(d.sweep_id)  # None: it has just arrived
                behind = 0.0 if last is None else self.owed.get(d.sweep_id, 0.0) + (last.fair_trials - d.running) * dt
                self.owed[d.sweep_id] = max(-OWED_BOUND_S, min(OWED_BOUND_S, behind))
        else:
            self.owed.clear()
        self._specs = {k: v for k, v in self._specs.items() if k[0] in ids}  # ended sweeps: forgotten
        # decided every tick: the turns follow what each sweep is owed before a slot frees, so the
        # sweep whose trial ends does not take the slot again just because its grant was not
        # yet moved on (no running trial is stopped: a grant only says who may start one)
        self.grants = fair_shares(demands, capacity or {}, self.owed)
        limits = {k: g.trial_limit for k, g in self.grants.items()}
        if limits != self._limits and len(demands) > 1:
            log.info("shares of %s: %s", capacity, {k: (g.trial_limit, round(g.fair_trials, 2))
                                                    for k, g in self.grants.items()})
        self._limits = limits
        wanted: dict[str, tuple[int | None, str | None]] = {
            sweep_id: (grant.trial_limit, grant.waiting_for) for sweep_id, grant in self.grants.items()}
        wanted.update({sweep_id: (None, why) for sweep_id, why in waiting_queued.items()})
        written = self._written
        for sweep_id in set(written or {}) - set(wanted):  # ended, or no longer sharing: clear
            wanted[sweep_id] = (None, None)
        changed = {k: v for k, v in wanted.items() if written is None or written.get(k, (None, None)) != v}
        if changed:
            with session_scope(self.engine) as s:
                for sweep_id, (limit, why) in changed.items():
                    repo.set_share(s, sweep_id, trial_limit=limit, waiting_for=why)
        self._written = {k: v for k, v in wanted.items() if v != (None, None)}
