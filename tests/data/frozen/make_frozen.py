"""Makes the frozen databases in this folder: a sweep of schema 0007 interrupted mid-run.

Each file holds one sweep (builtin:tiny, 6 trials, one at a time, ASHA on the loss) whose driver
was killed (SIGKILL) once 3 trials had finished and the 4th had run past its first rung: 3
trials finished, 1 running, the sweep's Optuna study (in the same database) with the 4th trial
RUNNING, and the pruner's decisions. No Ray Tune experiment folder goes with them.

- ``sweepd-0007.db``: SQLite, VACUUMed;
- ``sweepd-0007.sql.gz``: PostgreSQL, ``pg_dump --no-owner --no-privileges`` (plain SQL), gzipped;
- ``frozen-0007.json``: what each holds (sweep id, trials, Optuna states), where the data was,
  and how it was made. tests/store/test_frozen_upgrade.py reads it.

The sweep's spec keeps its validated absolute data paths, so the data lives at a fixed folder,
DATA_DIR, written by the trainer's own deterministic generator (``trainer.synthetic.make_data``
with MAKE_DATA); the test writes it there again and checks its sha256 against the manifest.

Run it with the released code whose schema it freezes (it refuses any other migration head),
from a worktree of that commit, with this checkout's virtual environment:

    git worktree add /tmp/sweepd-0007 18a7b46
    export SWEEPD_TEST_POSTGRES_URL="$(scripts/postgres.sh start)"    # a server for the dump
    cd /tmp/sweepd-0007 && PYTHONPATH=$PWD /path/to/checkout/.venv/bin/python \\
        /path/to/checkout/tests/data/frozen/make_frozen.py

(``make frozen-db`` does that.) ``--only sqlite`` or ``--only postgres`` remakes one file.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.pool import NullPool

SCHEMA = "0007"  # the migration head of the release this freezes
HERE = Path(__file__).resolve().parent
SQLITE_FILE = HERE / f"sweepd-{SCHEMA}.db"
DUMP_FILE = HERE / f"sweepd-{SCHEMA}.sql.gz"
MANIFEST = HERE / f"frozen-{SCHEMA}.json"
DATA_DIR = Path("/tmp/sweepd-frozen-data")  # in the stored spec: the test recreates it exactly
MAKE_DATA = {"seed": 0, "n_train": 400, "n_eval": 40}
FINISHED, KILL_AT = 3, 4  # kill once trials 1..3 finished and trial 4 is running
DEADLINE_S = 900

# seed 3: of the first 4 trials one is stopped at the first rung and the 4th runs past it, so the
# frozen store holds a PRUNED trial and a running trial's decisions too
SPEC = {
    "name": f"frozen-{SCHEMA}",
    "model": {"path": "builtin:tiny"},
    "data": {"train": [{"path": str(DATA_DIR / "train.jsonl")}], "eval": [{"path": str(DATA_DIR / "eval.jsonl")}],
             "max_seq_len": 256},
    "search": {"algorithm": "tpe", "num_trials": 6, "max_concurrent": 1, "seed": 3, "warm_start": "none",
               "space": {"effective_batch_size": {"choice": [8, 16]},
                         "learning_rate": {"loguniform": [1.0e-4, 1.0e-2]}}},
    "fixed": {"eval": {"max_items": 20}},
    "budget": {"max_samples": 512},
    "pruner": {"type": "asha", "signal": "loss", "grace": 128, "reduction_factor": 2, "time_attr": "samples",
               "window": 3},
    "objective": {"metric": "eval_loss", "mode": "min"},
    "resources": {"workers_per_trial": 1, "cpus_per_worker": 1, "gpus_per_worker": 0, "max_failures": 1},
    "save_best_model": False,
}


def make_data() -> dict[str, str]:
    """The sweep's data at DATA_DIR (byte-identical every time); {file name: sha256}."""
    from trainer.synthetic import make_data as generate

    generate(DATA_DIR, **MAKE_DATA)
    return {name: hashlib.sha256((DATA_DIR / name).read_bytes()).hexdigest() for name in ("train.jsonl", "eval.jsonl")}


def release_commit(tree: Path) -> str:
    """The commit a worktree has checked out, read from its files (no git command)."""
    dot_git = tree / ".git"
    if dot_git.is_file():  # a worktree: "gitdir: <repo>/.git/worktrees/<name>"
        dot_git = Path(dot_git.read_text().split(":", 1)[1].strip())
    head = (dot_git / "HEAD").read_text().strip()
    if head.startswith("ref: "):
        head = (dot_git / head[5:]).read_text().strip() if (dot_git / head[5:]).exists() else head
    return head


