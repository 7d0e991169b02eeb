"""A thin Ray Tune ``TrialScheduler`` around a pure pruner (``sweepd.pruners``).

It feeds every result to the pruner, answers CONTINUE/STOP, hands each explained ``Decision``
to ``on_decision`` (the engine stores them), and keeps the pruner's state across a resume:

- ``save(path)`` / ``restore(path)`` write and read the pruner's ``state_dict`` as JSON;
- with ``state_path``, the state is written there (temp file + rename) after a decision or a
  completion, at most every AUTOSAVE_EVERY_S (a state changed since is written at Tune's next
  step once that time is up; the last trial's completion is written at once), and read back on
  first use. Ray 2.x never checkpoints a scheduler itself: on ``Tuner.restore`` it unpickles the
  scheduler as it was when the sweep *started*, so this file is what lets a resumed sweep keep
  its rungs. Use one path per sweep. Writing it after every event cost 24 ms a write at 1,000
  trials, growing with them (benchmarks/README.md); a crash now loses at most the last few
  seconds of scores, which the resumed trials report again.

``on_decision`` is pickled with the scheduler into the experiment's ``tuner.pkl`` (it cannot be
passed again on ``Tuner.restore``), so make it a picklable callable.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.result import DEFAULT_METRIC
from ray.tune.schedulers.trial_scheduler import FIFOScheduler, TrialScheduler

from sweepd.protocol import REPLAYED_KEY
from sweepd.pruners import Decision, Pruner, make_pruner

logger = logging.getLogger(__name__)
AUTOSAVE_EVERY_S = 5.0  # the pruner state is written at most this often (see the docstring)


class EarlySignalScheduler(FIFOScheduler):
    # A STOP must act on the report it was decided on, not on a later buffered one.
    _supports_buffered_results = False

    def __init__(
        self,
        pruner: Pruner | Mapping[str, Any] | Any,  # a Pruner, or a spec for make_pruner
        *,
        metric: str | None = None,
        mode: str | None = None,
        on_decision: Callable[[Decision], None] | None = None,
        state_path: str | os.PathLike | None = None,
        trial_key: Callable[[Trial], str] | None = None,
    ):
        if mode is not None and mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        super().__init__()
        self.pruner = pruner if isinstance(pruner, Pruner) else make_pruner(pruner)
        self._metric, self._mode = metric, mode
        self.on_decision = on_decision
        # How trials are named to the pruner (and so in decisions); picklable, like on_decision.
        self.trial_key = trial_key
        self.state_path = Path(state_path) if state_path is not None else None
        self._state_loaded = False  # pickled as False into tuner.pkl: a restore reloads
        self._unsaved = False  # the pruner changed since the state was last written
        self._saved_at = -float("inf")  # time.monotonic() of that write
        self._num_stopped = 0
        self.pruner.set_objective(metric, mode)

    # ---- Ray's search-property handshake ----------------------------------------------------

    def set_search_properties(self, metric: str | None, mode: str | None, **spec) -> bool:
        # Refuse (Ray then raises) only when Tune's metric/mode contradict ours.
        if (self._metric and metric and metric != self._metric) or (
            self._mode and mode and mode != self._mode
        ):
            return False
        self._metric = metric or self._metric or DEFAULT_METRIC
        self._mode = mode or self._mode
        named = self._metric if self._metric != DEFAULT_METRIC else None
        self.pruner.set_objective(named, self._mode)
        return True

    # ---- trial events -----------------------------------------------------------------------

    def on_trial_add(self, tune_controller, trial: Trial):
        self._ensure_loaded()

    def choose_trial_to_run(self, tune_controller):
        # called at every step of Tune's loop: the place to write a state whose time has come
        if getattr(self, "_unsaved", False) and self._autosave_due():
            self._write_state()
        return super().choose_trial_to_run(tune_controller)

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        if result.get(REPLAYED_KEY):
            return TrialScheduler.CONTINUE  # a stored outcome replayed after a crash: nothing to judge
        self._ensure_loaded()
        decisions = self.pruner.on_result_all(self._key(trial), result)
        for decision in decisions:
            self._emit(decision)
        if not decisions:
            return TrialScheduler.CONTINUE
        self._autosave()
        if decisions[-1].stop:
            self._num_stopped += 1
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller, trial: Trial, result: dict):
        # Ray calls this for the trials we stopped too: the pruner ignores their "objective".
        self._ensure_loaded()
        objective = result.get(self._metric) if self._metric and result else None
        self.pruner.on_trial_complete(self._key(trial), objective)
        self._autosave(now=_last_live(tune_controller, trial))

    def on_trial_error(self, tune_controller, trial: Trial):
        self.on_trial_remove(tune_controller, trial)

    def on_trial_remove(self, tune_controller, trial: Trial):
        self._ensure_loaded()
        self.pruner.on_trial_remove(self._key(trial))
        self._autosave(now=_last_live(tune_controller, trial))

    def debug_string(self) -> str:
        return f"Using {self.pruner.describe()}: {self._num_stopped} trials stopped."

    def _key(self, trial: Trial) -> str:
        return self.trial_key(trial) if self.trial_key else trial.trial_id

    # ---- state ------------------------------------------------------------------------------

    def save(self, checkpoint_path: str):
        _write_json(Path(checkpoint_path), self.pruner.state_dict())

    def restore(self, checkpoint_path: str):
        self.pruner.load_state_dict(json.loads(Path(checkpoint_path).read_text()))
        self._state_loaded = True

    def _ensure_loaded(self) -> None:
        if not self._state_loaded:
            self._state_loaded = True
            if self.state_path is not None and self.state_path.exists():
                self.restore(str(self.state_path))
                logger.info("pruner state restored from %s", self.state_path)

    def _autosave(self, now: bool = False) -> None:
        if self.state_path is None:
            return
        self._unsaved = True
        if now or self._autosave_due():
            self._write_state()

    def _autosave_due(self) -> bool:
        since = time.monotonic() - getattr(self, "_saved_at", -float("inf"))
        return since >= AUTOSAVE_EVERY_S or since < 0  # < 0: a time from another process (unpickled)

    def _write_state(self) -> None:
        self.save(str(self.state_path))
        self._unsaved, self._saved_at = False, time.monotonic()

    def _emit(self, decision: Decision) -> None:
        logger.info("trial %s: %s", decision.trial_id, decision.reason)
        if self.on_decision is None:
            return
        try:
            self.on_decision(decision)
        except Exception:  # a storage hiccup must not take the sweep down
            logger.exception("on_decision failed for %s", decision.trial_id)


def _last_live(tune_controller, trial: Trial) -> bool:
    """Is ``trial`` the last one running or waiting (the sweep may be ending: write its state now)?"""
    if tune_controller is None:
        return True
    return not any(t is not trial for t in tune_controller.get_live_trials())


def _write_json(path: Path, data: dict) -> None:
    """Write to a temp file in the same folder, then rename: never a half-written state."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, allow_nan=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
