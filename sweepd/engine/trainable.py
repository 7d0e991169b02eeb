"""A trial as a Ray Tune function trainable: the trainer with a Tune reporter.

A trainer error (TrialError, DataError, ModelLoadError: the trial's inputs are wrong) ends the
trial with a final result of status "failed" and the error's message as its reason, so Tune does
not retry it and the store gets the message as the trainer worded it (see recorder.py). Running
out of memory likewise ends it with status "oom" and a reason naming the step, the memory
settings and what to change (engine/oom.py).

Every optimizer step is reported (the pruner decides on them); the objective metrics are reported
in the final result, which alone carries FINAL_MARKER: a trial that ends without it was stopped,
and Optuna records it as PRUNED rather than COMPLETE with a partial value (see search.py), even
when its last report was an interim evaluation.
"""

from __future__ import annotations

import os

from ray import tune

from sweepd.engine.checkpoints import send_with_checkpoint, trial_checkpoints
from sweepd.engine.oom import oom_errors, report_oom
from sweepd.protocol import FINAL_MARKER, NUMBER_KEY, REPLAYED_KEY
from trainer.replay_config import REPLAY_MODEL


class TuneReporter:
    """trainer.reporting.Reporter that forwards to ray.tune.report; a checkpoint the trainer hands
    over goes with the next step's report (sweepd/engine/checkpoints.py)."""

    _checkpoint: str | None = None

    def _send(self, metrics: dict, checkpoint_dir: str | None = None) -> None:
        send_with_checkpoint(tune.report, tune.Checkpoint.from_directory, metrics, checkpoint_dir)

    def checkpoint(self, path: str) -> None:
        self._checkpoint = path

    def step(self, metrics: dict) -> None:
        if isinstance(metrics.get("step"), int):
            self.last_step = metrics["step"]  # an out-of-memory error names the step after it (engine/oom.py)
        folder, self._checkpoint = self._checkpoint, None
        self._send({k: v for k, v in metrics.items() if v is not None and not isinstance(v, dict)}, folder)

    def final(self, result: dict) -> None:
        flat = {k: v for k, v in result.items() if not isinstance(v, dict) and v is not None}
        flat[FINAL_MARKER] = result["status"]
        if result.get("status") in ("diverged", "failed", "oom"):  # no objective for a diverged, failed or oom trial
            flat = {k: v for k, v in flat.items() if k in ("status", "steps", "samples", "tokens", "seconds",
                                                            "reason", FINAL_MARKER)}
        self._send(flat)

    def should_stop(self) -> bool:
        return False  # Ray Tune stops the trial itself


def trainer_errors() -> tuple[type[Exception], ...]:
    """The trainer's own errors: a problem with the trial's inputs (data, model, config), worded
    for the user. Rerunning the trial would fail the same way."""
    from trainer.data import DataError
    from trainer.loop import TrialError
    from trainer.models import ModelLoadError

    return (TrialError, DataError, ModelLoadError)


def report_failure(reporter: "TuneReporter", err: Exception) -> None:
    """A trainer error ends the trial with a final result of status failed and the error's own
    message as its reason: no Ray wrapper, no traceback, and (a finished trial) no retry."""
    reporter.final({"status": "failed", "reason": clean_message(str(err))})


def clean_message(text: str) -> str:
    from sweepd.engine.recorder import strip_ansi

    return strip_ansi(text).strip() or "trial failed (no error text recorded)"


class TrainReporter(TuneReporter):
    """For a multi-worker trial under Ray Train: every rank reports in lockstep (Train expects
    each worker to call report); rank 0's metrics reach Tune through TuneReportCallback."""

    all_ranks = True

    def __init__(self, worker_nodes: str = "") -> None:
        self.worker_nodes = worker_nodes  # "ip,ip" by rank: where the trial's workers ran

    def _send(self, metrics: dict, checkpoint_dir: str | None = None) -> None:
        import ray.train

        # every worker hands in its own files (its ZeRO partition); Ray merges them into one checkpoint
        send_with_checkpoint(ray.train.report, ray.train.Checkpoint.from_directory, metrics, checkpoint_dir)

    def final(self, result: dict) -> None:
        super().final({**result, "worker_nodes": self.worker_nodes})


def _train_worker_loop(config: dict) -> None:
    """Runs on each Ray Train worker; Ray Train has set up the process group and RANK etc."""
    from sweepd.spec import SweepSpec
    from trainer.loop import run_trial

    import ray
    import torch.distributed as dist

    spec = SweepSpec.from_stored(config["spec_doc"])
    nodes: list = [None] * dist.get_world_size()
    dist.all_gather_object(nodes, ray.util.get_node_ip_address())
    reporter = TrainReporter(",".join(nodes))
    try:  # every rank loads the same model and data, so every rank fails the same way
        enabled = spec.resources.checkpoint_every is not None
        with trial_checkpoints(ray.train.get_checkpoint, enabled) as (checkpoint_dir, resume_from):
            run_trial(spec.trial_config(config["params"], output_dir=config.get("output_dir")), reporter,
                      checkpoint_dir=checkpoint_dir, resume_from=resume_from)
    except trainer_errors() as err:
        report_failure(reporter, err)
    except oom_errors() as err:  # the same config would run out again: state oom, no retry (engine/oom.py)
        report_oom(reporter, err, spec.trial_config(config["params"]))


