"""Scale-out (issue 6): `sweepd run` with SWEEPD_RAY_ADDRESS runs its trials on a real Ray cluster.

The cluster (conftest.py) has two nodes of 1 CPU each; the sweep's single trial has 2 workers of
1 CPU each, so Ray Train must place one DeepSpeed worker on each node, and the trial's final result
records the node of every worker (`worker_nodes`, by rank).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.cluster.conftest import HEAD_IP, WORKER_IP
from trainer.synthetic import make_data

REPO = Path(__file__).resolve().parents[2]
SWEEP_TIMEOUT_S = 300


def two_worker_spec(data: Path, path: Path) -> Path:
    spec = {
        "name": "two-nodes",
        "model": {"path": "builtin:tiny"},
        "data": {"train": [{"path": str(data / "train.jsonl")}], "eval": [{"path": str(data / "eval.jsonl")}],
                 "max_seq_len": 512},
        "search": {"algorithm": "random", "num_trials": 1, "max_concurrent": 1, "seed": 0,
                   "space": {"learning_rate": {"loguniform": [1.0e-4, 1.0e-2]}}},
        "fixed": {"hparams": {"effective_batch_size": 16}, "eval": {"max_items": 20}},
        "budget": {"max_samples": 64},  # 4 optimizer steps: enough to train over gloo across nodes
        "pruner": {"type": "none"},
        "objective": {"metric": "eval_loss"},
        "resources": {"workers_per_trial": 2, "cpus_per_worker": 1, "zero_stage": 2, "max_failures": 0},
    }
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.slow
def test_sweep_runs_a_two_worker_trial_across_both_nodes(ray_cluster, tmp_path):
    assert sorted((n["ip"], n["cpus"], n["head"]) for n in ray_cluster.nodes) == [
        (HEAD_IP, 1.0, True), (WORKER_IP, 1.0, False)]

    data = tmp_path / "data"
    make_data(data, seed=0)
    spec = two_worker_spec(data, tmp_path / "spec.yaml")
    home = tmp_path / "home"
    env = dict(ray_cluster.env, SWEEPD_HOME=str(home), SWEEPD_DATA_ROOTS=str(tmp_path),
               SWEEPD_RAY_ADDRESS=ray_cluster.address, DS_ACCELERATOR="cpu")
    env.pop("SWEEPD_DATABASE_URL", None)

    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "sweepd.cli", "run", str(spec), "--out",
                             str(tmp_path / "result.json")],
                            cwd=REPO, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=SWEEP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the sweep did not finish within {SWEEP_TIMEOUT_S} s:\n{out[-4000:]}")
    print(f"two-node sweep took {time.monotonic() - started:.0f} s")
    assert proc.returncode == 0, out[-4000:]
    # the driver joined the cluster rather than starting a Ray of its own
    assert f"Connecting to existing Ray cluster at address: {ray_cluster.address}" in out, out[-4000:]

    result = json.loads((tmp_path / "result.json").read_text())
    assert result["state"] == "succeeded", result
    assert [t["state"] for t in result["trials"]] == ["completed"], result["trials"]
    assert result["best"]["objective"] is not None

    with sqlite3.connect(home / "sweepd.db") as conn:
        rows = conn.execute("SELECT state, metrics_final FROM sweepd_trials WHERE sweep_id = ?",
                            (result["sweep_id"],)).fetchall()
    assert len(rows) == 1 and rows[0][0] == "completed", rows
    final = json.loads(rows[0][1])
    workers = final["worker_nodes"].split(",")
    assert len(workers) == 2 and set(workers) == {HEAD_IP, WORKER_IP}, final
    assert final["samples"] == 64 and final["status"] == "completed", final