# ---- watching the store while the driver runs -----------------------------------------------


def progress(engine) -> tuple[list[tuple[int, str]], int, int] | None:
    """([(number, state)], stored steps of trial KILL_AT, its decisions), or None while the store
    is not ready."""
    try:
        with engine.connect() as conn:
            trials = [tuple(r) for r in conn.execute(text("SELECT number, state FROM sweepd_trials ORDER BY number"))]
            of_it = {"t": f"%-{KILL_AT:04d}"}
            points = conn.execute(text("SELECT COUNT(*) FROM sweepd_metric_points WHERE trial_id LIKE :t"), of_it)
            decisions = conn.execute(text("SELECT COUNT(*) FROM sweepd_events WHERE kind = 'decision' "
                                          "AND trial_id LIKE :t"), of_it)
            return trials, int(points.scalar() or 0), int(decisions.scalar() or 0)
    except OperationalError:  # locked by the driver, or (SQLite) not migrated yet
        return None
    except ProgrammingError as err:  # PostgreSQL, not migrated yet
        if "does not exist" in str(err):
            return None
        raise


def interrupted(trials: list[tuple[int, str]], points: int, decisions: int, *, judged: bool = True) -> bool:
    """Trials 1..FINISHED finished, KILL_AT running with steps stored (``judged``: and past its
    first rung, judged there), nothing else."""
    states = dict(trials)
    return (sorted(states) == list(range(1, KILL_AT + 1)) and states[KILL_AT] == "running"
            and all(states[n] in ("completed", "stopped") for n in range(1, FINISHED + 1))
            and points > 0 and (decisions > 0 or not judged))


def run_and_kill(db_url: str, home: Path, spec_path: Path, log_path: Path, *, data_dir: Path = DATA_DIR,
                 judged: bool = True) -> None:
    """`sweepd run SPEC` (the real driver), SIGKILLed at the moment the module's docstring says
    (``judged=False``: once trial KILL_AT has stored steps, judged at a rung or not)."""
    env = dict(os.environ, SWEEPD_DATABASE_URL=db_url, SWEEPD_HOME=str(home), SWEEPD_DATA_ROOTS=str(data_dir),
               DS_ACCELERATOR="cpu", PYTHONUNBUFFERED="1")
    moment = partial(interrupted, judged=judged)
    engine = create_engine(db_url, poolclass=NullPool)
    with log_path.open("wb") as log:
        driver = subprocess.Popen([sys.executable, "-m", "sweepd.cli", "run", str(spec_path)], env=env,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + DEADLINE_S
        seen = None
        while not (seen and moment(*seen)):
            if driver.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the driver ended ({driver.returncode}) or the deadline passed before the moment "
                                 f"to kill it; last seen {seen}; log: {log_path}")
            time.sleep(0.2)
            seen = progress(engine)
        os.kill(driver.pid, signal.SIGKILL)  # the driver first, as a crash would
        driver.wait()
    finally:
        try:  # then what it left of Ray (its own session: raylet, workers)
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        driver.wait()
    time.sleep(2)
    after = progress(engine)
    engine.dispose()
    if not (after and moment(*after)):  # trial 4 ended between the look and the kill: run again
        raise SystemExit(f"the store moved on before the kill: {after}; run the script again")


# ---- what the frozen store holds --------------------------------------------------------------


def holdings(db_url: str) -> dict:
    """The sweep as frozen: id, spec name, trials (number, state, attempts, objective, config,
    metric points), Optuna trial states, decision events."""
    engine = create_engine(db_url, poolclass=NullPool)
    with engine.connect() as conn:
        (sweep_id, state, study), = conn.execute(text("SELECT id, state, optuna_study_name FROM sweepd_sweeps"))
        trials = []
        for number, tid, tstate, attempts, objective, config in conn.execute(text(
                "SELECT number, id, state, attempts, objective, config FROM sweepd_trials ORDER BY number")):
            points = conn.execute(text("SELECT COUNT(*) FROM sweepd_metric_points WHERE trial_id = :t"),
                                  {"t": tid}).scalar()
            trials.append({"number": number, "state": tstate, "attempts": attempts, "objective": objective,
                           "config": json.loads(config) if isinstance(config, str) else config, "points": points})
        optuna = [s for (s,) in conn.execute(text("SELECT t.state FROM trials t JOIN studies s ON t.study_id = "
                                                  "s.study_id WHERE s.study_name = :n ORDER BY t.number"),
                                             {"n": study})]
        decisions = conn.execute(text("SELECT COUNT(*) FROM sweepd_events WHERE kind = 'decision'")).scalar()
        revision = conn.execute(text("SELECT version_num FROM sweepd_alembic_version")).scalar()
    engine.dispose()
    return {"sweep_id": sweep_id, "sweep_state": state, "study": study, "revision": revision, "trials": trials,
            "optuna_states": optuna, "decisions": decisions}


