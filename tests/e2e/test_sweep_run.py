import json
import time

from tests.e2e.conftest import db, demo_spec, sweepd


def test_demo_sweep_stops_trials_early_and_finds_a_best(sweep_env, tmp_path):
    env, data = sweep_env
    spec = demo_spec(data, tmp_path / "demo.yaml")
    started = time.monotonic()
    proc = sweepd("run", str(spec), "--out", str(tmp_path / "result.json"), env=env, timeout=900)
    elapsed = time.monotonic() - started
    print(f"demo sweep took {elapsed:.0f} s")
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((tmp_path / "result.json").read_text())

    assert result["state"] == "succeeded"
    assert len(result["trials"]) == 8
    assert set(result) >= {"sweep_id", "state", "best", "trials", "ledger"}
    stopped = [t for t in result["trials"] if t["state"] == "stopped"]
    assert stopped, "the pruner stopped no trial"
    for t in stopped:
        assert t["stopped_at"] in (256, 768)
        assert t["reason"].startswith(f"stopped at {int(t['stopped_at']):,} samples: grad norm")
        assert t["objective"] is None
    completed = [t for t in result["trials"] if t["state"] == "completed"]
    best = result["best"]
    assert best["objective"] == min(t["objective"] for t in completed)
    assert set(best["config"]) == {"effective_batch_size", "learning_rate", "warmup_steps", "lr_scheduler"}
    ledger = result["ledger"]
    assert ledger["trials_stopped"] == len(stopped)
    assert 0 < ledger["fraction_saved"] < 1
    assert ledger["spent"]["samples"] + ledger["stopped_trials_would_have_spent"]["samples"] == 8 * 2048

    with db(env) as conn:
        # Optuna's study in the same database: stopped trials are PRUNED with their curves.
        states = dict(conn.execute("SELECT state, COUNT(*) FROM trials GROUP BY state").fetchall())
        assert states == {"COMPLETE": len(completed), "PRUNED": len(stopped)}
        pruned_with_values = conn.execute(
            "SELECT COUNT(DISTINCT t.trial_id) FROM trials t JOIN trial_intermediate_values v "
            "ON v.trial_id = t.trial_id WHERE t.state = 'PRUNED'").fetchone()[0]
        assert pruned_with_values == len(stopped)
        # every decision is stored with its inputs
        rows = conn.execute("SELECT message, payload FROM sweepd_events WHERE kind = 'decision'").fetchall()
        assert len(rows) >= len(stopped)
        payload = json.loads(rows[0][1])
        assert {"rung", "cohort", "score", "cutoff", "reason"} <= set(payload)


def test_validate_prints_the_plan_and_rejects_bad_specs(sweep_env, tmp_path):
    env, data = sweep_env
    ok = sweepd("validate", str(demo_spec(data, tmp_path / "ok.yaml")), env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "rungs (samples): 256, 768" in ok.stdout
    bad = demo_spec(data, tmp_path / "bad.yaml", search={"num_trials": 0}, pruner={"signal": "vibes"})
    proc = sweepd("validate", str(bad), env=env, timeout=120)
    assert proc.returncode == 2
    assert "search.num_trials" in proc.stderr and "pruner.signal" in proc.stderr
    assert "Traceback" not in proc.stderr
