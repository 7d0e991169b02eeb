"""A replay sweep through the real `sweepd run`: Ray Tune, Optuna TPE, the ASHA pruner and the
store, on recorded curves (builtin:replay, trainer/replay.py) instead of training."""

from __future__ import annotations

import gzip
import json
import os
import time

import yaml

from tests.e2e.conftest import db, sweepd
from trainer.replay_bank import load_curves, resample
from trainer.replay_config import BUILTIN_CURVES

TRIALS = 10
MAX_REPORTS = 32
SPEC = {
    "name": "replay-e2e",
    "model": {"path": "builtin:replay",
              "replay": {"curves": "builtin:curve_bank", "seconds_per_step": 0.01, "max_reports": MAX_REPORTS}},
    "search": {"algorithm": "tpe", "num_trials": TRIALS, "max_concurrent": 2, "seed": 0,
               "space": {"effective_batch_size": {"choice": [8, 32, 128]},
                         "learning_rate": {"loguniform": [2.0e-4, 2.0e-2]}}},
    "budget": {"max_samples": 4096},
    "pruner": {"type": "asha", "signal": "loss", "grace": 512, "reduction_factor": 3, "time_attr": "samples"},
    "objective": {"metric": "eval_loss", "mode": "min"},
    "resources": {"cpus_per_worker": 0.5},
}


def recorded_runs() -> dict[str, dict]:
    """The curve bank's runs, read straight from the file."""
    with gzip.open(BUILTIN_CURVES["builtin:curve_bank"], "rt") as fh:
        return {d["id"]: d for d in map(json.loads, fh) if d.get("kind") != "meta"}


def test_a_replay_sweep_stops_trials_early_and_stores_the_recorded_curves(tmp_path):
    env = dict(os.environ, SWEEPD_HOME=str(tmp_path / "home"), SWEEPD_DATA_ROOTS=str(tmp_path), PYTHONUNBUFFERED="1")
    env.pop("SWEEPD_DATABASE_URL", None)
    spec = tmp_path / "replay.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    started = time.monotonic()
    proc = sweepd("run", str(spec), "--out", str(tmp_path / "result.json"), env=env, timeout=300)
    print(f"replay sweep took {time.monotonic() - started:.0f} s")
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["state"] == "succeeded"

    runs = recorded_runs()
    bank = load_curves(BUILTIN_CURVES["builtin:curve_bank"])
    with db(env) as conn:
        trials = conn.execute("SELECT id, number, config, state, objective, metrics_final, stopped_at, seconds "
                              "FROM sweepd_trials ORDER BY number").fetchall()
        assert [t[1] for t in trials] == list(range(1, TRIALS + 1))
        states = [t[3] for t in trials]
        assert set(states) <= {"completed", "stopped"} and "completed" in states
        assert states.count("stopped") >= 1, "the pruner stopped no trial"
        for trial_id, number, config, state, objective, final, stopped_at, seconds in trials:
            config = json.loads(config)
            # the run nearest the trial's hyperparameters (no warmup, constant schedule: the trial defaults)
            run_id = bank.nearest(config["effective_batch_size"], config["learning_rate"], 0, "constant").id
            run = runs[run_id]
            picked = resample(len(run["steps"]["step"]), MAX_REPORTS)
            points = conn.execute("SELECT step, samples, tokens, loss, grad_norm, lr, seconds FROM sweepd_metric_points "
                                  "WHERE trial_id = ? ORDER BY step", (trial_id,)).fetchall()
            expected = [tuple(run["steps"][k][i] for k in ("step", "samples", "tokens", "loss", "grad_norm", "lr"))
                        + (round(0.01 * (n + 1), 4),) for n, i in enumerate(picked)]
            assert points == expected[:len(points)], f"trial {number}: not the curve of {run_id}"
            assert seconds == points[-1][6]
            if state == "completed":
                assert len(points) == len(expected)
                final = json.loads(final)
                assert final["replayed_run"] == run_id
                assert objective == final["eval_loss"] == run["final"]["eval_loss"]
            else:  # stopped at a rung: the curve up to there, no objective
                assert objective is None and stopped_at in (512, 1536)
                assert stopped_at <= points[-1][1] < 4096
        # Optuna's study in the same database: stopped trials are PRUNED, the others COMPLETE
        optuna = dict(conn.execute("SELECT state, COUNT(*) FROM trials GROUP BY state").fetchall())
        assert optuna == {"COMPLETE": states.count("completed"), "PRUNED": states.count("stopped")}
        decisions = conn.execute("SELECT COUNT(*) FROM sweepd_events WHERE kind = 'decision'").fetchone()[0]
        assert decisions >= states.count("stopped")

    best = result["best"]
    assert best["objective"] == min(t["objective"] for t in result["trials"] if t["state"] == "completed")
    assert result["ledger"]["trials_stopped"] == states.count("stopped")
