"""Names shared across sweepd's layers: what a trial reports, the states a sweep and a trial pass
through, and the keys the engine adds to Ray Tune's configs and results.

Everything here is plain data with no dependencies beyond the trainer's own contract, so any layer
(store, engine, service, CLI, API, benchmarks) may import it without pulling in Ray or the database.
"""

from __future__ import annotations

import enum

from trainer.reporting import STEP_KEYS

# ---- what a trial reports ------------------------------------------------------------------

# One metric point per optimizer step (the trainer CLI's JSONL contract); the store keeps these.
METRIC_KEYS: tuple[str, ...] = STEP_KEYS


# ---- states --------------------------------------------------------------------------------


class SweepState(str, enum.Enum):
    # the data preflight runs (POST /sweeps, off the request); then queued, or failed with its
    # file:line error. The supervisor never starts a validating sweep.
    validating = "validating"
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (SweepState.succeeded, SweepState.failed, SweepState.cancelled)

    @property
    def label(self) -> str:
        """How people read it (CLI, dashboard): ``validating data``; else the value."""
        return SWEEP_STATE_LABELS.get(self.value, self.value)


class TrialState(str, enum.Enum):
    pending = "pending"
    running = "running"
    completed = "completed"
    stopped = "stopped"  # stopped early by the pruner
    failed = "failed"
    diverged = "diverged"
    oom = "oom"  # ran out of memory (GPU, or the CPU's): its reason names the config and what to change

    @property
    def terminal(self) -> bool:
        return self not in (TrialState.pending, TrialState.running)


# Trial states in display order, and the finished ones among them (as plain strings).
TRIAL_STATES: tuple[str, ...] = tuple(s.value for s in TrialState)
FINISHED_TRIAL_STATES: tuple[str, ...] = tuple(s.value for s in TrialState if s.terminal)
ACTIVE_SWEEP_STATES: tuple[str, ...] = tuple(s.value for s in SweepState if not s.terminal)
# Sweep states that read differently from their value (the CLI and the dashboard show these).
SWEEP_STATE_LABELS: dict[str, str] = {SweepState.validating.value: "validating data"}


# ---- sharing one cluster (sweepd/service/shares.py) -----------------------------------------

# A sweep's priority, lowest first, and its weight in the cluster's fair share: a high sweep's
# share is twice a normal one's, four times a low one's.
PRIORITY_WEIGHTS: dict[str, int] = {"low": 1, "normal": 2, "high": 4}
PRIORITIES: tuple[str, ...] = tuple(PRIORITY_WEIGHTS)


# ---- keys the engine adds to Tune's configs and results ------------------------------------

# Only a trial's final result carries FINAL_MARKER: a trial that ends without it was stopped, and
# Optuna records it as PRUNED rather than COMPLETE with a partial value (engine/search.py).
FINAL_MARKER = "final_status"
NUMBER_KEY = "trial_number"  # added to each config by the searcher: the trial's number in its sweep
REPLAYED_KEY = "replayed"  # in a result that repeats a trial the store holds as finished
