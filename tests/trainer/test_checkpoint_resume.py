"""Resumable trials (issue 13): a trial resumed from its checkpoint continues exactly as if it had
never stopped: the same sample order, LR schedule, optimizer state and RNG streams, so every step
after the resume has the uninterrupted run's loss, grad norm and LR, bit for bit on CPU (torchtune's
resume-equivalence habit). The CLI test kills a real `python -m trainer run` with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from trainer.checkpoint import STATE_FILE, CheckpointError, Schedule, find_latest, read_state
from trainer.config import CheckpointEvery
from trainer.loop import TrialError, run_trial
from trainer.reporting import InMemoryReporter

REPO = Path(__file__).resolve().parents[2]
COMPARED = ("step", "samples", "tokens", "loss", "grad_norm", "lr")


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: the same numbers every run, and no OpenMP threads spinning against the
    machine's other work (2 threads under load made these runs ~6x slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cfg(trial_cfg, synth_dir, steps: int, every: dict | None, stage: int = 2, **sections):
    return trial_cfg(
        data={"eval": [{"path": str(synth_dir / "eval.jsonl")}]},
        hparams={"effective_batch_size": 8, "learning_rate": 1e-3, "warmup_steps": 3, "lr_scheduler": "cosine"},
        budget={"max_steps": steps}, eval={"max_items": 4, "max_new_tokens": 4},
        resources={"checkpoint_every": every, "zero_stage": stage}, **sections)


def _rows(steps: list[dict]) -> list[tuple]:
    return [tuple(s[k] for k in COMPARED) for s in steps if s.get("event") is None]


@pytest.mark.parametrize("stage", [0, 2, 3])
def test_a_resumed_trial_continues_exactly_like_an_uninterrupted_one(trial_cfg, synth_dir, tmp_path, stage):
    golden = InMemoryReporter()
    run_trial(_cfg(trial_cfg, synth_dir, 12, None, stage), golden)

    cfg = _cfg(trial_cfg, synth_dir, 12, {"samples": 24}, stage)
    first = InMemoryReporter(stop_after_steps=8)  # stopped after step 8: checkpoints after steps 3 and 6
    assert run_trial(cfg, first, checkpoint_dir=tmp_path / "ck")["status"] == "stopped"
    assert [step for step, _ in first.checkpoints] == [3, 6]
    assert _rows(first.steps) == _rows(golden.steps[:8])  # writing checkpoints changes nothing
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["step-00000006"]  # the newest only
    at6 = read_state(tmp_path / "ck" / "step-00000006")
    assert (at6.step, at6.samples, at6.tokens) == (6, 48, first.steps[5]["tokens"])

    resumed = InMemoryReporter()
    result = run_trial(cfg, resumed, checkpoint_dir=tmp_path / "ck", resume_from=tmp_path / "ck")
    assert result["resumed_from_step"] == 6 and result["steps"] == 12
    assert [s["step"] for s in resumed.steps] == list(range(7, 13))  # no gap, no step twice
    assert _rows(resumed.steps) == _rows(golden.steps[6:])  # exact: loss, grad norm, LR, counts
    assert resumed.steps[0]["seconds"] > at6.seconds  # the clock goes on from the checkpoint's
    assert [step for step, _ in resumed.checkpoints] == [9]  # not after the last step
    for key in ("train_loss", "eval_loss", "samples", "tokens"):
        assert result[key] == golden.result[key], key


def test_a_checkpoint_of_another_plan_is_refused(trial_cfg, synth_dir, tmp_path):
    cfg = _cfg(trial_cfg, synth_dir, 3, {"samples": 8})
    run_trial(cfg, InMemoryReporter(), checkpoint_dir=tmp_path / "ck")
    assert find_latest(tmp_path / "ck").name == "step-00000002"
    with pytest.raises(TrialError, match="another sample order"):
        run_trial(_cfg(trial_cfg, synth_dir, 3, None, seed=1), InMemoryReporter(), resume_from=tmp_path / "ck")
    with pytest.raises(TrialError, match="no such checkpoint"):
        run_trial(cfg, InMemoryReporter(), resume_from=tmp_path / "nowhere")


def test_a_checkpoint_every_few_minutes(trial_cfg, synth_dir, tmp_path):
    rep = InMemoryReporter()  # a microsecond of minutes: due after every step (never after the last)
    run_trial(_cfg(trial_cfg, synth_dir, 3, {"minutes": 1e-8}), rep, checkpoint_dir=tmp_path / "ck")
    assert [step for step, _ in rep.checkpoints] == [1, 2]
    assert find_latest(tmp_path / "ck").name == "step-00000002"


def test_the_schedule_counts_samples_or_minutes():
    by_samples = Schedule(CheckpointEvery(samples=100))
    written = []
    for seen in range(32, 500, 32):  # a step of 32 samples: written when a multiple of 100 is passed
        if by_samples.due(seen):
            by_samples.mark(seen)
            written.append(seen)
    assert written == [128, 224, 320, 416]
    assert Schedule(CheckpointEvery(samples=100), samples=128).due(192) is False  # resumed at 128
    now = [0.0]
    by_time = Schedule(CheckpointEvery(minutes=0.5), samples=0, clock=lambda: now[0])
    now[0] = 29.0
    assert not by_time.due(10)
    now[0] = 30.0
    assert by_time.due(10)
    by_time.mark(10)
    now[0] = 59.0
    assert not by_time.due(20)


def test_an_incomplete_checkpoint_is_never_resumed_from(tmp_path):
    (tmp_path / "step-00000004").mkdir()  # written (killed) before its state file
    (tmp_path / "step-00000002").mkdir()
    (tmp_path / "step-00000002" / STATE_FILE).write_text(json.dumps({
        "step": 2, "samples": 16, "tokens": 100, "seconds": 1.0, "order_position": 16, "order_digest": "x",
        "planned_steps": 9, "effective_batch_size": 8, "world": 1}))
    (tmp_path / "step-00000006.tmp").mkdir()
    assert find_latest(tmp_path).name == "step-00000002"
    assert find_latest(tmp_path / "step-00000004") is None
    (tmp_path / "step-00000002" / STATE_FILE).write_text("{")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_state(find_latest(tmp_path))


# ---- the CLI, killed mid-run --------------------------------------------------------------------

def _trainer(*args, **kw) -> subprocess.Popen:
    env = dict(os.environ, DS_ACCELERATOR="cpu", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "trainer", "run", *map(str, args)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_a_killed_trainer_resumes_from_its_last_checkpoint(synth_dir, tmp_path, workers):
    """SIGKILL once the first checkpoint is on disk; rerun with --resume-from. Two workers: a local
    two-process launch (gloo), each rank with its ZeRO partition in the one checkpoint folder."""
    steps = 40
    trial = {"model": {"path": "builtin:tiny"},
             "data": {"train": [{"path": str(synth_dir / "train.jsonl")}], "eval": [{"path": str(synth_dir / "eval.jsonl")}],
                      "max_seq_len": 512},
             "hparams": {"effective_batch_size": 8, "learning_rate": 1e-3, "warmup_steps": 5, "lr_scheduler": "linear"},
             "budget": {"max_steps": steps}, "eval": {"max_items": 4, "max_new_tokens": 4},
             "resources": {"num_workers": workers, "zero_stage": 2,
                           "checkpoint_every": {"samples": 24}}}  # every 3 steps
    cfg = tmp_path / "trial.yaml"
    cfg.write_text(yaml.safe_dump(trial))

    # the golden run, uninterrupted (writing checkpoints too: they change nothing)
    _finish(_trainer(cfg, "--metrics-out", tmp_path / "golden.jsonl", "--checkpoint-dir", tmp_path / "golden-ck"))
    golden = _lines(tmp_path / "golden.jsonl")

    metrics, ck = tmp_path / "run" / "metrics.jsonl", tmp_path / "run" / "checkpoints"  # the default folder
    proc = _trainer(cfg, "--metrics-out", metrics, start_new_session=True)  # its workers in its group
    try:
        deadline = time.monotonic() + 600
        while find_latest(ck) is None if ck.exists() else True:  # the first complete checkpoint
            assert proc.poll() is None, f"the trainer ended before its first checkpoint: {proc.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)  # every worker at once, no chance to clean up: the worst case
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    killed = _lines(metrics)
    assert killed and killed[-1].get("event") != "final", "the trainer finished before it was killed"
    at = read_state(find_latest(ck)).step  # at least 3; more if it got further before the kill
    assert at % 3 == 0 and at <= killed[-1]["step"] < steps

    out = _finish(_trainer(cfg, "--metrics-out", metrics, "--resume-from", ck))
    assert json.loads(out.splitlines()[-1])["resumed_from_step"] == at
    lines = _lines(metrics)
    step_lines = [x for x in lines if "event" not in x]
    assert [x["step"] for x in step_lines] == list(range(1, steps + 1))  # each step once, none missing
    assert _rows(step_lines) == _rows(golden[:steps])  # exact after the resume too
    final, want = lines[-1], golden[-1]
    assert final["event"] == "final" and final["status"] == "completed"
    assert (final["eval_loss"], final["train_loss"]) == (want["eval_loss"], want["train_loss"])
    assert [p.name for p in ck.iterdir()] == [find_latest(ck).name]  # one checkpoint kept, no temp folder


def test_resume_from_a_missing_folder_is_a_clear_error(synth_dir, tmp_path):
    cfg = tmp_path / "trial.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"path": "builtin:tiny"},
                                   "data": {"train": [{"path": str(synth_dir / "train.jsonl")}]}}))
    proc = _trainer(cfg, "--resume-from", tmp_path / "nope")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2
    assert err.strip() == f"error: --resume-from: {tmp_path / 'nope'}: no such checkpoint or folder"
