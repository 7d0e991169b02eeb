"""A trial's checkpoints under Ray Tune (sweepd/engine/checkpoints.py), without a Ray cluster:
where a trial resumes from, how a checkpoint goes with its report, and their removal at the end."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pyarrow.fs as pafs
from ray import tune

from sweepd.engine.checkpoints import (
    CheckpointCleanup,
    delete_trial_checkpoints,
    send_with_checkpoint,
    trial_checkpoints,
)
from trainer.checkpoint import STATE_FILE


def _complete(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / STATE_FILE).write_text(json.dumps({"step": 3}))
    return folder


def test_a_first_attempt_gets_a_scratch_folder_and_nothing_to_resume_from():
    with trial_checkpoints(lambda: None) as (scratch, resume_from):
        assert Path(scratch).is_dir() and resume_from is None
    assert not Path(scratch).exists()  # removed afterwards


def test_no_scratch_folder_without_checkpoint_every_and_none_left_by_dead_trials(tmp_path, monkeypatch):
    import subprocess
    import sys

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / f"sweepd-ckpt-{dead}-abc" / "step-00000003.tmp").mkdir(parents=True)  # SIGKILLed mid-write
    (tmp_path / "sweepd-ckpt-1-abc").mkdir()  # pid 1 lives: not ours to judge
    with trial_checkpoints(lambda: None, enabled=False) as (scratch, resume_from):
        assert scratch is None and resume_from is None
    with trial_checkpoints(lambda: None) as (scratch, _):
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["sweepd-ckpt-1-abc", Path(scratch).name])


def test_a_retry_resumes_from_rays_latest_checkpoint(tmp_path):
    ckpt = tune.Checkpoint.from_directory(str(_complete(tmp_path / "checkpoint_000004")))
    with trial_checkpoints(lambda: ckpt) as (scratch, resume_from):
        assert resume_from == str(tmp_path / "checkpoint_000004") and scratch != resume_from
    assert (tmp_path / "checkpoint_000004" / STATE_FILE).exists()  # Ray's copy is left alone


def test_a_checkpoint_gone_or_incomplete_means_a_fresh_start(tmp_path):
    (tmp_path / "half").mkdir()  # no state file: not a complete trial checkpoint
    for ckpt in (tune.Checkpoint.from_directory(str(tmp_path / "half")),
                 SimpleNamespace(as_directory=lambda: (_ for _ in ()).throw(FileNotFoundError("gone")))):
        with trial_checkpoints(lambda: ckpt) as (_, resume_from):
            assert resume_from is None


def test_a_checkpoint_goes_with_its_report_and_the_local_copy_goes(tmp_path):
    sent = []
    folder = _complete(tmp_path / "local")
    send_with_checkpoint(lambda m, **kw: sent.append((m, kw)), lambda p: ("ckpt", p), {"step": 3}, str(folder))
    assert sent == [({"step": 3}, {"checkpoint": ("ckpt", str(folder))})] and not folder.exists()
    send_with_checkpoint(lambda m, **kw: sent.append((m, kw)), lambda p: 1 / 0, {"step": 4}, None)
    assert sent[-1] == ({"step": 4}, {})


def test_an_ended_trial_loses_its_checkpoints_and_keeps_everything_else(tmp_path):
    trial_dir = tmp_path / "run_trial_in_tune_1"
    for d in ("checkpoint_000007", "train-abc/checkpoint_2026-11-27_10-00-00.123", "train-abc/other", "model"):
        (trial_dir / d).mkdir(parents=True)
    (trial_dir / "result.json").write_text("{}")
    trial = SimpleNamespace(storage=SimpleNamespace(storage_filesystem=pafs.LocalFileSystem(),
                                                    trial_fs_path=str(trial_dir)))
    CheckpointCleanup().on_trial_complete(0, [trial], trial)
    left = sorted(str(p.relative_to(trial_dir)) for p in trial_dir.rglob("*"))
    assert left == ["model", "result.json", "train-abc", "train-abc/other"]
    assert delete_trial_checkpoints(trial) == 0  # nothing left to delete; a missing folder is fine too
    assert delete_trial_checkpoints(SimpleNamespace(storage=SimpleNamespace(
        storage_filesystem=pafs.LocalFileSystem(), trial_fs_path=str(tmp_path / "nowhere")))) == 0
