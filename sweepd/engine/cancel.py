"""Cancelling a running sweep: the API marks it `cancelled` in the store; this Ray Tune stopper
sees that within a second and stops every trial, so `Tuner.fit` returns."""

from __future__ import annotations

import time

from ray.tune import Stopper

from sweepd.engine.recorder import _StoreClient
from sweepd.protocol import SweepState
from sweepd.store import repo
from sweepd.store.retry import StoreUnavailable

CHECK_EVERY_SECONDS = 1.0


class CancelStopper(Stopper, _StoreClient):
    def __init__(self, db_url: str, sweep_id: str) -> None:
        _StoreClient.__init__(self, db_url, sweep_id)
        self._last_check = 0.0
        self._cancelled = False

    def __getstate__(self) -> dict:
        state = _StoreClient.__getstate__(self)
        state["_last_check"], state["_cancelled"] = 0.0, False
        return state

    def __call__(self, trial_id: str, result: dict) -> bool:
        return self.stop_all()

    def stop_all(self) -> bool:
        now = time.monotonic()
        if not self._cancelled and now - self._last_check >= CHECK_EVERY_SECONDS:
            self._last_check = now
            try:  # retried through a transient outage (the recorder would wait for it anyway)
                self._cancelled = self.transact(self._is_cancelled, "cancel check")
            except StoreUnavailable:  # down past the retry bound: the driver steps aside
                raise
            except Exception:  # noqa: BLE001 - anything else: look again next time
                pass
        return self._cancelled

    def _is_cancelled(self, session) -> bool:
        sweep = repo.get_sweep(session, self.sweep_id)
        return sweep is not None and sweep.state == SweepState.cancelled
