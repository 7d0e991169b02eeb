"""Helpers for the API tests: a running app with a token, a valid spec, and writers that put
sweeps, trials, metric points and events straight into the store (no training)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from sweepd.spec import Capacity, parse_spec
from sweepd.store import repo, session_scope

API = "/api/v1"
LINE = '{"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}\n'


@dataclass
class Api:
    client: TestClient
    app: Any
    sessions: sessionmaker[Session]
    token: str
    data: Path  # the only data root

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str, **kw: Any):
        return self.client.get(path, headers={**self.auth, **kw.pop("headers", {})}, **kw)

    def post(self, path: str, **kw: Any):
        return self.client.post(path, headers={**self.auth, **kw.pop("headers", {})}, **kw)


def spec_dict(data: Path, **changes: Any) -> dict[str, Any]:
    """A small valid spec whose files live in ``data``."""
    spec: dict[str, Any] = {
        "name": "api-test",
        "model": {"path": "builtin:tiny"},
        "data": {"train": [{"path": str(data / "train.jsonl")}], "eval": [{"path": str(data / "eval.jsonl")}]},
        "search": {"algorithm": "random", "num_trials": 4, "seed": 0,
                   "space": {"learning_rate": {"loguniform": [1.0e-5, 1.0e-3]}, "effective_batch_size": {"choice": [8, 16]}}},
        "budget": {"max_samples": 1024},
        "pruner": {"type": "asha", "signal": "grad_norm", "grace": 64, "reduction_factor": 2, "window": 3},
        "objective": {"metric": "eval_loss", "mode": "min"},
    }  # fmt: skip
    spec.update(changes)
    return spec


def start(data_root: Path) -> Iterator[Api]:
    """An app built from the environment, started (migrated), with one token."""
    app = create_app()
    with TestClient(app) as client:
        with session_scope(app.state.sessionmaker) as s:
            _, token = repo.create_token(s, "tests")
        yield Api(client=client, app=app, sessions=app.state.sessionmaker, token=token, data=data_root)



def preflighted(api: Api, sweep_id: str, timeout: float = 60) -> dict[str, Any]:
    """The sweep (GET) once its data preflight (api/preflight.py), if one was started, has ended."""
    future = api.app.state.preflight.futures.get(sweep_id)
    if future is not None:
        future.result(timeout=timeout)
    return api.get(f"{API}/sweeps/{sweep_id}").json()


# ---- writing straight into the store ------------------------------------------------------


def make_sweep(sessions: sessionmaker[Session], data: Path, *, state: str = "queued", **spec_changes: Any) -> str:
    spec = parse_spec(spec_dict(data, **spec_changes), data_roots=[data], capacity=Capacity.unlimited())
    with session_scope(sessions) as s:
        if state == "validating":  # as POST /sweeps leaves it while the data preflight runs
            return repo.create_sweep(s, name=spec.name, spec=spec.to_stored(), state=state).id
        sweep = repo.create_sweep(s, name=spec.name, spec=spec.to_stored())
        if state != "queued":
            if state != "running":
                repo.set_sweep_state(s, sweep.id, "running")
            repo.set_sweep_state(s, sweep.id, state)
        return sweep.id


def curve(n: int, *, batch: int = 8, start: int = 0, loss0: float = 3.0, grad0: float = 2.0) -> list[dict[str, Any]]:
    return [
        {"step": start + k, "samples": (start + k + 1) * batch, "tokens": (start + k + 1) * batch * 20,
         "loss": loss0 * math.exp(-k / 50), "grad_norm": grad0 / (1 + k / 20), "lr": 1e-4, "seconds": 0.01 * (k + 1),
         "tokens_per_second": 16000.0 / (1 + k % 2 * 9), "mfu": 0.25, "peak_memory_gb": 1.5}
        for k in range(n)
    ]  # fmt: skip


def add_trial(
    sessions: sessionmaker[Session], sweep_id: str, number: int, *, points: list[dict[str, Any]] | None = None,
    **fields: Any,
) -> str:
    fields.setdefault("config", {"learning_rate": 1e-4 * (number + 1), "effective_batch_size": 8})
    with session_scope(sessions) as s:
        trial = repo.upsert_trial(s, sweep_id, number, **fields)
        if points:
            repo.add_metric_points(s, trial.id, points)
        return trial.id


@dataclass
class Seeded:
    sweep_id: str
    trial_ids: list[str]  # by number: 0-2 completed, 3 stopped, 4 running


def seed(api: Api) -> Seeded:
    sid = make_sweep(api.sessions, api.data, state="running")
    ids = [
        add_trial(api.sessions, sid, 0, state="completed", objective=1.5, points=curve(300, grad0=1.0)),
        add_trial(api.sessions, sid, 1, state="completed", objective=1.2, points=curve(300, grad0=0.5)),
        add_trial(api.sessions, sid, 2, state="completed", objective=1.9, points=curve(300, grad0=3.0)),
        add_trial(api.sessions, sid, 3, state="stopped", stopped_at=64, reason="grad norm is 3rd of 3",
                  points=curve(8, grad0=5.0)),
        add_trial(api.sessions, sid, 4, state="running", points=curve(20)),
    ]  # fmt: skip
    with session_scope(api.sessions) as s:
        repo.add_event(s, sid, "decision", "trial 3 stopped: grad norm is 3rd of 3", trial_id=ids[3],
                       payload={"rung": 0, "stop": True})
        repo.add_event(s, sid, "info", "hello")
    return Seeded(sweep_id=sid, trial_ids=ids)
