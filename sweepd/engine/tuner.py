"""One sweep, driven to the end: Ray Tune + Optuna + the early-signal scheduler + the store.

`run_sweep` is what `sweepd run` and the service's controllers call. It is safe to call again for
the same sweep after the driver died: Ray Tune's experiment state (the searcher's pickled study and
trial table) and the scheduler's state file let it continue; finished trials are not rerun, and the
recorder's idempotent writes mean replayed results add no duplicate rows.

Everything here that Ray Tune pickles (searcher, scheduler, callbacks, stoppers, the trainable's
parameters) gets the database URL without its password (`store.db.public_url`): the password is
filled in at connect time from the process's settings, so it is in no file of the experiment.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import ray
from ray import tune

from sweepd.engine.budget import BudgetGate
from sweepd.engine.cancel import CancelStopper
from sweepd.engine.checkpoints import CheckpointCleanup
from sweepd.engine.recorder import DecisionWriter, SameFailureStopper, StoreRecorder, trial_key
from sweepd.engine.share_gate import ShareGate, poll_searcher_briefly
from sweepd.engine.search import SweepOptunaSearch, make_sampler, optuna_storage
from sweepd.engine.trainable import run_trial_in_tune
from sweepd.engine import store_resume, warm_start
from sweepd.spec import SweepSpec
from sweepd.store.db import public_url
from sweepd.engine.tune_scheduler import EarlySignalScheduler

log = logging.getLogger(__name__)


def ensure_ray(address: str | None) -> None:
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # The objective arrives only in a trial's final result (see trainable.py), by design.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    # A crashed trial's message and traceback go to the store (recorder.py), not the console.
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
    # The experiment snapshot (the searcher and the trial table, pickled) every 10 s or more, as Ray
    # adapts it ("auto": at most 5% of the driver's time). Every 2 s cost a tenth of the driver's
    # time at 1,000 trials (benchmarks/README.md). A resume from an older snapshot reruns the trials
    # since: the finished ones replay their stored result (trainable.replay_if_finished) and a
    # number suggested again is told FAIL in the study (search.py), so the counts stay exact.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "auto")
    # One checkpoint kept per trial (disk) forces an experiment snapshot at each trial checkpoint;
    # with checkpoints every few steps Tune would warn about that on every one.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # The store keeps every result; Tune's own JSON, CSV and TensorBoard copies of each cost about a
    # third of the driver's time in a 1,000-trial sweep (benchmarks/orchestration.py).
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    if address:
        poll_searcher_briefly()  # a cluster shared with other sweeps: see engine/share_gate.py
        ray.init(address=address, log_to_driver=False)
    else:  # a Ray of its own ("local": never one found on the machine, such as a service's)
        ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False,
                 num_cpus=os.cpu_count())


def experiment_dir(home: Path, sweep_id: str, segment: int = 0) -> Path:
    """The Tune experiment of a sweep's segment: 0 the first run, k > 0 its k-th extension (a
    finished Tune run takes no more samples on restore, so an extension is a Tune run of its own on
    the same study; the pruner's state file stays in segment 0's folder)."""
    return Path(home).resolve() / "ray" / (f"sweep-{sweep_id}" + (f"-x{segment}" if segment else ""))


def _tune_config(spec: SweepSpec, db_url: str, sweep_id: str, home: Path, *, shared: bool = False,
                 study_name: str | None = None,
                 first_number: int = 1) -> tune.TuneConfig:
    metric, mode = spec.objective.metric, spec.objective.mode
    grid = spec.grid_space() if spec.search.algorithm == "grid" else None
    searcher = SweepOptunaSearch(
        # an extension's sampler gets a seed of its own: a random sampler must not repeat the first run
        sampler=make_sampler(spec.search.algorithm, spec.search.seed + first_number - 1, grid),
        storage=optuna_storage(db_url), study_name=study_name or f"sweepd-{sweep_id}", first_number=first_number,
        metric=metric, mode=mode, intermediate_key="loss", time_attr=spec.pruner_time_attr,
        budget=BudgetGate.for_spec(spec, db_url, sweep_id),  # compute_budget: stop when spent
        failure_gate=same_failure(spec, db_url, sweep_id, first_number),  # the first trials all failed alike
        share=ShareGate(db_url, sweep_id),  # its fair share of a cluster shared with other sweeps
    )
    scheduler = EarlySignalScheduler(spec.pruner_config(), metric=metric, mode=mode,
                                     on_decision=DecisionWriter(db_url, sweep_id),
                                     state_path=experiment_dir(home, sweep_id) / "pruner_state.json",
                                     trial_key=trial_key)
    return tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=spec.planned_trials - first_number + 1,
                           max_concurrent_trials=concurrency(spec),
                           # on a cluster shared with other sweeps, a trial's actor (and the CPUs and GPUs
                           # it holds) goes when the trial ends: a cached one would keep them from the
                           # sweep whose turn it is. On a Ray of its own, reusing actors saves start-ups.
                           reuse_actors=not shared)


def concurrency(spec: SweepSpec, cluster: dict[str, float] | None = None) -> int:
    """search.max_concurrent, capped by how many trials the Ray cluster (its resources; default:
    ray.cluster_resources()) holds at once: more would only queue trials that cannot start."""
    if cluster is None:
        import ray

        cluster = ray.cluster_resources() if ray.is_initialized() else {}
    res = spec.resources
    slots = [int(cluster.get(name, 0) // (res.workers_per_trial * per_worker))
             for name, per_worker in (("CPU", res.cpus_per_worker), ("GPU", res.gpus_per_worker)) if per_worker > 0]
    fits = min(slots) if slots and cluster else spec.search.max_concurrent
    return max(1, min(spec.search.max_concurrent, fits))


def same_failure(spec: SweepSpec, db_url: str, sweep_id: str, first_number: int) -> SameFailureStopper:
    """Once the first k = max_concurrent trials all failed with the same message, launch no more
    (the searcher asks it) and stop the running ones (as the run's stopper)."""
    return SameFailureStopper(db_url, sweep_id, k=min(spec.search.max_concurrent, spec.planned_trials),
                              first_number=first_number)


def models_dir(home: Path, sweep_id: str) -> Path:
    return Path(home).resolve() / "models" / f"sweep-{sweep_id}"


def _trainable(spec: SweepSpec, home: Path, sweep_id: str, db_url: str):
    res = spec.resources
    save_to = str(models_dir(home, sweep_id)) if spec.save_best_model else None
    fn = tune.with_parameters(run_trial_in_tune, spec_doc=spec.to_stored(), db_url=db_url,
                              sweep_id=sweep_id, models_dir=save_to)
    if res.workers_per_trial > 1:
        # The Tune trial only drives Ray Train, whose workers hold the CPUs and GPUs; Ray refuses an
        # empty request, so the driver asks for one byte of memory.
        return tune.with_resources(fn, tune.PlacementGroupFactory([{"CPU": 0, "memory": 1}]))
    return tune.with_resources(fn, {"cpu": res.cpus_per_worker, "gpu": res.gpus_per_worker})


def run_sweep(spec: SweepSpec, *, sweep_id: str, db_url: str, home: Path, ray_address: str | None = None,
              segment: int = 0, first_number: int = 1, study_name: str | None = None) -> None:
    """Runs (or resumes) the sweep until every trial has finished. State goes to the store.
    ``segment`` k > 0: the k-th extension, numbering its trials from ``first_number``."""
    db_url = public_url(db_url)  # no secret in tuner.pkl, the searcher's state or trial params
    ensure_ray(ray_address)
    exp = experiment_dir(home, sweep_id, segment)
    exp.parent.mkdir(parents=True, exist_ok=True)
    trainable = _trainable(spec, home, sweep_id, db_url)
    recorder = StoreRecorder(db_url, sweep_id, spec.objective.metric)
    if tune.Tuner.can_restore(str(exp)):
        log.info("resuming sweep %s from %s", sweep_id, exp)
        tuner = tune.Tuner.restore(str(exp), trainable=trainable, resume_unfinished=True,
                                   resume_errored=True)
    else:
        # trials in the store but no Tune experiment to restore: go on from the store (store_resume.py)
        resumed = store_resume.plan(db_url, sweep_id, first_number)
        first_number = resumed.first_number if resumed else first_number
        if spec.planned_trials < first_number:
            log.info("sweep %s: all %d trials exist; nothing to run", sweep_id, spec.planned_trials)
            return
        study_name = warm_start.prepare_study(spec, sweep_id=sweep_id, db_url=db_url, segment=segment,
                                              study_name=study_name or f"sweepd-{sweep_id}")
        tune_config = _tune_config(spec, db_url, sweep_id, home, shared=ray_address is not None,
                                   study_name=study_name, first_number=first_number)
        if segment == 0:  # a fresh start, before the first suggestion (a resume or an extension has its prior)
            warm_start.warm_start(spec, sweep_id=sweep_id, db_url=db_url, study_name=study_name,
                                  pruner=tune_config.scheduler.pruner)
        if resumed:
            store_resume.apply(resumed, spec, db_url=db_url, study_name=study_name, scheduler=tune_config.scheduler)
        run_config = tune.RunConfig(
            # the recorder first: a trial's last points are stored before its checkpoints go
            name=exp.name, storage_path=str(exp.parent), verbose=0, callbacks=[recorder, CheckpointCleanup()],
            # cancelled, or the first max_concurrent trials all failed the same way (bad data ...)
            stop=tune.stopper.CombinedStopper(CancelStopper(db_url, sweep_id),
                                              same_failure(spec, db_url, sweep_id, first_number)),
            # a crashed trial is retried from its latest checkpoint (resources.checkpoint_every;
            # sweepd/engine/checkpoints.py); one checkpoint per trial, deleted when the trial ends
            failure_config=tune.FailureConfig(max_failures=spec.resources.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        )
        tuner = tune.Tuner(trainable, param_space=spec.to_tune_space(),
                           tune_config=tune_config, run_config=run_config)
    tuner.fit()
