"""A real sweepd API server for the client tests, and a scripted controller.

``server``: a real ``sweepd serve --no-supervise`` process on 127.0.0.1 and a free port, over a
temporary SQLite database with one API token. Nothing runs sweeps on it: ``controller`` plays the supervisor's and controller's part, picking up queued
sweeps from the store and moving them through a script (running, trials with objectives,
ledger, best trial, final state) with the repository functions the engine uses.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadedServer:
    """uvicorn serving an ASGI app in a daemon thread."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        import uvicorn

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{self.port}", daemon=True)

    def start(self, timeout: float = 20) -> "ThreadedServer":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on port {self.port}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def write_data(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for split in ("train", "eval"):
        p = folder / f"{split}.jsonl"
        p.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"question {i}"},
                                                      {"role": "assistant", "content": f"answer {i}"}]}) + "\n"
                             for i in range(24)))
        paths.append(p)
    return paths[0], paths[1]


@dataclass
class Server:
    url: str
    token: str
    db_url: str
    engine: Any
    home: Path
    train: Path
    eval: Path

    def spec(self, name: str, *, num_trials: int = 5, mode: str = "min", **extra: Any) -> str:
        """A valid YAML spec named ``name`` (the controller's script is chosen by name)."""
        doc = {
            "name": name,
            "model": {"path": "builtin:tiny"},
            "data": {"train": [{"path": str(self.train)}], "eval": [{"path": str(self.eval)}]},
            "search": {"algorithm": "random", "num_trials": num_trials, "max_concurrent": 1, "seed": 0,
                       "space": {"learning_rate": {"loguniform": [1.0e-4, 1.0e-2]},
                                 "effective_batch_size": {"choice": [4, 8]}}},
            "budget": {"max_samples": 64},
            "pruner": {"type": "none"},
            "objective": {"metric": "eval_loss", "mode": mode},
            "resources": {"workers_per_trial": 1, "cpus_per_worker": 1, "gpus_per_worker": 0},
        }
        doc.update(extra)
        import yaml

        return yaml.safe_dump(doc, sort_keys=False)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment for a `sweepd` subprocess: this server's database, no stray token."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWEEPD_")}
        env.update(SWEEPD_HOME=str(self.home), SWEEPD_DATABASE_URL=self.db_url,
                   SWEEPD_DATA_ROOTS=str(self.home), PYTHONUNBUFFERED="1", COLUMNS="200")
        env.update(extra)
        return env


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from sweepd.settings import get_settings
    from sweepd.store import repo
    from sweepd.store.db import make_engine, session_scope
    from sweepd.store.migrate import upgrade

    home = tmp_path_factory.mktemp("sweepd-home")
    train, eval_ = write_data(home / "data")
    db_url = f"sqlite:///{home / 'sweepd.db'}"
    mp = pytest.MonkeyPatch()
    for key in [k for k in os.environ if k.startswith("SWEEPD_")]:
        mp.delenv(key)
    mp.setenv("SWEEPD_HOME", str(home))
    mp.setenv("SWEEPD_DATABASE_URL", db_url)
    mp.setenv("SWEEPD_DATA_ROOTS", str(home))
    get_settings.cache_clear()
    upgrade(db_url)
    engine = make_engine(db_url)
    with session_scope(engine) as s:
        _, token = repo.create_token(s, "ci")

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWEEPD_")}
    env.update(SWEEPD_HOME=str(home), SWEEPD_DATABASE_URL=db_url, SWEEPD_DATA_ROOTS=str(home))
    log = open(home / "serve.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "sweepd.cli", "serve", "--no-supervise", "--port", str(port)],
                            env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, home / "serve.log")
        yield Server(url=url, token=token, db_url=db_url, engine=engine, home=home, train=train, eval=eval_)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        engine.dispose()
        mp.undo()
        get_settings.cache_clear()


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sweepd serve exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"sweepd serve did not become healthy: {log.read_text()[-2000:]}")


# ---------------------------------------------------------------------------------- controller


@dataclass
class Trial:
    state: str
    objective: float | None = None
    reason: str | None = None
    error: str | None = None
    samples: int = 64
    seconds: float = 1.5


@dataclass
class Script:
    """What the fake controller does with a sweep: run ``trials`` one by one, then end in
    ``final`` (``wait_cancel``: stop after the first trial started and wait for a cancel)."""

    trials: list[Trial]
    final: str = "succeeded"
    error: str | None = None
    wait_cancel: bool = False
    step: float = 0.05


