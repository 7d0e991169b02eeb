"""A trial whose worker process dies mid-run (SIGKILL, as a lost node would) is retried from its
last checkpoint (issue 13): the retry continues after the checkpoint's step, the stored curve has
every step exactly once and equals an uninterrupted run's, each point carries the attempt that
wrote it, and the trial's checkpoints are gone once it has ended."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO, db, demo_spec
from trainer.reporting import InMemoryReporter

STEPS, BATCH, EVERY = 60, 8, 3  # a checkpoint every 3 steps (24 samples)
ONE_CONFIG = {"algorithm": "random", "num_trials": 1, "max_concurrent": 1,  # one config, known in advance
              "space": {"effective_batch_size": {"choice": [BATCH]}, "learning_rate": {"choice": [1e-3]},
                        "warmup_steps": {"choice": [5]}, "lr_scheduler": {"choice": ["linear"]}}}


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process we can see."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        out[int(entry.name)] = (int(stat.rsplit(")", 1)[1].split()[1]), cmd)
    return out


def trial_workers(driver: int, title: str = "ray::ImplicitFunc") -> list[int]:
    """The Ray workers running a Tune trial (`ray::ImplicitFunc`; a Ray Train worker:
    `ray::RayTrainWorker`) under this driver's Ray: its descendants only, so other sweeps on the
    machine are left alone."""
    procs = _processes()

    def descends(pid: int) -> bool:
        seen = set()
        while pid > 1 and pid not in seen:
            seen.add(pid)
            if pid == driver:
                return True
            pid = procs.get(pid, (0, ""))[0]
        return False

    return sorted(pid for pid, (_, cmd) in procs.items() if cmd.startswith(title) and descends(pid))


def _curve_so_far(env) -> list[tuple[int, int]]:
    """(step, attempt) of the stored points, or [] while the database is not ready."""
    if not (Path(env["SWEEPD_HOME"]) / "sweepd.db").exists():
        return []
    try:
        with closing(db(env)) as conn:
            return conn.execute("SELECT step, attempt FROM sweepd_metric_points ORDER BY step").fetchall()
    except sqlite3.OperationalError:  # not migrated yet, or busy
        return []


def _checkpoints(home: Path) -> list[Path]:
    return sorted(p for p in (home / "ray").rglob("checkpoint_*") if p.is_dir())


def golden_run(trial_config, workers: int, tmp_path: Path) -> list[dict]:
    """The uninterrupted run's step lines: in this process (one torch thread, as a Ray worker has),
    or for two workers the trainer CLI's local two-process launch (gloo, as under Ray Train)."""
    if workers == 1:
        import torch

        from trainer.loop import run_trial

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            golden = InMemoryReporter()
            run_trial(trial_config, golden)
        finally:
            torch.set_num_threads(threads)
        return [*golden.steps, {"event": "final", **golden.result}]
    cfg = tmp_path / "golden.yaml"
    cfg.write_text(json.dumps(trial_config.model_dump(mode="json")))
    proc = subprocess.run([sys.executable, "-m", "trainer", "run", str(cfg), "--metrics-out", str(tmp_path / "golden.jsonl")],
                          cwd=REPO, env=dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1"),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in (tmp_path / "golden.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_killed_trial_resumes_from_its_checkpoint_with_one_curve(sweep_env, tmp_path, workers):
    """One worker: the Tune trial's process dies. Two (Ray Train inside the trial): one of the two
    training workers dies; Ray Train's run fails, Tune retries the trial, and Ray Train's run of
    the same name hands every worker its latest checkpoint, each rank's ZeRO partition in it."""
    env, data = sweep_env
    home = Path(env["SWEEPD_HOME"])
    spec = demo_spec(data, tmp_path / "resume.yaml", search=ONE_CONFIG, budget={"max_samples": STEPS * BATCH},
                     fixed={"eval": {"max_items": 4, "max_new_tokens": 4}}, pruner={"type": "none"},
                     resources={"max_failures": 1, "checkpoint_every": {"samples": EVERY * BATCH},
                                "workers_per_trial": workers})
    title = "ray::ImplicitFunc" if workers == 1 else "ray::RayTrainWorker"
    log = tmp_path / "sweep.log"
    with log.open("wb") as out:
        driver = subprocess.Popen([sys.executable, "-m", "sweepd.cli", "run", str(spec), "--out",
                                   str(tmp_path / "result.json")], env=env, cwd=REPO, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    killed_at = None
    try:
        deadline = time.monotonic() + 600
        # a checkpoint is registered once a later step is stored (Tune takes no further result
        # from a trial until it has processed the checkpoint); then its worker dies, at once
        while killed_at is None:
            assert driver.poll() is None, f"the sweep ended before its trial was killed: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no checkpoint in 10 minutes: {log.read_text()[-3000:]}"
            curve = _curve_so_far(env)
            pids = trial_workers(driver.pid, title)
            if curve and curve[-1][0] > EVERY and _checkpoints(home) and len(pids) == workers:
                os.kill(pids[-1], signal.SIGKILL)
                killed_at = curve[-1][0]
            time.sleep(0.1)
        driver.wait(timeout=900)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    assert driver.returncode == 0, log.read_text()[-4000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["state"] == "succeeded"
    [trial] = result["trials"]
    assert trial["state"] == "completed", trial

    with closing(db(env)) as conn:
        trial_id, attempts, final, config, spec_doc = conn.execute(
            "SELECT t.id, t.attempts, t.metrics_final, t.config, s.spec FROM sweepd_trials t "
            "JOIN sweepd_sweeps s ON s.id = t.sweep_id").fetchone()
        points = conn.execute("SELECT step, attempt, samples, tokens, loss, grad_norm, lr FROM sweepd_metric_points "
                              "WHERE trial_id = ? ORDER BY step", (trial_id,)).fetchall()
        aside = conn.execute("SELECT attempt, step FROM sweepd_superseded_points WHERE trial_id = ? ORDER BY step",
                             (trial_id,)).fetchall()
        events = [m for (m,) in conn.execute("SELECT message FROM sweepd_events WHERE kind = 'state'")]
    # every step exactly once: attempt 1's up to the checkpoint the retry resumed from, attempt 2's after it
    assert [p[0] for p in points] == list(range(1, STEPS + 1))
    resumed_from = max(p[0] for p in points if p[1] == 1)
    assert [p[1] for p in points] == [1] * resumed_from + [2] * (STEPS - resumed_from)
    assert resumed_from % EVERY == 0 and EVERY <= resumed_from < killed_at + 2, (resumed_from, killed_at)
    assert attempts == 2 and json.loads(final)["resumed_from_step"] == resumed_from
    # the steps attempt 1 ran past that checkpoint are kept apart, not in the curve
    assert all(a == 1 and s > resumed_from for a, s in aside), aside
    assert "trial 1 crashed; retrying" in events

    # the curve is the uninterrupted run's, step for step (the same trial config)
    from sweepd.spec import SweepSpec

    lines = golden_run(SweepSpec.from_stored(json.loads(spec_doc)).trial_config(json.loads(config)), workers, tmp_path)
    want = [(s["step"], s["samples"], s["tokens"], s["loss"], s["grad_norm"], s["lr"]) for s in lines if "event" not in s]
    got = [(p[0], p[2], p[3], p[4], p[5], p[6]) for p in points]
    assert [g[:3] for g in got] == [w[:3] for w in want]
    assert [g[3:] for g in got] == [pytest.approx(w[3:], rel=1e-6) for w in want]
    assert trial["objective"] == pytest.approx(lines[-1]["eval_loss"], rel=1e-6)

    # the trial's checkpoints went when it ended; nothing is left behind locally either
    assert _checkpoints(home) == []
