"""The store goes away mid-sweep (#15): a PostgreSQL server stopped for 40 s, a SQLite file held
under an exclusive lock for 40 s. The driver's store calls wait it out (sweepd/store/retry.py) and
the sweep finishes with every reported step stored once and an exact ledger. A store down past
the retry bound makes the driver exit 75 with the sweep still RUNNING, and a new driver resumes it.

The sweep is real (`python -m sweepd.service.driver`, Ray Tune, Optuna, the ASHA pruner, the
store); only the trainer is scripted: Ray's worker setup hook (``install_fake_trainer``) swaps
``trainer.loop.run_trial`` for ``fake_run_trial``, which reports deterministic steps and notes each
one in a file before reporting it. Tune's function reports are synchronous (the next step starts
only once the driver took the last), so the steps noted are exactly the steps the driver received.
"""

from __future__ import annotations

import json
import math
import os
import pwd
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from glob import glob
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FAKE_LOG_ENV = "SWEEPD_FAKE_TRAINER_LOG"
STEP_SECONDS = 0.4
OUTAGE_SECONDS = 40
NUM_TRIALS = 6
MAX_SAMPLES = 512  # 16 or 32 steps: trials run long enough to be caught mid-run by the outage
FINISHED = ("completed", "stopped")


# ---- the scripted trainer and the driver that gives it to Ray's workers -------------------------


def fake_run_trial(cfg, reporter, *, checkpoint_dir=None, resume_from=None) -> dict:
    """trainer.loop.run_trial's stand-in: MAX_SAMPLES / batch steps of STEP_SECONDS each, a loss
    lowest near lr 3e-3, every step noted in this run's file under $SWEEPD_FAKE_TRAINER_LOG."""
    batch, lr = cfg.hparams.effective_batch_size, cfg.hparams.learning_rate
    steps = cfg.budget.max_samples // batch
    gap = abs(math.log10(lr) - math.log10(3e-3))
    log = Path(os.environ[FAKE_LOG_ENV]) / f"{time.time_ns()}-{os.getpid()}.jsonl"

    def note(line: dict) -> None:
        with log.open("a") as f:
            f.write(json.dumps(line) + "\n")

    note({"learning_rate": lr, "batch": batch, "started": time.time()})
    for step in range(1, steps + 1):
        time.sleep(STEP_SECONDS)
        samples = step * batch
        point = {"step": step, "samples": samples, "tokens": samples * 100, "loss": round(2.0 + gap - 0.01 * step, 6),
                 "grad_norm": round(1.0 + gap / step, 6), "lr": lr, "seconds": round(step * STEP_SECONDS, 4)}
        note({**point, "noted_at": time.time()})  # before the report, which returns once the driver took the last
        reporter.step(point)
    final = {"status": "completed", "steps": steps, "samples": steps * batch, "tokens": steps * batch * 100,
             "seconds": round(steps * STEP_SECONDS, 4), "train_loss": round(2.0 + gap, 6),
             "eval_loss": round(2.1 + gap, 6)}
    note({"final": final})
    reporter.final(final)
    return final


def install_fake_trainer() -> None:
    """Ray's worker_process_setup_hook: runs in every worker before it runs a trial."""
    import trainer.loop

    trainer.loop.run_trial = fake_run_trial


def run_driver() -> None:
    """`python -c "...; run_driver()" SWEEP_ID`: the real driver's main, with the worker hook added
    to the ray.init it makes (engine/tuner.py ensure_ray)."""
    import ray

    real_init = ray.init

    def init(*args, **kwargs):
        runtime_env = dict(kwargs.pop("runtime_env", None) or {})
        runtime_env["worker_process_setup_hook"] = f"{__name__}.install_fake_trainer"
        return real_init(*args, runtime_env=runtime_env, **kwargs)

    ray.init = init
    from sweepd.service.driver import main

    sys.exit(main(sys.argv[1:]))


# ---- the stores and their outages -------------------------------------------------------------


