"""End-to-end sweeps: the real `sweepd` CLI, Ray Tune, Optuna, DeepSpeed trials on builtin:tiny."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from trainer.synthetic import make_data

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def sweep_env(tmp_path):
    """A home, data roots and built-in data of the test's own; returns (env, data_dir)."""
    data = tmp_path / "data"
    make_data(data, seed=0)
    env = dict(os.environ, SWEEPD_HOME=str(tmp_path / "home"), SWEEPD_DATA_ROOTS=str(tmp_path),
               DS_ACCELERATOR="cpu", PYTHONUNBUFFERED="1")
    env.pop("SWEEPD_DATABASE_URL", None)
    return env, data


# A smaller sweep for the crash and resume tests: they are about surviving, not about search.
SMALL = {"search": {"num_trials": 6}, "budget": {"max_samples": 1024},
         "pruner": {"grace": 128}, "save_best_model": True}


def demo_spec(data_dir: Path, path: Path, **overrides) -> Path:
    """examples/demo.yaml on the test's data; each override updates one top-level section."""
    spec = yaml.safe_load((REPO / "examples" / "demo.yaml").read_text())
    spec["data"]["train"] = [{"path": str(data_dir / "train.jsonl")}]
    spec["data"]["eval"] = [{"path": str(data_dir / "eval.jsonl")}]
    for key, value in overrides.items():
        spec[key] = {**spec[key], **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(spec))
    return path


def sweepd(*args, env, timeout=600, **kw):
    return subprocess.run([sys.executable, "-m", "sweepd.cli", *args], env=env, cwd=REPO, text=True,
                          capture_output=True, timeout=timeout, **kw)


def db(env) -> sqlite3.Connection:
    return sqlite3.connect(Path(env["SWEEPD_HOME"]) / "sweepd.db")
