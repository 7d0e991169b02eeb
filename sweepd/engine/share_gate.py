"""The searcher's share of the cluster: how many trials the sweep may run at once, as the service's
supervisor granted it in the store (``Sweep.trial_limit``; sweepd/service/shares.py decides it).

Read before each suggestion, at most every RECHECK_S seconds, so a limit the supervisor changes
while the sweep runs (another sweep arrived, or left, or its priority changed) takes effect at
the next free slot. None: no grant (a sweep run alone by `sweepd run`, or a service without
sharing): only the sweep's own max_concurrent applies. Pickled with the searcher's state: it holds
the database URL and opens its engine lazily.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)
RECHECK_S = 0.5
WAITING_ASK_S = 0.5  # a sweep with no trial live asks its searcher this often (Ray Tune's own: 1 s)


class ShareGate:
    def __init__(self, db_url: str, sweep_id: str) -> None:
        self.db_url, self.sweep_id = db_url, sweep_id
        self._engine = None
        self._limit: int | None = None
        self._read_at = -float("inf")

    def __getstate__(self) -> dict:
        return {"db_url": self.db_url, "sweep_id": self.sweep_id}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["db_url"], state["sweep_id"])

    def limit(self) -> int | None:
        """The sweep's running-trial limit now (None: none granted). A store that does not answer
        leaves the last limit read in force; the driver's other store calls handle the outage."""
        now = time.monotonic()
        if now - self._read_at < RECHECK_S:
            return self._limit
        from sweepd.store import repo
        from sweepd.store.db import make_engine, session_scope

        try:
            if self._engine is None:
                self._engine = make_engine(self.db_url)
            with session_scope(self._engine) as s:
                self._limit = repo.sweep_trial_limit(s, self.sweep_id)
            self._read_at = now
        except Exception as err:  # noqa: BLE001 - see the docstring
            log.warning("sweep %s: cannot read its trial limit (%s); keeping %s", self.sweep_id, err, self._limit)
        return self._limit

    def allows(self, running: int) -> bool:
        """May a sweep with ``running`` live trials (running, or waiting in Ray for resources) start
        another?"""
        limit = self.limit()
        return limit is None or running < limit


def poll_searcher_briefly() -> None:
    """Ray Tune, left with no trial running or pending while its searcher suggests none (a sweep
    whose share is 0 for now), polls the searcher for up to 10 minutes without tending its actors,
    so the actor of the trial that just ended keeps its CPUs and GPUs and the sweep whose turn it
    is never gets them. Ask once per step instead: the controller's step goes on to release the
    actor, and the next step asks again. Between two such asks, wait WAITING_ASK_S: with no trial
    live and no actor left to stop, the step's wait for an actor event returns at once, and the
    driver would spin a whole core (at normal priority, against Ray's trial workers at nice 15) for
    as long as it waits for its turn. (TuneController's _update_trial_queue and _actor_manager are
    private: checked here, and left as they are if they ever change.)"""
    import inspect

    from ray.tune.execution.tune_controller import TuneController

    original = TuneController._update_trial_queue
    if getattr(original, "_sweepd_brief", False):
        return
    if list(inspect.signature(original).parameters) != ["self", "blocking", "timeout"]:
        log.warning("Ray Tune's TuneController._update_trial_queue changed; sweeps sharing a cluster may "
                    "hold a finished trial's resources while they wait for their turn")
        return

    def update_trial_queue(self, blocking: bool = False, timeout: int = 600):
        added = original(self, blocking=blocking, timeout=0)
        # blocking: no trial is live; wait only once no actor is left to stop either
        if blocking and not added and not getattr(getattr(self, "_actor_manager", None), "num_live_actors", 1):
            time.sleep(WAITING_ASK_S)
        return added

    update_trial_queue._sweepd_brief = True
    TuneController._update_trial_queue = update_trial_queue
