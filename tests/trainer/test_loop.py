import json
import math
import subprocess
import sys

import pytest
import torch
import yaml

from trainer.loop import run_trial
from trainer.models import load_model
from trainer.reporting import InMemoryReporter
from trainer.schedules import make_scheduler


def lrs(name, warmup, total, base=1.0):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
    sched = make_scheduler(opt, name, warmup, total)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_lr_schedules_at_chosen_steps():
    const = lrs("constant", 10, 100)
    assert const[0] == 0.0 and const[5] == pytest.approx(0.5) and const[10:] == [1.0] * 90
    lin = lrs("linear", 0, 100)
    assert lin[0] == 1.0 and lin[50] == pytest.approx(0.5) and lin[99] == pytest.approx(0.01)
    cos = lrs("cosine", 10, 110)
    assert cos[5] == pytest.approx(0.5)
    assert cos[10] == pytest.approx(1.0)
    assert cos[60] == pytest.approx(0.5)  # half-way through the decay
    assert cos[109] == pytest.approx(0.5 * (1 + math.cos(math.pi * 99 / 100)))


def test_the_trial_reports_the_lr_it_used(trial_cfg):
    rep = InMemoryReporter()
    run_trial(trial_cfg(hparams={"lr_scheduler": "linear", "warmup_steps": 2, "learning_rate": 1e-3},
                        budget={"max_steps": 4}), rep)
    assert [s["lr"] for s in rep.steps] == pytest.approx([0.0, 5e-4, 1e-3, 5e-4])


def test_a_stop_request_ends_the_trial_cleanly(trial_cfg):
    rep = InMemoryReporter(stop_after_steps=3)
    result = run_trial(trial_cfg(budget={"max_steps": 50}), rep)
    assert result["status"] == "stopped"
    assert len(rep.steps) == 3 and result["steps"] == 3
    assert rep.result == result


def test_nan_ends_the_trial_as_diverged(trial_cfg, tmp_path):
    loaded = load_model("builtin:tiny")
    with torch.no_grad():
        loaded.model.model.layers[0].mlp.up_proj.weight[0, 0] = float("nan")
    loaded.model.save_pretrained(tmp_path / "nan-model")
    loaded.tokenizer.save_pretrained(tmp_path / "nan-model")
    rep = InMemoryReporter()
    result = run_trial(trial_cfg(model={"path": str(tmp_path / "nan-model")}, budget={"max_steps": 20}), rep)
    assert result["status"] == "diverged"
    assert result["steps"] == 1 and "step 1" in result["reason"]
    assert rep.steps[-1]["loss"] is None


def test_saved_model_reloads_and_trains_again(trial_cfg, synth_dir, tmp_path):
    out = tmp_path / "model"
    result = run_trial(trial_cfg(output_dir=str(out), budget={"max_steps": 2},
                                 data={"eval": [{"path": str(synth_dir / "eval.jsonl")}]},
                                 eval={"max_items": 30}), InMemoryReporter())
    assert result["model_dir"] == str(out) and (out / "config.json").exists()
    assert {"eval_loss", "mc_accuracy", "exact_match"} <= set(result)
    again = run_trial(trial_cfg(model={"path": str(out)}, budget={"max_steps": 1}), InMemoryReporter())
    assert again["status"] == "completed"


def run_cli(tmp_path, raw, *extra):
    path = tmp_path / "trial.yaml"
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return subprocess.run([sys.executable, "-m", "trainer", "run", str(path), "--metrics-out",
                           str(tmp_path / "m.jsonl"), *extra], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("raw,expected", [
    ({"model": {"path": "builtin:tiny"}, "data": {"train": [{"path": "x.jsonl"}]}, "hparams": {"learning_rate": -1}},
     "hparams.learning_rate: Input should be greater than 0"),
    ({"model": {"path": "builtin:huge"}, "data": {"train": [{"path": "x.jsonl"}]}}, "unknown builtin model 'builtin:huge'"),
    ({"model": {"path": "builtin:tiny"}, "data": {"train": [{"path": "x.jsonl"}]}, "hparams": {"batch": 3}},
     "hparams.batch: unknown field"),
    ({"model": {"path": "builtin:tiny"}, "data": {"train": [{"path": "x.jsonl"}]}, "budget": {}},
     "give exactly one of max_steps, max_samples, epochs"),
    ({"model": {"path": "builtin:tiny"}, "data": {"train": [{"path": "/nonexistent/x.jsonl"}]}},
     "/nonexistent/x.jsonl: cannot read"),
    ({"model": {"path": "/nonexistent-model"}, "data": {"train": [{"path": "x.jsonl"}]}}, "model.path: '/nonexistent-model' is not a directory"),
    ("model: [unclosed", "line 1: not valid YAML"),
])
def test_bad_trial_configs_get_a_message_not_a_traceback(tmp_path, raw, expected):
    proc = run_cli(tmp_path, raw)
    assert proc.returncode == 2
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow  # ~14 s: a real 3-step trial through the CLI in a fresh interpreter
def test_cli_writes_one_line_per_step_then_final(trial_cfg, tmp_path):
    cfg = trial_cfg(budget={"max_steps": 3})
    proc = run_cli(tmp_path, cfg.model_dump(mode="json"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [x.get("step") for x in lines[:3]] == [1, 2, 3]
    assert lines[-1]["event"] == "final" and lines[-1]["status"] == "completed"
