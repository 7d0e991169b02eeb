"""A trial's resumable checkpoints under Ray Tune (issue 13): written, resumed from, removed.

The trainer writes a checkpoint (trainer/checkpoint.py) every `resources.checkpoint_every` into a
local temporary folder and hands it to the reporter with that step's result; the reporter passes
it to Ray (``tune.report(metrics, checkpoint=...)``, or ``ray.train.report`` on every worker of a
multi-worker trial, whose files Ray merges into one checkpoint), which persists it in the trial's
storage and keeps the newest one (``CheckpointConfig(num_to_keep=1)``); the local copy is removed
then. A retried trial (a crash, a lost node: ``FailureConfig(max_failures)``) gets Ray's latest
checkpoint back (``tune.get_checkpoint()``, or ``ray.train.get_checkpoint()`` in a Ray Train run
of the same name) and the trainer continues after its step. When the trial ends (completed,
stopped, diverged, failed), ``CheckpointCleanup`` deletes its checkpoints from storage; the
trial's saved model (``output_dir``) is apart and stays.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint_"  # Ray's checkpoint folder names (Tune's and Ray Train's)
LOCAL_PREFIX = "sweepd-ckpt-"  # + "<pid>-": a trial's local scratch folder, in the temp directory


def _reap_orphans() -> None:
    """Scratch folders of trial processes that died without cleaning up (SIGKILL, a lost actor)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{LOCAL_PREFIX}*-*"):
        pid = folder.name[len(LOCAL_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:  # alive, someone else's
            pass


@contextmanager
def trial_checkpoints(latest: Callable[[], object | None], enabled: bool = True) -> Iterator[tuple[str | None, str | None]]:
    """``(checkpoint_dir, resume_from)`` for ``trainer.loop.run_trial`` in a Ray trial or worker:
    a fresh local folder to write checkpoints into (removed afterwards; None unless ``enabled``:
    the trial has ``resources.checkpoint_every``), and the local folder of Ray's latest checkpoint
    (``latest()``: ``tune.get_checkpoint`` or ``ray.train.get_checkpoint``), or None. A checkpoint
    Ray knows of that is gone or incomplete is reported and skipped: the trial starts from step 0
    rather than failing."""
    from trainer.checkpoint import is_checkpoint

    local = None
    if enabled:
        _reap_orphans()
        local = tempfile.mkdtemp(prefix=f"{LOCAL_PREFIX}{os.getpid()}-")
    try:
        checkpoint = latest()
        if checkpoint is None:
            yield local, None
            return
        try:
            opened = checkpoint.as_directory()
            folder = opened.__enter__()
        except Exception as err:  # noqa: BLE001 - deleted or unreachable: start over
            log.warning("checkpoint %s cannot be read (%s): the trial starts from step 0", checkpoint, err)
            yield local, None
            return
        try:
            if not is_checkpoint(folder):
                log.warning("checkpoint %s is not a complete trial checkpoint: the trial starts from step 0", folder)
                folder = None
            yield local, folder
        finally:
            opened.__exit__(None, None, None)
    finally:
        if local is not None:
            shutil.rmtree(local, ignore_errors=True)


def send_with_checkpoint(report: Callable[..., None], make_checkpoint: Callable[[str], object],
                         metrics: dict, folder: str | None) -> None:
    """``report(metrics)``, with the checkpoint in ``folder`` if any; Ray has persisted it when
    report returns, so the local folder goes."""
    if folder is None:
        report(metrics)
        return
    try:
        report(metrics, checkpoint=make_checkpoint(folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def delete_trial_checkpoints(trial) -> int:
    """Delete a Tune trial's checkpoint folders from its storage (and those of the Ray Train run
    of a multi-worker trial, one level down); returns how many went. Anything else stays."""
    storage = getattr(trial, "storage", None)
    if storage is None:
        return 0
    import pyarrow.fs as pafs

    fs, root = storage.storage_filesystem, storage.trial_fs_path
    try:
        entries = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    except OSError:
        return 0
    doomed = []
    for entry in entries:
        if entry.type != pafs.FileType.Directory:
            continue
        if entry.base_name.startswith(CHECKPOINT_PREFIX):
            doomed.append(entry.path)
        elif entry.base_name.startswith("train-"):  # run_multi_worker's Ray Train run
            inner = fs.get_file_info(pafs.FileSelector(entry.path, allow_not_found=True))
            doomed += [e.path for e in inner
                       if e.type == pafs.FileType.Directory and e.base_name.startswith(CHECKPOINT_PREFIX)]
    for path in doomed:
        try:
            fs.delete_dir(path)
        except OSError as err:  # already gone, or busy: not worth failing the sweep over
            log.warning("could not delete checkpoint %s: %s", path, err)
    return len(doomed)


try:
    from ray.tune import Callback
except ImportError:  # pragma: no cover - ray is a hard dependency
    Callback = object


class CheckpointCleanup(Callback):
    """Deletes a trial's checkpoints once it has ended, whatever the ending."""

    def on_trial_complete(self, iteration, trials, trial, **info):
        delete_trial_checkpoints(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        delete_trial_checkpoints(trial)
