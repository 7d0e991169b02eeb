"""A trial crash injected inside the trainer, end to end: the trainer's own message reaches the
store, the API, the CLI and result.json, with no Ray wrapper, traceback or ANSI codes; the trial is
not retried, and the sweep stops once its first max_concurrent trials failed the same way.

The injection: a model folder whose weights were never copied (config.json and tokenizer files
only). The spec check and a data preflight see a usable folder (they read no weights); only the
trainer, loading the model, finds out: trainer.models.ModelLoadError."""

import json
import re

from fastapi.testclient import TestClient

from tests.e2e.conftest import db, demo_spec, sweepd
from trainer.models import load_model

ESCAPES = re.compile(r"\x1b|\[\d+m")


def test_a_trainer_error_is_the_trial_s_and_the_sweep_s_message(sweep_env, tmp_path):
    env, data = sweep_env
    model_dir = tmp_path / "no-weights"
    loaded = load_model("builtin:tiny")
    loaded.model.save_pretrained(model_dir)
    loaded.tokenizer.save_pretrained(model_dir)
    for weights in model_dir.glob("*.safetensors"):
        weights.unlink()
    spec = demo_spec(data, tmp_path / "no-weights.yaml", model={"path": str(model_dir)},
                     search={"num_trials": 4, "max_concurrent": 2}, budget={"max_samples": 256},
                     pruner={"type": "none"}, resources={"max_failures": 2})
    proc = sweepd("run", str(spec), "--out", str(tmp_path / "result.json"), env=env, timeout=600)

    # the CLI: exit 1, one line with the sweep's error, no traceback
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "ray::" not in proc.stderr and "\x1b" not in proc.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    error = result["error"]
    assert re.fullmatch(rf"all [23] trials failed: model\.path: cannot load {re.escape(repr(str(model_dir)))}: .+",
                        error), error
    message = error.split(": ", 1)[1]
    [line] = [ln for ln in proc.stderr.splitlines() if message in ln]
    assert line == f"sweep {result['sweep_id']} (demo) failed: {error}"

    # result.json: each failed trial has the trainer's message; the sweep stopped launching trials
    failed = [t for t in result["trials"] if t["state"] == "failed" and not t["reason"].startswith("not run")]
    assert len(failed) == int(error.split()[1]) >= 2
    assert all(t["reason"] == message and "error_detail" not in t for t in failed)
    assert len(result["trials"]) < 4, "the sweep went on launching trials after the same failure"
    assert not ESCAPES.search(json.dumps(result))

    # the store: no retry (attempts 1), and Optuna's trials FAIL
    with db(env) as conn:
        assert {a for (a,) in conn.execute("SELECT attempts FROM sweepd_trials WHERE state = 'failed' "
                                           "AND error NOT LIKE 'not run%'")} == {1}
        assert {s for (s,) in conn.execute("SELECT state FROM trials")} <= {"FAIL"}

    # the API
    from api.app import create_app
    from sweepd.settings import Settings

    settings = Settings(home=env["SWEEPD_HOME"], public_read=True)
    with TestClient(create_app(settings)) as client:
        sweep = client.get(f"/api/v1/sweeps/{result['sweep_id']}").json()
        assert (sweep["state"], sweep["error"]) == ("failed", error)
        trials = client.get(f"/api/v1/sweeps/{result['sweep_id']}/trials").json()["items"]
        # the trials that failed by themselves (others may have been stopped by the same-failure
        # stop while they loaded the model: "not run to the end")
        own = [t for t in sorted(trials, key=lambda t: t["number"]) if not (t["error"] or "").startswith("not run")]
        assert len(own) >= 2
        assert all((t["state"], t["error"], t["error_detail"]) == ("failed", message, None) for t in own)
