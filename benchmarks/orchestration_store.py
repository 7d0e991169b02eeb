"""How many reported results per second sweepd's recorder sustains into the store.

The real recorder (sweepd/engine/recorder.py ``StoreRecorder``) is driven through Ray Tune's
callback hooks by hand (``on_trial_start``, ``on_trial_result`` per step, ``on_trial_complete``),
as Tune's driver calls them, with the curve bank's recorded steps as results, ``concurrency``
trials interleaved: its batching (FLUSH_EVERY_POINTS / FLUSH_EVERY_SECONDS), transactions, retry
wrapper and idempotent inserts, on a fresh, migrated database. No Ray: this is the store path's
capacity, not a sweep's (the sweep section measures that).

``fresh_database(url)`` makes a new, empty database on a PostgreSQL server
(benchmarks/throwaway_postgres.py starts one).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class BenchTrial:
    """What the recorder reads of a ray.tune Trial."""

    number: int
    params: dict[str, Any]
    last_result: dict[str, Any] = field(default_factory=dict)
    error_file: str | None = None

    @property
    def config(self) -> dict[str, Any]:
        from sweepd.protocol import NUMBER_KEY

        return {**self.params, NUMBER_KEY: self.number}


def recorded_results(steps_per_trial: int) -> list[list[dict]]:
    """Per curve-bank run, ``steps_per_trial`` of its recorded steps as Tune results."""
    from trainer.replay_bank import load_curves, resample
    from trainer.replay_config import BUILTIN_CURVES

    bank = load_curves(BUILTIN_CURVES["builtin:curve_bank"])
    out = []
    for curve in bank.curves:
        picked = resample(curve.n_steps, steps_per_trial)
        out.append([{**{k: col[i] for k, col in curve.steps.items()}, "training_iteration": n + 1,
                     "trial_id": f"t{curve.id}", "time_this_iter_s": 0.04} for n, i in enumerate(picked)])
    return out


def recorder_rate(db_url: str, *, results: int, steps_per_trial: int = 50, concurrency: int = 8) -> dict[str, Any]:
    """Feed ``results`` step results (``concurrency`` trials at a time) through a StoreRecorder
    into a fresh sweep at ``db_url``; results per second, start to last write."""
    from sqlalchemy import func, select

    from sweepd.engine.recorder import StoreRecorder
    from sweepd.protocol import FINAL_MARKER
    from sweepd.store import repo, upgrade
    from sweepd.store.db import make_engine, session_scope
    from sweepd.store.models import MetricPoint, Trial

    upgrade(db_url)
    engine = make_engine(db_url)
    with session_scope(engine) as s:
        sweep = repo.create_sweep(s, name="recorder-bench", spec={})
        repo.set_sweep_state(s, sweep.id, "running")
        sweep_id = sweep.id
    curves = recorded_results(steps_per_trial)
    recorder = StoreRecorder(db_url, sweep_id, "eval_loss")
    started = time.perf_counter()
    fed = n_trials = 0
    while fed < results:
        batch = [BenchTrial(n_trials + k, {"effective_batch_size": 32, "learning_rate": 1e-3})
                 for k in range(1, concurrency + 1)]
        n_trials += concurrency
        for trial in batch:
            recorder.on_trial_start(0, batch, trial)
        runs = [curves[(t.number - 1) % len(curves)] for t in batch]
        for k in range(max(len(r) for r in runs)):  # the trials' steps interleaved, as they arrive
            for trial, run in zip(batch, runs):
                if k < len(run) and fed < results:
                    recorder.on_trial_result(k, batch, trial, run[k])
                    trial.last_result = run[k]
                    fed += 1
        for trial in batch:
            trial.last_result = {**trial.last_result, FINAL_MARKER: "completed", "eval_loss": 1.5}
            recorder.on_trial_complete(0, batch, trial)
    recorder.on_experiment_end(batch)
    elapsed = time.perf_counter() - started
    with session_scope(engine) as s:
        stored = s.scalar(select(func.count()).select_from(MetricPoint).join(Trial, Trial.id == MetricPoint.trial_id)
                          .where(Trial.sweep_id == sweep_id))
    engine.dispose()
    return {"results": fed, "trials": n_trials, "stored_points": int(stored), "seconds": round(elapsed, 3),
            "results_per_second": round(fed / elapsed, 1)}


def sqlite_url(folder: Path) -> str:
    return f"sqlite:///{folder / 'sweepd.db'}"


def fresh_database(server_url: str) -> str:
    """A new, empty database on the server; its URL."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    url = make_url(server_url)
    name = f"orch_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)