# ---- the two backends ---------------------------------------------------------------------------


def freeze_sqlite(work: Path, spec_path: Path) -> dict:
    home = work / "sqlite-home"
    db_url = f"sqlite:///{home / 'sweepd.db'}"
    run_and_kill(db_url, home, spec_path, work / "sqlite-driver.log")
    held = holdings(db_url)
    SQLITE_FILE.unlink(missing_ok=True)
    engine = create_engine(db_url, poolclass=NullPool)
    with engine.connect() as conn:  # a compact copy, written in one go
        conn.exec_driver_sql(f"VACUUM INTO '{SQLITE_FILE}'")
    engine.dispose()
    return {"file": SQLITE_FILE.name, **held}


def freeze_postgres(work: Path, spec_path: Path, server_url: str) -> dict:
    server = make_url(server_url)
    if server.drivername in ("postgresql", "postgres"):
        server = server.set(drivername="postgresql+psycopg")
    name = f"sweepd_frozen_{SCHEMA}_{os.getpid()}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    db_url = server.set(database=name).render_as_string(hide_password=False)
    try:
        run_and_kill(db_url, work / "pg-home", spec_path, work / "pg-driver.log")
        held = holdings(db_url)
        libpq = server.set(drivername="postgresql", database=name).render_as_string(hide_password=False)
        dump = subprocess.run(["pg_dump", "--no-owner", "--no-privileges", "--format=plain", libpq],
                              check=True, capture_output=True).stdout
        with gzip.GzipFile(DUMP_FILE, "wb", mtime=0) as out:  # mtime 0: the same dump, the same bytes
            out.write(dump)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
    version = subprocess.run(["pg_dump", "--version"], check=True, capture_output=True, text=True).stdout.strip()
    return {"file": DUMP_FILE.name, "pg_dump": version, **held}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("sqlite", "postgres"), help="remake one file (default: both)")
    parser.add_argument("--postgres", default=os.environ.get("SWEEPD_TEST_POSTGRES_URL"),
                        help="a PostgreSQL server's URL (default: $SWEEPD_TEST_POSTGRES_URL)")
    args = parser.parse_args(argv)
    import sweepd
    from sweepd.store.migrate import head_revision

    tree = Path(sweepd.__file__).resolve().parents[1]
    if head_revision() != SCHEMA:
        raise SystemExit(f"sweepd from {tree} has migration head {head_revision()}, not {SCHEMA}: run this "
                         f"from a worktree of the release (see this script's docstring)")
    if args.only != "sqlite" and not args.postgres:
        raise SystemExit("no PostgreSQL server: pass --postgres URL or set SWEEPD_TEST_POSTGRES_URL")
    manifest = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}
    manifest.update(schema=SCHEMA, commit=release_commit(tree), made_at=datetime.now(timezone.utc).isoformat(
        timespec="seconds"), made_by=f"tests/data/frozen/{Path(__file__).name}", spec=SPEC,
        data={"dir": str(DATA_DIR), "make_data": MAKE_DATA, "sha256": make_data()})
    with tempfile.TemporaryDirectory(prefix="sweepd-freeze-") as tmp:
        work = Path(tmp)
        spec_path = work / "frozen.yaml"
        spec_path.write_text(yaml.safe_dump(SPEC, sort_keys=False))
        try:
            if args.only in (None, "sqlite"):
                manifest["sqlite"] = freeze_sqlite(work, spec_path)
            if args.only in (None, "postgres"):
                manifest["postgres"] = freeze_postgres(work, spec_path, args.postgres)
        except SystemExit:
            for log in work.glob("*.log"):  # the temp folder goes: keep the driver's words
                shutil.copy(log, Path(tempfile.gettempdir()) / f"make_frozen-{log.name}")
            raise
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")
    for path in (SQLITE_FILE, DUMP_FILE, MANIFEST):
        if path.exists():
            print(f"{path.relative_to(HERE.parents[2])}: {path.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
