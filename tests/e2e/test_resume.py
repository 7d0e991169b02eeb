"""SIGKILL the sweep driver mid-sweep, run again: the sweep completes with exactly num_trials
trials, no duplicate metric rows, nothing left running."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

from tests.e2e.conftest import REPO, SMALL, db, demo_spec, sweepd

FINISHED = "('completed', 'stopped')"


def progress(env) -> tuple[int, list[str]] | None:
    """(finished trials, the sweeps' states), or None while the database is not ready: not
    created or not migrated yet (no sweepd tables), or locked by a writer. Any other error (a
    broken query, a corrupt file) is raised at once rather than polled until the deadline."""
    if not (Path(env["SWEEPD_HOME"]) / "sweepd.db").exists():
        return None  # sqlite3.connect would create an empty file in the driver's place
    try:
        with closing(db(env)) as conn:
            tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not {"sweepd_sweeps", "sweepd_trials"} <= tables:
                return None  # the driver has not migrated the database yet
            finished = conn.execute(f"SELECT COUNT(*) FROM sweepd_trials WHERE state IN {FINISHED}").fetchone()[0]
            states = [state for (state,) in conn.execute("SELECT state FROM sweepd_sweeps")]
            return finished, states
    except sqlite3.OperationalError as err:
        if "database is locked" in str(err) or "database is busy" in str(err):
            return None
        raise


def test_killed_driver_resumes_without_rerunning_finished_trials(sweep_env, tmp_path):
    env, data = sweep_env
    spec = demo_spec(data, tmp_path / "demo.yaml", **SMALL)
    log = tmp_path / "first-run.log"  # a file, not a pipe: nobody reads it while the driver runs
    with log.open("wb") as out:
        first = subprocess.Popen([sys.executable, "-m", "sweepd.cli", "run", str(spec)], env=env, cwd=REPO,
                                 stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        timeout = 600
        deadline = time.monotonic() + timeout
        seen = progress(env)
        while (seen is None or seen[0] < 3) and first.poll() is None:
            assert time.monotonic() < deadline, (
                f"waited {timeout} s for 3 finished (completed or stopped) trials before killing the "
                f"driver; last seen: " + ("the database not ready (missing, unmigrated or locked)" if seen is None
                                          else f"{seen[0]} finished trials, sweep states {seen[1]}"))
            time.sleep(0.5)
            seen = progress(env)
        assert first.poll() is None, (
            f"the sweep driver exited ({first.returncode}) before it could be killed; last seen: {seen}; "
            f"its output ends: {log.read_text(errors='replace')[-3000:]}")
    except BaseException:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
        raise
    before = seen[0]
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    time.sleep(3)  # let Ray's fate-shared processes go

    with db(env) as conn:
        done_before = dict(conn.execute("SELECT number, state FROM sweepd_trials WHERE state IN "
                                        "('completed', 'stopped')").fetchall())
        assert conn.execute("SELECT state FROM sweepd_sweeps").fetchall() == [("running",)]

    proc = sweepd("run", str(spec), "--out", str(tmp_path / "result.json"), env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "resuming sweep" in proc.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["state"] == "succeeded"
    assert sorted(t["number"] for t in result["trials"]) == list(range(1, SMALL["search"]["num_trials"] + 1))
    assert before >= 3
    # save_best_model: the best trial's model is kept in Hugging Face format, the others removed
    best_dir = Path(result["ledger"]["best_model_dir"])
    assert (best_dir / "config.json").exists() and (best_dir / "tokenizer_config.json").exists()
    assert [p for p in best_dir.parent.iterdir() if p.is_dir()] == [best_dir]

    with db(env) as conn:
        assert conn.execute("SELECT COUNT(*) FROM sweepd_sweeps").fetchone()[0] == 1
        assert conn.execute("SELECT COUNT(*) FROM sweepd_trials").fetchone()[0] == SMALL["search"]["num_trials"]
        assert conn.execute("SELECT COUNT(*) FROM sweepd_trials WHERE state IN ('running', 'pending')").fetchone()[0] == 0
        # finished trials were not rerun: one attempt each, same state as before the kill
        for number, state in done_before.items():
            row = conn.execute("SELECT state, attempts FROM sweepd_trials WHERE number = ?", (number,)).fetchone()
            assert row == (state, 1), (number, row)
        # no duplicate metric rows: one per (trial, step), steps 1..n without gaps
        for trial_id, n, lo, hi in conn.execute(
                "SELECT trial_id, COUNT(*), MIN(step), MAX(step) FROM sweepd_metric_points GROUP BY trial_id"):
            assert (n, lo) == (hi, 1), (trial_id, n, lo, hi)
        # Optuna: exactly the sweep's trials finished; a trial asked for just before the kill and
        # never run is closed as FAIL, never left RUNNING
        states = [s for (s,) in conn.execute("SELECT state FROM trials").fetchall()]
        assert sum(s in ("COMPLETE", "PRUNED") for s in states) == SMALL["search"]["num_trials"], states
        assert set(states) <= {"COMPLETE", "PRUNED", "FAIL"}, states
