"""The sweeps `benchmarks/orchestration.py` times: one replay sweep through sweepd's real engine,
and the same sweep through stock Ray Tune, each in a process of its own (a fresh Ray, and none of
the other's environment: sweepd's ``ensure_ray`` sets Tune variables such as
TUNE_GLOBAL_CHECKPOINT_S).

    .venv/bin/python -m benchmarks.orchestration_sweeps sweepd|stock --trials N --concurrency C --out FILE.json

Both replay the same curves with the same function (trainer/replay.py ``replay_trial``): the curve
bank, the run nearest each trial's (batch, learning rate), at most ``REPORTS`` reported steps
``SECONDS_PER_STEP`` apart (about 2 s a trial), TPE over batch {8, 32, 128} x learning rate
[2e-4, 2e-2] (log), ASHA on the training loss at 512 and 1,536 samples (reduction factor 3).
Each trial asks for ``cpus / concurrency`` CPUs, so ``concurrency`` trials run at once.

The timed part is the sweep alone: Ray is started before the clock starts, with the arguments
sweepd's ``ensure_ray`` uses. ``replay_seconds`` is each trial's replay clock at its last report
(the time it was meant to take); its sum over the concurrency is the ideal wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPORTS = 50
SECONDS_PER_STEP = 0.04


def replay_settings(reports: int = REPORTS, seconds_per_step: float = SECONDS_PER_STEP) -> dict[str, Any]:
    return {"curves": "builtin:curve_bank", "seconds_per_step": seconds_per_step, "max_reports": reports}

BATCHES = [8, 32, 128]
LR_RANGE = [2.0e-4, 2.0e-2]
BUDGET_SAMPLES = 4096
ASHA = {"grace": 512, "reduction_factor": 3, "time_attr": "samples"}


def sweep_spec(trials: int, concurrency: int, cpus_per_trial: float, replay: dict[str, Any]) -> dict[str, Any]:
    """The replay sweep as a sweepd spec."""
    return {
        "name": "orchestration-bench",
        "model": {"path": "builtin:replay", "replay": dict(replay)},
        "search": {"algorithm": "tpe", "num_trials": trials, "max_concurrent": concurrency, "seed": 0,
                   "warm_start": "none",
                   "space": {"effective_batch_size": {"choice": BATCHES},
                             "learning_rate": {"loguniform": LR_RANGE}}},
        "budget": {"max_samples": BUDGET_SAMPLES},
        "pruner": {"type": "asha", "signal": "loss", **ASHA},
        "objective": {"metric": "eval_loss", "mode": "min"},
        "resources": {"cpus_per_worker": cpus_per_trial, "max_failures": 0},
    }


def start_ray() -> None:
    """Ray as sweepd's ensure_ray starts it (the same arguments for both sweeps)."""
    import ray

    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, num_cpus=os.cpu_count())


# ---- sweepd -----------------------------------------------------------------------------------


def run_sweepd(trials: int, concurrency: int, cpus_per_trial: float, home: Path, replay: dict[str, Any],
               profile: Path | None = None) -> dict[str, Any]:
    """`sweepd run` minus the CLI: run_local (create the sweep, drive it with sweepd's Tune
    engine, finalize) on a SQLite store in ``home``."""
    os.environ["SWEEPD_HOME"] = str(home)
    os.environ.pop("SWEEPD_DATABASE_URL", None)
    from sweepd.engine.tuner import ensure_ray
    from sweepd.service.driver import run_local
    from sweepd.settings import get_settings
    from sweepd.spec import parse_spec
    from sweepd.store import upgrade

    get_settings.cache_clear()
    spec = parse_spec(sweep_spec(trials, concurrency, cpus_per_trial, replay))
    db_url = get_settings().resolved_database_url
    home.mkdir(parents=True, exist_ok=True)
    upgrade(db_url)
    ensure_ray(None)
    started = time.perf_counter()
    with profiled(profile):
        result = run_local(spec, new=True)
    wall = time.perf_counter() - started
    return {"wall_seconds": wall, **stored_trials(db_url, result["sweep_id"]), "state": result["state"]}


def stored_trials(db_url: str, sweep_id: str) -> dict[str, Any]:
    """What the store holds of the sweep: each trial's state and replay seconds, points stored."""
    from sqlalchemy import func, select

    from sweepd.store.db import make_engine, session_scope
    from sweepd.store.models import MetricPoint, Trial

    engine = make_engine(db_url)
    try:
        with session_scope(engine) as s:
            rows = s.execute(select(Trial.state, Trial.seconds).where(Trial.sweep_id == sweep_id)).all()
            points = s.scalar(select(func.count()).select_from(MetricPoint).join(Trial, Trial.id == MetricPoint.trial_id)
                              .where(Trial.sweep_id == sweep_id))
    finally:
        engine.dispose()
    return {"trials": len(rows), "stopped": sum(st == "stopped" for st, _ in rows),
            "replay_seconds": [float(sec or 0) for _, sec in rows], "points": int(points or 0)}


