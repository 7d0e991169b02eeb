"""A budget-first sweep (search.compute_budget in samples, no num_trials) whose driver is SIGKILLed
mid-run and resumed: the samples spent are exactly what the trials report, each trial once, and
within the budget (a trial starts only when its full cost fits: sweepd/engine/budget.py)."""

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import closing

import yaml

from tests.e2e.conftest import REPO, db, demo_spec, sweepd
from tests.e2e.test_resume import progress

BUDGET = 5000  # samples: about five full trials
FULL = 1024  # a trial's full budget (max_samples 1024 at batch 8, 16 or 32)


def running_with_samples(env) -> int:
    with closing(db(env)) as conn:
        return conn.execute("SELECT COUNT(*) FROM sweepd_trials WHERE state = 'running' AND samples > 0").fetchone()[0]


def test_the_budget_is_exact_across_a_driver_sigkill_and_a_resume(sweep_env, tmp_path):
    env, data = sweep_env
    path = demo_spec(data, tmp_path / "budget.yaml", budget={"max_samples": FULL}, pruner={"grace": 128})
    raw = yaml.safe_load(path.read_text())
    raw["name"] = "budget-demo"
    raw["search"].pop("num_trials")  # the budget decides; num_trials is only the cap (1000)
    raw["search"]["compute_budget"] = {"samples": BUDGET}
    path.write_text(yaml.safe_dump(raw))

    log = tmp_path / "first-run.log"
    with log.open("wb") as out:
        first = subprocess.Popen([sys.executable, "-m", "sweepd.cli", "run", str(path)], env=env, cwd=REPO,
                                 stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        seen = progress(env)
        # kill it with two trials finished and one part-way (samples in the store)
        while (seen is None or seen[0] < 2 or not running_with_samples(env)) and first.poll() is None:
            assert time.monotonic() < deadline, f"no trial part-way after 2 finished; last seen {seen}"
            time.sleep(0.3)
            seen = progress(env)
        assert first.poll() is None, (f"the driver exited ({first.returncode}) before it could be killed; "
                                      f"its output ends: {log.read_text(errors='replace')[-3000:]}")
    except BaseException:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
        raise
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    time.sleep(3)  # let Ray's fate-shared processes go

    with closing(db(env)) as conn:
        before = {n: (state, samples) for n, state, samples in
                  conn.execute("SELECT number, state, samples FROM sweepd_trials")}
        killed_spent = sum(samples for _, samples in before.values())
    assert any(state == "running" and samples > 0 for state, samples in before.values()), before

    proc = sweepd("run", str(path), "--out", str(tmp_path / "result.json"), env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "resuming sweep" in proc.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["state"] == "succeeded"

    with closing(db(env)) as conn:
        rows = conn.execute("SELECT id, number, state, samples, attempts, metrics_final FROM sweepd_trials "
                            "ORDER BY number").fetchall()
        last_point = dict(conn.execute("SELECT trial_id, MAX(samples) FROM sweepd_metric_points GROUP BY trial_id"))
        for trial_id, n, lo, hi in conn.execute(
                "SELECT trial_id, COUNT(*), MIN(step), MAX(step) FROM sweepd_metric_points GROUP BY trial_id"):
            assert (n, lo) == (hi, 1), (trial_id, n, lo, hi)  # no metric row twice
        events = [m for (m,) in conn.execute("SELECT message FROM sweepd_events WHERE kind = 'info'")]
        optuna_states = [s for (s,) in conn.execute("SELECT state FROM trials")]

    numbers = [r[1] for r in rows]
    assert numbers == list(range(1, len(rows) + 1))  # one row per trial
    assert all(r[2] in ("completed", "stopped", "diverged", "failed") for r in rows), rows
    for trial_id, number, state, samples, _, final in rows:
        # what the trial itself reports: its final result, or (stopped) its last step
        reported = json.loads(final)["samples"] if state in ("completed", "diverged") else last_point.get(trial_id, 0)
        assert samples == reported, (number, state, samples, reported)
        assert samples <= FULL
    spent = sum(r[3] for r in rows)
    budget = result["ledger"]["budget"]
    assert spent == budget["spent"] == result["ledger"]["spent"]["samples"]
    assert BUDGET - FULL < spent <= BUDGET, spent  # never over; less than one full trial left
    assert budget["trials_launched"] == len(rows) and budget["remaining"] == BUDGET - spent
    for trial_id, number, state, samples, attempts, _ in rows:  # finished before the kill: untouched
        if before.get(number, ("running",))[0] != "running":
            assert (state, samples, attempts) == (*before[number], 1), number
    # Optuna: each sweep trial that ended is COMPLETE or PRUNED once
    assert sum(s in ("COMPLETE", "PRUNED") for s in optuna_states) == sum(r[2] in ("completed", "stopped") for r in rows)
    assert any(m.startswith("compute budget: ") and "no more trials" in m for m in events), events
    print(f"\nbudget {BUDGET} samples: spent {spent} by {len(rows)} trials "
          f"({', '.join(f'{r[1]}:{r[2]}@{r[3]}' for r in rows)}); at the kill {killed_spent} in {len(before)} rows")