def _trial_storage(ctx) -> dict:
    """Where the Ray Train run of a trial keeps its checkpoints: in the Tune trial's own storage
    folder (the sweep's, shared by the cluster), so a retry on another node finds them and they go
    with the trial's (checkpoints.CheckpointCleanup); not the driver's local staging folder."""
    try:
        from ray.train._internal.session import get_session

        storage = get_session().storage
        return {"storage_path": storage.trial_fs_path, "storage_filesystem": storage.storage_filesystem}
    except Exception:  # noqa: BLE001 - an older or newer Ray without it: the trial's local folder
        return {"storage_path": ctx.get_trial_dir()}


def run_multi_worker(spec, params: dict, output_dir: str | None) -> None:
    """workers_per_trial > 1: Ray Train's TorchTrainer inside the Tune trial (Ray Train V2 style)."""
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    res = spec.resources
    ctx = tune.get_context()
    trainer = TorchTrainer(
        _train_worker_loop,
        train_loop_config={"spec_doc": spec.to_stored(), "params": params, "output_dir": output_dir},
        scaling_config=ScalingConfig(num_workers=res.workers_per_trial, use_gpu=res.gpus_per_worker > 0,
                                     resources_per_worker={"CPU": res.cpus_per_worker,
                                                           **({"GPU": res.gpus_per_worker} if res.gpus_per_worker else {})}),
        # the same name on a retry: Ray Train finds its latest checkpoint (ray.train.get_checkpoint)
        run_config=RunConfig(name=f"train-{ctx.get_trial_id()}", callbacks=[TuneReportCallback()],
                             checkpoint_config=CheckpointConfig(num_to_keep=1), **_trial_storage(ctx)),
    )
    trainer.fit()


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
    if state in ("completed", "diverged", "oom") and final.get(FINAL_MARKER):
        tune.report({**final, REPLAYED_KEY: True})
        return True
    if state == "stopped":  # ends with no final result: recorded as stopped again
        tune.report({REPLAYED_KEY: True})
        return True
    return False


def run_replay_in_tune(spec, params: dict) -> None:
    """A builtin:replay trial (trainer/replay.py): bad curves or settings fail it with their message."""
    from trainer.replay import replay_trial
    from trainer.replay_bank import ReplayError

    reporter = TuneReporter()
    try:
        replay_trial(spec.trial_config(params), reporter)
    except ReplayError as err:
        report_failure(reporter, err)


def run_trial_in_tune(params: dict, *, spec_doc: dict, db_url: str, sweep_id: str,
                      models_dir: str | None = None) -> None:
    """The function Ray Tune runs for each trial; `params` are the sampled hyperparameters.
    ``spec_doc`` is the sweep's validated spec (``SweepSpec.to_stored()``): rebuilt here, not
    judged again (this worker's paths, roots and cluster are not the ones it was checked for)."""
    from sweepd.spec import SweepSpec

    params = dict(params)
    number = params.pop(NUMBER_KEY, None)
    if number is not None and replay_if_finished(db_url, sweep_id, int(number)):
        return
    spec = SweepSpec.from_stored(spec_doc)
    if spec.model.path == REPLAY_MODEL:  # recorded curves, no training: before torch is imported
        run_replay_in_tune(spec, params)
        return
    import torch

    from trainer.loop import run_trial

    cpus = spec.resources.cpus_per_worker
    torch.set_num_threads(max(1, int(cpus)))
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")
    output_dir = None
    if models_dir:  # every finished trial saves its model; the sweep keeps only the best one
        tag = tune.get_context().get_trial_name()
        output_dir = f"{models_dir}/{tag}"
    if spec.resources.workers_per_trial > 1:
        run_multi_worker(spec, params, output_dir)
        return
    reporter = TuneReporter()
    try:  # a retry continues from the trial's latest checkpoint (resources.checkpoint_every)
        enabled = spec.resources.checkpoint_every is not None
        with trial_checkpoints(tune.get_checkpoint, enabled) as (checkpoint_dir, resume_from):
            run_trial(spec.trial_config(params, output_dir=output_dir), reporter,
                      checkpoint_dir=checkpoint_dir, resume_from=resume_from)
    except trainer_errors() as err:
        report_failure(reporter, err)
    except oom_errors() as err:  # the same config would run out again: state oom, no retry (engine/oom.py)
        report_oom(reporter, err, spec.trial_config(params))
