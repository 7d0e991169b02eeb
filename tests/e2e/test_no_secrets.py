"""#15 finding 9: the database URL, password included, was pickled into Ray Tune's tuner.pkl (and
the searcher's state, the trials' parameters). A real `sweepd run` on PostgreSQL as a role with a
password: the sweep completes, and the password is in no file of its Ray experiment (nor anywhere
under SWEEPD_HOME), while the URL without it is there (the check reads the files that hold it)."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy.engine import make_url

from tests.e2e.conftest import demo_spec, sweepd
from tests.secret_db import password_database

TINY = {"search": {"num_trials": 2, "max_concurrent": 1}, "budget": {"max_samples": 256},
        "pruner": {"grace": 128}}


def files_holding(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_a_sweep_on_a_password_protected_database_pickles_no_password(sweep_env, tmp_path, _postgres_databases):
    env, data = sweep_env
    spec = demo_spec(data, tmp_path / "tiny.yaml", **TINY)
    with password_database(_postgres_databases) as (url, password):
        env = {**env, "SWEEPD_DATABASE_URL": url}
        proc = sweepd("run", str(spec), "--out", str(tmp_path / "result.json"), env=env, timeout=900)
        assert proc.returncode == 0, proc.stderr[-4000:]
        result = json.loads((tmp_path / "result.json").read_text())
        assert result["state"] == "succeeded" and len(result["trials"]) == 2

        home = Path(env["SWEEPD_HOME"])
        experiment = home / "ray" / f"sweep-{result['sweep_id']}"
        pickles = [p.name for p in experiment.rglob("*.pkl")]
        assert "tuner.pkl" in pickles and any(name.startswith("searcher-state") for name in pickles), pickles
        assert files_holding(home, password.encode()) == []
        # the URL is pickled (the searcher's storage, the recorder ...), only without its password
        public = f"{make_url(url).username}@".encode()
        holders = {p.name for p in files_holding(experiment, public)}
        assert "tuner.pkl" in holders, sorted(holders)
        assert password not in proc.stdout + proc.stderr