# ---- stock Ray Tune ---------------------------------------------------------------------------


class TuneReplayReporter:
    """trainer.reporting.Reporter onto ray.tune.report, as a Tune user would write it."""

    def step(self, metrics: dict) -> None:
        from ray import tune

        tune.report({k: v for k, v in metrics.items() if v is not None})

    def final(self, result: dict) -> None:
        from ray import tune

        # stock OptunaSearch reads its metric from every result: "loss" here (see run_stock)
        tune.report({**{k: v for k, v in result.items() if v is not None and not isinstance(v, dict)},
                     "loss": result.get("train_loss")})

    def should_stop(self) -> bool:
        return False


def stock_trainable(config: dict, replay: dict) -> None:
    """The replay as a plain Tune function trainable."""
    from trainer.config import parse_trial_config
    from trainer.replay import replay_trial

    cfg = parse_trial_config({"model": {"path": "builtin:replay", "replay": replay},
                              "hparams": {"effective_batch_size": int(config["effective_batch_size"]),
                                          "learning_rate": float(config["learning_rate"])},
                              "budget": {"max_samples": BUDGET_SAMPLES}})
    replay_trial(cfg, TuneReplayReporter())


def run_stock(trials: int, concurrency: int, cpus_per_trial: float, storage: Path, replay: dict[str, Any],
              reuse_actors: bool = True, profile: Path | None = None) -> dict[str, Any]:
    """tune.Tuner + OptunaSearch (TPE, seed 0) + ASHAScheduler on the same replay, Tune's defaults
    otherwise (experiment checkpointing included) but for ``reuse_actors``, which sweepd sets too.

    Stock OptunaSearch reports its metric to Optuna from every result, so it must be in every
    one: it optimises the training loss here (the last one at the end), which the steps carry;
    sweepd's searcher likewise reports each step's loss to Optuna and tells it the eval loss at
    the end. The orchestration work is the same."""
    import optuna
    import ray.cloudpickle
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import benchmarks/
    start_ray()
    searcher = OptunaSearch(metric="loss", mode="min", sampler=optuna.samplers.TPESampler(seed=0))
    scheduler = ASHAScheduler(time_attr=ASHA["time_attr"], metric="loss", mode="min", max_t=BUDGET_SAMPLES,
                              grace_period=ASHA["grace"], reduction_factor=ASHA["reduction_factor"])
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(stock_trainable, replay=replay), {"cpu": cpus_per_trial}),
        param_space={"effective_batch_size": tune.choice(BATCHES), "learning_rate": tune.loguniform(*LR_RANGE)},
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=trials,
                                    max_concurrent_trials=concurrency, reuse_actors=reuse_actors),
        run_config=tune.RunConfig(name="stock", storage_path=str(storage), verbose=0),
    )
    started = time.perf_counter()
    with profiled(profile):
        grid = tuner.fit()
    wall = time.perf_counter() - started
    finals = [r.metrics or {} for r in grid]
    return {"wall_seconds": wall, "trials": len(finals),
            "stopped": sum((m.get("samples") or 0) < BUDGET_SAMPLES for m in finals),
            "replay_seconds": [float(m.get("seconds") or 0) for m in finals],
            "errors": sum(r.error is not None for r in grid)}


@contextlib.contextmanager
def profiled(path: Path | None):
    """cProfile of the driver (Tune's controller loop, the searcher, the scheduler, the callbacks
    all run in it) into ``path``, when given."""
    if path is None:
        yield
        return
    import cProfile

    prof = cProfile.Profile()
    prof.enable()
    try:
        yield
    finally:
        prof.disable()
        prof.dump_stats(str(path))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("engine", choices=["sweepd", "stock"])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--cpus-per-trial", type=float, default=None, help="default: CPUs / concurrency")
    ap.add_argument("--stock-reuse-actors", type=int, default=1, help="1 (as sweepd) or 0 (Tune's default)")
    ap.add_argument("--reports", type=int, default=REPORTS, help="reported steps per trial, at most")
    ap.add_argument("--seconds-per-step", type=float, default=SECONDS_PER_STEP)
    ap.add_argument("--profile", type=Path, default=None, help="write a cProfile of the driver here")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    cpus = args.cpus_per_trial or round((os.cpu_count() or 1) / args.concurrency, 3)
    with tempfile.TemporaryDirectory(prefix=f"orch-{args.engine}-") as tmp:
        replay = replay_settings(args.reports, args.seconds_per_step)
        if args.engine == "sweepd":
            out = run_sweepd(args.trials, args.concurrency, cpus, Path(tmp) / "home", replay, args.profile)
        else:
            out = run_stock(args.trials, args.concurrency, cpus, Path(tmp), replay, bool(args.stock_reuse_actors),
                            args.profile)
    out.update(engine=args.engine, concurrency=args.concurrency, cpus_per_trial=cpus)
    args.out.write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