@dataclass
class Controller:
    engine: Any
    scripts: dict[str, Script] = field(default_factory=dict)
    seen: dict[str, str] = field(default_factory=dict)  # sweep id -> name
    errors: list[BaseException] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def loop(self) -> None:
        from sweepd.store import repo
        from sweepd.store.db import session_scope

        while not self.stop.is_set():
            try:
                with session_scope(self.engine) as s:
                    queued = [(sw.id, sw.name) for sw in repo.list_sweeps(s, state="queued", limit=200).items]
                for sweep_id, name in queued:
                    if sweep_id not in self.seen and name in self.scripts:
                        self.seen[sweep_id] = name
                        threading.Thread(target=self.run, args=(sweep_id, self.scripts[name]), daemon=True).start()
            except BaseException as err:  # noqa: BLE001 - reported by the fixture
                self.errors.append(err)
            self.stop.wait(0.05)

    def run(self, sweep_id: str, script: Script) -> None:
        try:
            self._run(sweep_id, script)
        except BaseException as err:  # noqa: BLE001 - reported by the fixture
            self.errors.append(err)

    def _run(self, sweep_id: str, script: Script) -> None:
        from sweepd.engine.ledger import TrialCost, compute_ledger
        from sweepd.store import repo
        from sweepd.store.db import session_scope
        from sweepd.store.models import utcnow

        def tx(fn: Callable[[Any], Any]) -> Any:
            with session_scope(self.engine) as s:
                return fn(s)

        if tx(lambda s: repo.set_sweep_state(s, sweep_id, "running", only_from=["queued"])) is None:
            return
        tx(lambda s: repo.heartbeat(s, sweep_id, controller="fake@test"))
        costs = []
        for n, t in enumerate(script.trials):
            config = {"learning_rate": round(1e-4 * 2 ** n, 8), "effective_batch_size": 4 if n % 2 else 8}
            tx(lambda s: repo.upsert_trial(s, sweep_id, n, config=config, state="running", attempts=1,
                                           started_at=utcnow()))
            time.sleep(script.step)
            if script.wait_cancel:
                deadline = time.monotonic() + 30
                while tx(lambda s: repo.get_sweep(s, sweep_id).state) != "cancelled":
                    if time.monotonic() > deadline:
                        raise AssertionError(f"sweep {sweep_id} was never cancelled")
                    time.sleep(0.05)
                tx(lambda s: repo.upsert_trial(s, sweep_id, n, state="stopped", reason="sweep cancelled",
                                               finished_at=utcnow(), samples=16, tokens=800, seconds=0.4))
                tx(lambda s: repo.upsert_trial(s, sweep_id, n + 1))  # one never started
                return
            samples = t.samples if t.state == "completed" else t.samples // 4
            tx(lambda s: repo.upsert_trial(s, sweep_id, n, state=t.state, objective=t.objective, reason=t.reason,
                                           error=t.error, samples=samples, tokens=samples * 50,
                                           seconds=t.seconds, finished_at=utcnow(),
                                           stopped_at=float(samples) if t.state == "stopped" else None))
            costs.append(TrialCost(state=t.state, samples=samples, tokens=samples * 50, seconds=t.seconds,
                                   full_samples=t.samples))
        scored = [(t.objective, n) for n, t in enumerate(script.trials) if t.objective is not None]
        best = min(scored)[1] if scored else None

        def finish(s: Any) -> None:
            repo.update_ledger(s, sweep_id, compute_ledger(costs), replace=True)
            repo.set_best_trial(s, sweep_id, repo.trial_id_for(sweep_id, best) if best is not None else None)
            repo.set_sweep_state(s, sweep_id, script.final, error=script.error, only_from=["running"])

        tx(finish)


@pytest.fixture(scope="module")
def controller(server: Server) -> Iterator[Controller]:
    ctl = Controller(engine=server.engine)
    thread = threading.Thread(target=ctl.loop, name="fake-controller", daemon=True)
    thread.start()
    yield ctl
    ctl.stop.set()
    thread.join(timeout=10)
    assert not ctl.errors, ctl.errors


# ------------------------------------------------------------------------------------ the CLI


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def reason(self) -> str:
        """The last line on stderr: the one-line reason every exit comes with."""
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        assert lines, "nothing on stderr"
        return lines[-1]


def sweepd(server: Server, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Run:
    """Run `python -m sweepd.cli ARGS` in a subprocess (stdout and stderr are pipes)."""
    proc = subprocess.run([sys.executable, "-m", "sweepd.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=env or server.env())
    return Run(proc.returncode, proc.stdout, proc.stderr)
