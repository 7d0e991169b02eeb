"""Trials that crash are retried max_failures times, then FAILED with the exception's type and
message (the traceback apart); trials that diverge are DIVERGED. Both through the real engine.
(A trainer error is not retried: tests/e2e/test_trial_error_messages.py.)"""

import json

import torch

from tests.e2e.conftest import db, demo_spec, sweepd
from trainer.models import load_model

TWO_TRIALS = {"search": {"num_trials": 2, "max_concurrent": 2}, "budget": {"max_samples": 256},
              "pruner": {"type": "none"}}


def test_crashing_trials_are_retried_then_failed_with_their_error(sweep_env, tmp_path):
    env, data = sweep_env
    # weights cut short: safetensors raises while loading (no trainer error: a crash, retried); the
    # spec check and the data preflight read no weights, so only the trial finds out
    model_dir = tmp_path / "cut-weights"
    loaded = load_model("builtin:tiny")
    loaded.model.save_pretrained(model_dir)
    loaded.tokenizer.save_pretrained(model_dir)
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    spec = demo_spec(data, tmp_path / "crash.yaml", model={"path": str(model_dir)},
                     resources={"max_failures": 1}, **TWO_TRIALS)
    proc = sweepd("run", str(spec), "--out", str(tmp_path / "result.json"), env=env, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["state"] == "failed" and result["best"] is None
    assert [t["state"] for t in result["trials"]] == ["failed", "failed"]
    for t in result["trials"]:
        assert t["reason"].startswith("SafetensorError: ")  # the exception's type and message
        assert t["error_detail"].rstrip().endswith(t["reason"].split(": ", 1)[1])  # its traceback, apart
    assert result["error"] == f"all 2 trials failed: {result['trials'][0]['reason']}"
    with db(env) as conn:
        assert conn.execute("SELECT attempts FROM sweepd_trials").fetchall() == [(2,), (2,)]  # 1 + 1 retry
        assert {s for (s,) in conn.execute("SELECT state FROM trials")} == {"FAIL"}


def test_diverging_trials_are_diverged_not_failed(sweep_env, tmp_path):
    env, data = sweep_env
    loaded = load_model("builtin:tiny")
    with torch.no_grad():
        loaded.model.model.layers[0].mlp.up_proj.weight[0, 0] = float("nan")
    model_dir = tmp_path / "nan-model"
    loaded.model.save_pretrained(model_dir)
    loaded.tokenizer.save_pretrained(model_dir)
    spec = demo_spec(data, tmp_path / "diverge.yaml", model={"path": str(model_dir)}, **TWO_TRIALS)
    proc = sweepd("run", str(spec), "--out", str(tmp_path / "result.json"), env=env, timeout=600)
    result = json.loads((tmp_path / "result.json").read_text())
    assert proc.returncode == 1 and result["state"] == "failed", proc.stderr[-3000:]
    assert [t["state"] for t in result["trials"]] == ["diverged", "diverged"]
    assert all("non-finite loss at step 1" in t["reason"] for t in result["trials"])
