"""After a sweep's trials have finished: pick the best trial, write the ledger, set the state,
and build the result document (`sweepd run --out`, the API's report)."""

from __future__ import annotations

import shutil
from pathlib import Path

from sweepd.engine.budget import TrialUse, budget_status
from sweepd.engine.ledger import TrialCost, compute_ledger
from sweepd.protocol import ACTIVE_SWEEP_STATES, FINISHED_TRIAL_STATES, SweepState, TrialState
from sweepd.spec import SweepSpec
from sweepd.store import repo
from sweepd.store.models import Trial


def best_trial(trials: list[Trial], mode: str) -> Trial | None:
    scored = [t for t in trials if t.state == TrialState.completed and t.objective is not None]
    if not scored:
        return None
    return (min if mode == "min" else max)(scored, key=lambda t: (t.objective, t.number))


def uniform_failure(trials: list[Trial], k: int = 1) -> tuple[int, str] | None:
    """(n, message) when the trials that finished so far all failed, at least ``k`` of them,
    every one with the same message; else None. A trial that completed, diverged or was stopped
    by the pruner shows trials can run: no verdict then. Running out of memory counts as failing,
    with its reason as the message (the same config runs out the same way)."""
    ended = [t for t in trials if t.state in FINISHED_TRIAL_STATES]
    failed = [t for t in ended if t.state in (TrialState.failed, TrialState.oom)]
    if not failed or len(failed) < max(1, k) or len(failed) != len(ended):
        return None
    messages = {((t.error if t.state == TrialState.failed else t.reason) or "").strip() for t in failed}
    if len(messages) != 1 or not next(iter(messages)):
        return None
    return len(failed), messages.pop()


def failure_message(n: int, message: str) -> str:
    return f"all {n} trial{'s' if n != 1 else ''} failed: {message}"


def _full_samples(spec: SweepSpec, trial: Trial) -> int:
    batch = int(trial.config.get("effective_batch_size") or spec.batch_sizes()[0])
    full = spec.full_budget(batch, "samples")
    return int(full) if full is not None else int(trial.samples)


def ledger_for(spec: SweepSpec, trials: list[Trial]) -> dict:
    return compute_ledger([TrialCost(t.state, int(t.samples), int(t.tokens), float(t.seconds),
                                     _full_samples(spec, t)) for t in trials])


def finalize_sweep(session, spec: SweepSpec, sweep_id: str, *, models_root: Path | None = None) -> dict:
    trials = repo.list_trials(session, sweep_id)
    best = best_trial(trials, spec.objective.mode)
    repo.set_best_trial(session, sweep_id, best.id if best else None)
    ledger = ledger_for(spec, trials)
    budget = budget_status(spec, [TrialUse(t.number, t.state, int(t.samples), float(t.seconds), t.config or {})
                                  for t in trials], active=False)
    if budget is not None:  # a compute-budget sweep: what it spent of its budget
        ledger["budget"] = budget
    if models_root is not None and best is not None:
        ledger["best_model_dir"] = _keep_only_best_model(models_root, (best.metrics_final or {}).get("model_dir"))
    repo.update_ledger(session, sweep_id, ledger, replace=True)
    cancelled = repo.get_sweep(session, sweep_id).state == SweepState.cancelled
    # trials the pruner did not stop (no reason) were stopped with the sweep
    same = uniform_failure([t for t in trials if not (t.state == TrialState.stopped and not t.reason)])
    cut_short = (f"not run to the end: the sweep stopped after {same[0]} trials failed with the same error"
                 if same is not None and best is None and not cancelled else None)
    for t in (t for t in trials if t.state not in FINISHED_TRIAL_STATES):  # nothing is left RUNNING afterwards
        ended = "sweep cancelled" if cancelled else cut_short or "sweep ended before the trial finished"
        repo.upsert_trial(session, sweep_id, t.number, state=TrialState.failed, error=ended)
    if best is not None:
        repo.set_sweep_state(session, sweep_id, SweepState.succeeded, only_from=ACTIVE_SWEEP_STATES,
                             message=f"best trial {best.number}: {spec.objective.metric}={best.objective:.4g}")
    else:
        error = failure_message(*same) if same is not None else "no trial completed with an objective"
        if cut_short is not None:
            for t in (t for t in trials if t.state == TrialState.stopped and not t.reason):
                repo.upsert_trial(session, sweep_id, t.number, reason=cut_short)
        repo.set_sweep_state(session, sweep_id, SweepState.failed, error=error, only_from=ACTIVE_SWEEP_STATES)
    return result_document(session, sweep_id)


def _keep_only_best_model(root: Path, best_dir: str | None) -> str | None:
    keep = Path(best_dir).resolve() if best_dir else None
    for d in root.glob("*"):
        if d.is_dir() and d.resolve() != keep:
            shutil.rmtree(d, ignore_errors=True)
    return str(keep) if keep is not None and keep.exists() else None


def result_document(session, sweep_id: str) -> dict:
    sweep = repo.get_sweep(session, sweep_id)
    trials = repo.list_trials(session, sweep_id)
    best = next((t for t in trials if t.id == sweep.best_trial_id), None)
    return {
        "sweep_id": sweep.id,
        "name": sweep.name,
        "state": sweep.state,
        "error": sweep.error,
        "best": None if best is None else {"trial_id": best.id, "number": best.number, "config": best.config,
                                           "objective": best.objective},
        "trials": [{"id": t.id, "number": t.number, "config": t.config, "state": t.state,
                    "objective": t.objective, "stopped_at": t.stopped_at, "reason": t.reason or t.error,
                    **({"error_detail": t.error_detail} if t.error_detail else {})}
                   for t in trials],
        "ledger": sweep.ledger,
    }
