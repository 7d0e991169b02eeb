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
RECHECK_S = 1.0


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
        """May a sweep with ``running`` live trials start another?"""
        limit = self.limit()
        return limit is None or running < limit
