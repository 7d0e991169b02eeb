"""A trial as a Ray Tune function trainable: the trainer with a Tune reporter.

Every optimizer step is reported (the pruner decides on them); the objective metrics are reported
in the final result, which alone carries FINAL_MARKER: a trial that ends without it was stopped,
and Optuna records it as PRUNED rather than COMPLETE with a partial value (see search.py), even
when its last report was an interim evaluation.
"""

from __future__ import annotations

import os

from ray import tune

FINAL_MARKER = "final_status"
NUMBER_KEY = "trial_number"  # added to each config by the searcher (search.py)


class TuneReporter:
    """trainer.reporting.Reporter that forwards to ray.tune.report."""

    def step(self, metrics: dict) -> None:
        tune.report({k: v for k, v in metrics.items() if v is not None and not isinstance(v, dict)})

    def final(self, result: dict) -> None:
        flat = {k: v for k, v in result.items() if not isinstance(v, dict) and v is not None}
        flat[FINAL_MARKER] = result["status"]
        if result.get("status") == "diverged":  # no objective for a diverged trial
            flat = {k: v for k, v in flat.items() if k in ("status", "steps", "samples", "tokens", "seconds",
                                                            "reason", FINAL_MARKER)}
        tune.report(flat)

    def should_stop(self) -> bool:
        return False  # Ray Tune stops the trial itself


def replay_if_finished(db_url: str, sweep_id: str, number: int) -> bool:
    """After a crash, Tune may rerun a trial the store already holds as finished: replay its
    final result instead of training again. Returns True when it did."""
    from sweepd.store import repo
    from sweepd.store.db import make_engine, session_scope

    engine = make_engine(db_url)
    try:
        with session_scope(engine) as s:
            trial = repo.get_trial_by_number(s, sweep_id, number)
            state = trial.state if trial else None
            final = dict(trial.metrics_final or {}) if trial else {}
    finally:
        engine.dispose()
    if state in ("completed", "diverged") and final.get(FINAL_MARKER):
        tune.report(final)
        return True
    return state == "stopped"  # ends with no final result: recorded as stopped again


def run_trial_in_tune(params: dict, *, spec_json: str, db_url: str, sweep_id: str,
                      models_dir: str | None = None) -> None:
    """The function Ray Tune runs for each trial; `params` are the sampled hyperparameters."""
    import torch

    from sweepd.spec import SweepSpec
    from trainer.loop import run_trial

    params = dict(params)
    number = params.pop(NUMBER_KEY, None)
    if number is not None and replay_if_finished(db_url, sweep_id, int(number)):
        return
    spec = SweepSpec.from_stored(spec_json)
    cpus = spec.resources.cpus_per_worker
    torch.set_num_threads(max(1, int(cpus)))
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")
    output_dir = None
    if models_dir:  # every finished trial saves its model; the sweep keeps only the best one
        tag = tune.get_context().get_trial_name()
        output_dir = f"{models_dir}/{tag}"
    cfg = spec.trial_config(params, output_dir=output_dir)
    run_trial(cfg, TuneReporter())
