"""An old database upgrades and resumes: the frozen databases of a released schema
(tests/data/frozen/: schema 0007, a sweep killed with 3 trials finished and the 4th running, no
Ray Tune experiment), upgraded to whatever head is now, so every later migration runs against
them, then driven to the end by the real driver (resumed from the store,
sweepd/engine/store_resume.py), on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from sweepd.store import make_engine, repo, session_scope
from sweepd.store.migrate import current_revision, head_revision
from tests.data.frozen.resumed import check_interrupted, check_resumed, read_store
from trainer.synthetic import make_data

REPO = Path(__file__).resolve().parents[2]
FROZEN = REPO / "tests" / "data" / "frozen"
MANIFEST = json.loads((FROZEN / "frozen-0007.json").read_text())
PLANNED, FINISHED, RUNNING = MANIFEST["spec"]["search"]["num_trials"], 3, 4


def frozen_data() -> Path:
    """The frozen sweep's data where its stored spec says it is, written again by the trainer's
    generator (one file at a time, atomically: another test may be reading it)."""
    data = Path(MANIFEST["data"]["dir"])
    want = MANIFEST["data"]["sha256"]

    def digests(folder: Path) -> dict[str, str | None]:
        return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() if (folder / name).exists() else None
                for name in want}

    if digests(data) == want:
        return data
    data.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=".fresh-", dir=data))
    try:
        make_data(fresh, **MANIFEST["data"]["make_data"])
        assert digests(fresh) == want, (
            "trainer.synthetic.make_data no longer writes the frozen sweep's data byte for byte: the frozen "
            "databases cannot be resumed on their data (remake them: tests/data/frozen/README.md)")
        for name in want:
            os.replace(fresh / name, data / name)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
    return data


def psql() -> str:
    found = shutil.which("psql") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/psql"), reverse=True)),
                                         None)
    if not found:
        pytest.fail("psql (PostgreSQL's client) is needed to load the frozen dump: apt-get install postgresql-client",
                    pytrace=False)
    return str(found)


def load_frozen(db_url: str) -> dict:
    """The frozen database of ``db_url``'s backend into it (empty); what the manifest says it holds."""
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        shutil.copyfile(FROZEN / MANIFEST["sqlite"]["file"], url.database)
        return MANIFEST["sqlite"]
    libpq = url.set(drivername="postgresql").render_as_string(hide_password=False)
    sql = gzip.decompress((FROZEN / MANIFEST["postgres"]["file"]).read_bytes())
    proc = subprocess.run([psql(), "-q", "-X", "-v", "ON_ERROR_STOP=1", "-d", libpq], input=sql,
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    return MANIFEST["postgres"]


def run(args: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow  # a real sweep resumed: 3 trials (about a minute)
def test_the_frozen_0007_database_upgrades_to_head_and_resumes_to_the_end(db_url, tmp_path):
    data = frozen_data()
    frozen = load_frozen(db_url)
    assert current_revision(db_url) == MANIFEST["schema"] == "0007"
    env = dict(os.environ, SWEEPD_DATABASE_URL=db_url, SWEEPD_HOME=str(tmp_path / "home"),
               SWEEPD_DATA_ROOTS=str(data), DS_ACCELERATOR="cpu", PYTHONUNBUFFERED="1")

    upgraded = run(["-m", "sweepd.cli", "db", "upgrade"], env, timeout=120)
    assert upgraded.returncode == 0, upgraded.stderr[-3000:]
    assert current_revision(db_url) == head_revision()

    # what it holds, read at head: the sweep as it was frozen
    held = read_store(db_url)
    check_interrupted(held, finished=FINISHED, running=RUNNING)
    assert (held["sweep"]["id"], held["sweep"]["state"]) == (frozen["sweep_id"], frozen["sweep_state"])
    assert [t["state"] for t in held["optuna"]] == frozen["optuna_states"]
    assert sum(len(d) for d in held["decisions"].values()) == frozen["decisions"]
    assert [{"number": n, "state": t["state"], "attempts": t["attempts"], "objective": t["objective"],
             "config": t["config"], "points": len(t["points"])} for n, t in held["trials"].items()] == frozen["trials"]
    stored_steps = frozen["trials"][RUNNING - 1]["points"]  # the running trial's, all its first attempt's
    assert held["trials"][RUNNING]["points"] == [(step, 1) for step in range(1, stored_steps + 1)]
    engine = make_engine(db_url)  # this checkout's models read it
    try:
        with session_scope(engine) as s:
            assert [t.number for t in repo.list_trials(s, frozen["sweep_id"])] == list(range(1, RUNNING + 1))
            assert repo.get_sweep(s, frozen["sweep_id"]).spec["name"] == MANIFEST["spec"]["name"]
    finally:
        engine.dispose()

    driven = run(["-m", "sweepd.service.driver", frozen["sweep_id"]], env, timeout=300)
    assert driven.returncode == 0, driven.stderr[-4000:]
    assert "resumed from the store" in driven.stderr
    check_resumed(read_store(db_url), held, planned=PLANNED, rerun=RUNNING)
