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
    for t in (t for t in trials if t.state not in FINISHED_TRIAL_STATES):  # nothing is left RUNNING afterwards
        repo.upsert_trial(session, sweep_id, t.number, state=TrialState.failed,
                          error="sweep cancelled" if cancelled else "sweep ended before the trial finished")
    if best is not None:
        repo.set_sweep_state(session, sweep_id, SweepState.succeeded, only_from=ACTIVE_SWEEP_STATES,
                             message=f"best trial {best.number}: {spec.objective.metric}={best.objective:.4g}")
    else:
        repo.set_sweep_state(session, sweep_id, SweepState.failed, error="no trial completed with an objective",
                             only_from=ACTIVE_SWEEP_STATES)
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
        "best": None if best is None else {"trial_id": best.id, "number": best.number, "config": best.config,
                                           "objective": best.objective},
        "trials": [{"id": t.id, "number": t.number, "config": t.config, "state": t.state,
                    "objective": t.objective, "stopped_at": t.stopped_at, "reason": t.reason or t.error}
                   for t in trials],
        "ledger": sweep.ledger,
    }
