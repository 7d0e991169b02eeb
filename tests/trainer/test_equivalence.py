"""Exact effective batches: the first step does not depend on how the batch is divided."""

import json
import subprocess
import sys

import pytest
import yaml

from trainer.loop import run_trial
from trainer.reporting import InMemoryReporter


def first_step(cfg):
    rep = InMemoryReporter()
    result = run_trial(cfg, rep)
    assert result["status"] == "completed"
    return rep.steps[0]


@pytest.mark.slow  # ~2 min on 2 cores: three real trials, one of them two DeepSpeed workers in a subprocess
def test_micro_batching_and_workers_give_the_same_first_step(trial_cfg, tmp_path):
    four_by_four = first_step(trial_cfg(resources={"micro_batch_size": 4}))
    one_by_sixteen = first_step(trial_cfg(resources={"micro_batch_size": 16}))

    cfg = trial_cfg(resources={"micro_batch_size": 4, "num_workers": 2})
    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    out = tmp_path / "m.jsonl"
    proc = subprocess.run([sys.executable, "-m", "trainer", "run", str(path), "--metrics-out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two_workers = json.loads(out.read_text().splitlines()[0])

    for other in (one_by_sixteen, two_workers):
        assert other["samples"] == four_by_four["samples"] == 16
        assert other["loss"] == pytest.approx(four_by_four["loss"], rel=1e-4)
        assert other["grad_norm"] == pytest.approx(four_by_four["grad_norm"], rel=1e-4)


def test_zero_stages_give_the_same_first_step_grad_norm(trial_cfg):
    norms = {stage: first_step(trial_cfg(resources={"zero_stage": stage}))["grad_norm"] for stage in (0, 1, 2, 3)}
    for stage in (1, 2, 3):
        assert norms[stage] == pytest.approx(norms[0], rel=1e-4), norms
    assert norms[0] > 0


def test_every_step_consumes_exactly_the_effective_batch(trial_cfg):
    rep = InMemoryReporter()
    run_trial(trial_cfg(hparams={"effective_batch_size": 7}, budget={"max_steps": 3}), rep)
    assert [s["samples"] for s in rep.steps] == [7, 14, 21]
    assert all(b["tokens"] > a["tokens"] for a, b in zip(rep.steps, rep.steps[1:]))
