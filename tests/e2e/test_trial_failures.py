"""Trials that crash are retried max_failures times, then FAILED with the error text; trials
that diverge are DIVERGED. Both through the real engine."""

import json

import torch

from tests.e2e.conftest import db, demo_spec, sweepd
from trainer.models import load_model

TWO_TRIALS = {"search": {"num_trials": 2, "max_concurrent": 2}, "budget": {"max_samples": 256},
              "pruner": {"type": "none"}}


def test_crashing_trials_are_retried_then_failed_with_their_error(sweep_env, tmp_path):
    env, data = sweep_env
    # every sample is longer than 16 tokens: the trainer raises on the first one
    spec = demo_spec(data, tmp_path / "crash.yaml", data={"max_seq_len": 16},
                     resources={"max_failures": 1}, **TWO_TRIALS)
    proc = sweepd("run", str(spec), "--out", str(tmp_path / "result.json"), env=env, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["state"] == "failed" and result["best"] is None
    assert [t["state"] for t in result["trials"]] == ["failed", "failed"]
    for t in result["trials"]:
        assert "over-long sample" in t["reason"] and "max_seq_len=16" in t["reason"]
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