class OwnPostgres:
    """A PostgreSQL server of this test's own (scripts/postgres.sh in a private SWEEPD_PG_DIR), so
    stopping it disturbs no other test. ``stop``/``start`` keep its data and its port."""

    def __init__(self) -> None:
        # in the temp folder itself, not pytest's tmp_path: the server may run as another user (root
        # runs it as `postgres`), who cannot enter pytest's private folders
        pg_dir = Path(tempfile.mkdtemp(prefix="sweepd-outage-pg-"))
        self.env = dict(os.environ, SWEEPD_PG_DIR=str(pg_dir))
        self.data = pg_dir / "data"
        self.url = self._script("start")
        self.port = self.url.rsplit(":", 1)[1].split("/")[0]

    def _script(self, command: str, **env) -> str:
        done = subprocess.run(["bash", str(REPO / "scripts" / "postgres.sh"), command], env={**self.env, **env},
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"postgres.sh {command}: {done.stderr[-2000:]}"
        return done.stdout.strip()

    def stop(self) -> None:
        bindir = (sorted(glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(Path(d).parent.name))
                  or [str(Path(shutil.which("pg_ctl")).parent)])[-1]
        owner = pwd.getpwuid(self.data.stat().st_uid).pw_name
        as_owner = [] if owner == pwd.getpwuid(os.getuid()).pw_name else ["runuser", "-u", owner, "--"]
        subprocess.run([*as_owner, f"{bindir}/pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w"],
                       check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        assert self._script("start", SWEEPD_PG_PORT=self.port) == self.url  # the same port again

    def remove(self) -> None:
        self._script("stop")


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"])
def store(request, tmp_path):
    """(backend, url, outage): a migrated database of the test's own and a function that takes it
    away for some seconds (PostgreSQL: the server stopped; SQLite: another connection holding an
    exclusive lock)."""
    from sweepd.store import upgrade

    if request.param == "postgres":
        server = OwnPostgres()
        request.addfinalizer(server.remove)

        def outage(seconds: float) -> None:
            server.stop()
            time.sleep(seconds)
            server.start()

        url = server.url
    else:
        url = f"sqlite:///{tmp_path / 'sweepd.db'}"

        def outage(seconds: float) -> None:
            lock = sqlite3.connect(tmp_path / "sweepd.db", isolation_level=None, timeout=60)
            try:
                lock.execute("BEGIN EXCLUSIVE")
                time.sleep(seconds)
                lock.execute("ROLLBACK")
            finally:
                lock.close()

    upgrade(url)
    return request.param, url, outage


# ---- the sweep ----------------------------------------------------------------------------------


def sweep_spec(tmp_path: Path):
    from sweepd.spec import Capacity, parse_spec
    from trainer.synthetic import make_data

    make_data(tmp_path / "data", seed=0)  # the fake does not read it; the spec names real files
    return parse_spec({
        "name": "outage", "model": {"path": "builtin:tiny"},
        "data": {"train": [{"path": str(tmp_path / "data" / "train.jsonl")}],
                 "eval": [{"path": str(tmp_path / "data" / "eval.jsonl")}]},
        "search": {"algorithm": "tpe", "num_trials": NUM_TRIALS, "max_concurrent": 2, "seed": 0,
                   "space": {"effective_batch_size": {"choice": [16, 32]},
                             "learning_rate": {"loguniform": [1.0e-4, 1.0e-2]}}},
        "budget": {"max_samples": MAX_SAMPLES},
        "pruner": {"type": "asha", "signal": "loss", "grace": 64, "reduction_factor": 2, "time_attr": "samples",
                   "window": 1},
        "objective": {"metric": "eval_loss", "mode": "min"},
        # a trial that starts just as the store goes away fails in its first read: Tune retries it
        "resources": {"workers_per_trial": 1, "cpus_per_worker": 1, "gpus_per_worker": 0, "max_failures": 3},
    }, check_paths=False, capacity=Capacity(cpus=2, gpus=0))


class Sweep:
    """One stored sweep, its driver processes and what the fake trainer noted."""

    def __init__(self, url: str, tmp_path: Path, retry_seconds: float | None = None) -> None:
        from sweepd.engine.fingerprint import fingerprint
        from sweepd.store import make_engine, repo, session_scope

        self.url, self.tmp_path = url, tmp_path
        self.spec = sweep_spec(tmp_path)
        self.engine = make_engine(url)
        with session_scope(self.engine) as s:
            self.id = repo.create_sweep(s, name="outage", spec=self.spec.to_stored(),
                                        fingerprint=fingerprint(self.spec)).id
        self.notes = tmp_path / "fake-trainer"
        self.notes.mkdir()
        self.env = dict(os.environ, SWEEPD_DATABASE_URL=url, SWEEPD_HOME=str(tmp_path / "home"),
                        PYTHONPATH=str(REPO), DS_ACCELERATOR="cpu", PYTHONUNBUFFERED="1",
                        **{FAKE_LOG_ENV: str(self.notes)})
        if retry_seconds is not None:
            self.env["SWEEPD_STORE_RETRY_SECONDS"] = str(retry_seconds)
        self.logs: list[Path] = []

    def start_driver(self) -> subprocess.Popen:
        log = self.tmp_path / f"driver-{len(self.logs) + 1}.log"
        self.logs.append(log)
        with log.open("wb") as out:
            return subprocess.Popen([sys.executable, "-c", f"from {__name__} import run_driver; run_driver()", self.id],
                                    env=self.env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.logs)

    def progress(self) -> tuple[int, int, int] | None:
        """(finished trials, running trials, metric points), or None while the store does not answer."""
        from sqlalchemy import func, select

        from sweepd.store import MetricPoint, Trial, session_scope

        try:
            with session_scope(self.engine) as s:
                states = s.execute(select(Trial.state).where(Trial.sweep_id == self.id)).scalars().all()
                points = s.scalar(select(func.count()).select_from(MetricPoint).join(Trial)
                                  .where(Trial.sweep_id == self.id))
        except Exception:  # noqa: BLE001 - locked or down: not known now
            return None
        return sum(st in FINISHED for st in states), sum(st == "running" for st in states), points

    def wait_mid_sweep(self, driver: subprocess.Popen, finished: int, running: int = 1,
                       timeout: float = 300) -> tuple[int, int, int]:
        """Until `finished` trials have finished and `running` are running, with points stored."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.progress()
            if seen and seen[0] >= finished and seen[1] >= running and seen[2] > 0:
                return seen
            assert driver.poll() is None, f"the driver exited ({driver.returncode}) early: {self.log_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no progress to {finished} finished trials; last seen {seen}"
            time.sleep(0.2)

    def runs(self) -> dict[float, dict]:
        """The fake trainer's latest run of each learning rate: {"steps": [...], "final": {...} | None}."""
        runs: dict[float, dict] = {}
        for path in self.notes.glob("*.jsonl"):
            head, *lines = [json.loads(line) for line in path.read_text().splitlines()]
            steps = [ln for ln in lines if "step" in ln]
            run = {"started": head["started"], "batch": head["batch"], "noted_at": [p.pop("noted_at") for p in steps],
                   "steps": steps, "final": next((ln["final"] for ln in lines if "final" in ln), None)}
            if head["learning_rate"] not in runs or runs[head["learning_rate"]]["started"] < run["started"]:
                runs[head["learning_rate"]] = run
        return runs


def assert_exact(sweep: Sweep) -> None:
    """Finished, NUM_TRIALS trials, each one's stored curve exactly the steps its (latest) run
    reported, its totals and outcome those of the run, the ledger what the runs spent."""
    import optuna

    from sweepd.engine.ledger import TrialCost, compute_ledger
    from sweepd.store import repo, session_scope

    with session_scope(sweep.engine) as s:
        stored = repo.get_sweep(s, sweep.id)
        trials = repo.list_trials(s, sweep.id)
        curves = {t.number: [p.to_dict() for p in repo.read_metrics(s, t.id)] for t in trials}
    assert (stored.state, stored.error) == ("succeeded", None), sweep.log_text()[-3000:]
    assert [t.number for t in trials] == list(range(1, NUM_TRIALS + 1))
    runs = sweep.runs()
    assert {t.state for t in trials} <= set(FINISHED), [(t.number, t.state, t.error) for t in trials]
    assert any(t.state == "stopped" for t in trials) and any(t.state == "completed" for t in trials)
    costs = []
    for t in trials:
        run = runs[t.config["learning_rate"]]
        steps = [p["step"] for p in curves[t.number]]
        assert steps == [p["step"] for p in run["steps"]], (t.number, steps, run)  # none missing, none twice
        for got, want in zip(curves[t.number], run["steps"]):
            assert {k: got[k] for k in want} == want, (t.number, got, want)
        assert t.state == ("completed" if run["final"] else "stopped"), (t.number, t.state, run["final"])
        last = run["final"] or run["steps"][-1]
        assert (t.samples, t.tokens, t.seconds) == (last["samples"], last["tokens"], last["seconds"]), t.number
        if run["final"]:
            assert t.objective == run["final"]["eval_loss"]
        costs.append(TrialCost(t.state, last["samples"], last["tokens"], last["seconds"], MAX_SAMPLES))
    assert stored.ledger == compute_ledger(costs)
    assert stored.ledger["spent"]["samples"] == sum(c.samples for c in costs)
    assert stored.ledger["trials_stopped"] == sum(t.state == "stopped" for t in trials)
    study = optuna.load_study(study_name=stored.optuna_study_name, storage=sweep.url)
    states = [t.state.name for t in study.trials]
    assert sum(st in ("COMPLETE", "PRUNED") for st in states) == NUM_TRIALS and "RUNNING" not in states, states


def finish(driver: subprocess.Popen, sweep: Sweep, timeout: float = 400) -> int:
    try:
        return driver.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        driver.kill()
        driver.wait()
        raise AssertionError(f"the driver did not finish in {timeout} s: {sweep.log_text()[-3000:]}")


# ---- the tests --------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_sweep_rides_out_a_40_s_store_outage(store, tmp_path):
    backend, url, outage = store
    sweep = Sweep(url, tmp_path)
    driver = sweep.start_driver()
    try:
        before = sweep.wait_mid_sweep(driver, finished=1, running=2)
        down = time.time()
        outage(OUTAGE_SECONDS)
        up = time.time()
        assert up - down >= OUTAGE_SECONDS
        assert driver.poll() is None, f"the driver gave up during the outage: {sweep.log_text()[-3000:]}"
        assert finish(driver, sweep) == 0, sweep.log_text()[-3000:]
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    log = sweep.log_text()
    # the outage reached the driver's store calls: one warning, one recovery, no restart of the sweep
    assert log.count("store unreachable (") == 1 and log.count("store reachable again after") == 1, log[-5000:]
    assert "resuming sweep" not in log and "driver error" not in log, log[-5000:]
    after = sweep.progress()
    assert after[0] == NUM_TRIALS and after[2] > before[2]  # trials ran on after the outage
    # a trial was caught mid-run: it reported steps before the outage and went on after it
    assert any(run["noted_at"] and run["noted_at"][0] < down and run["noted_at"][-1] > up
               for run in sweep.runs().values()), sweep.runs()
    assert_exact(sweep)
    sweep.engine.dispose()


@pytest.mark.slow
@pytest.mark.postgres
def test_a_store_down_past_the_bound_ends_the_driver_not_the_sweep_which_resumes(tmp_path):
    """SWEEPD_STORE_RETRY_SECONDS=5 and the server stopped for good: the driver exits 75 within
    the bound (plus Ray's shutdown), the sweep is still RUNNING with no error, and once the
    server is back a new driver (what the supervisor starts) finishes it exactly."""
    from sweepd.service.driver import EXIT_STORE_UNAVAILABLE
    from sweepd.store import repo, session_scope, upgrade

    server = OwnPostgres()
    try:
        upgrade(server.url)
        sweep = Sweep(server.url, tmp_path, retry_seconds=5)
        driver = sweep.start_driver()
        try:
            sweep.wait_mid_sweep(driver, finished=1)
            server.stop()
            stopped = time.monotonic()
            rc = finish(driver, sweep, timeout=120)
            took = time.monotonic() - stopped
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
        log = sweep.log_text()
        assert rc == EXIT_STORE_UNAVAILABLE, log[-5000:]
        assert "without failing the sweep" in log and "past the 5 s bound" in log, log[-5000:]
        assert took < 60, took
        server.start()
        with session_scope(sweep.engine) as s:
            stored = repo.get_sweep(s, sweep.id)
            assert (stored.state, stored.error, stored.finished_at) == ("running", None, None)
        again = sweep.start_driver()
        assert finish(again, sweep) == 0, sweep.log_text()[-5000:]
        assert "resuming sweep" in sweep.log_text()
        assert_exact(sweep)
        sweep.engine.dispose()
    finally:
        server.remove()
