"""A submit whose answer is lost is retried without making a second sweep: the client sends one
Idempotency-Key per submit, on every try, and the server answers a repeat with the first sweep.

The real app is served by uvicorn (in a thread) behind a small ASGI wrapper that lets the first
POST /sweeps reach the app (the sweep is made) and then loses its answer: a 502 in its place, as
a reverse proxy that gave up on the upstream sends, or no answer until the client has timed out.
The client before the key retried the 502 and made a second sweep."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import func, select

from api.app import create_app
from sweepd.client import ServerUnreachable, SweepdClient
from sweepd.settings import Settings
from sweepd.store import repo, session_scope
from sweepd.store.models import Event, Sweep

from .conftest import ThreadedServer, write_data

SUBMIT = ("POST", "/api/v1/sweeps")


class LoseFirstAnswer:
    """ASGI: the first ``lose`` POST /sweeps run in the app, then their answer is replaced by a 502
    (``how="502"``) or held back ``delay`` seconds (``how="late"``, past the client's timeout)."""

    def __init__(self, app: Any, how: str, lose: int = 1, delay: float = 3.0) -> None:
        self.app, self.how, self.lose, self.delay = app, how, lose, delay
        self.submits: list[dict[str, str]] = []  # each POST /sweeps's headers
        self.lost: list[int] = []  # the statuses the app answered and the client never saw

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) != SUBMIT:
            await self.app(scope, receive, send)
            return
        self.submits.append({k.decode().lower(): v.decode() for k, v in scope["headers"]})
        if len(self.submits) > self.lose:
            await self.app(scope, receive, send)
            return

        async def swallow(message: dict) -> None:
            if message["type"] == "http.response.start":
                self.lost.append(message["status"])

        await self.app(scope, receive, swallow)
        if self.how == "late":
            await anyio.sleep(self.delay)
        await send({"type": "http.response.start", "status": 502,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"bad gateway: upstream timed out"})


@dataclass
class Served:
    url: str
    token: str
    app: Any
    wrapper: LoseFirstAnswer
    spec: dict

    def sweeps(self) -> list[Sweep]:
        with self.app.state.sessionmaker() as s:
            return list(s.scalars(select(Sweep)).all())


@pytest.fixture
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    how, lose = request.param
    train, eval_ = write_data(tmp_path / "data")
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'sweepd.db'}", home=tmp_path / "home",
                        data_roots=[tmp_path / "data"])
    app = create_app(settings)
    wrapper = LoseFirstAnswer(app, how, lose=lose)
    server = ThreadedServer(wrapper).start()
    try:
        with session_scope(app.state.sessionmaker) as s:
            _, token = repo.create_token(s, "ci")
        spec = {"name": "lost-answer", "model": {"path": "builtin:tiny"},
                "data": {"train": [{"path": str(train)}], "eval": [{"path": str(eval_)}]},
                "search": {"algorithm": "random", "num_trials": 2, "seed": 0,
                           "space": {"learning_rate": {"loguniform": [1e-4, 1e-2]}}},
                "budget": {"max_samples": 64}, "pruner": {"type": "none"}}
        yield Served(server.url, token, app, wrapper, spec)
    finally:
        server.stop()


@pytest.mark.parametrize("served", [("502", 1)], indirect=True)
def test_a_502_after_the_sweep_was_made_is_retried_into_the_same_sweep(served: Served):
    with SweepdClient(served.url, served.token, retries=3, backoff=0.01) as client:
        sweep = client.submit(served.spec)
    assert served.wrapper.lost == [201]  # the first try made a sweep; its answer never arrived
    assert len(served.wrapper.submits) == 2
    keys = [h.get("idempotency-key") for h in served.wrapper.submits]
    assert keys[0] and keys[0] == keys[1]  # one key per submit, sent again on the retry
    stored = served.sweeps()
    assert [s.id for s in stored] == [sweep["id"]], "the retry made a second sweep"
    assert stored[0].idempotency_key == keys[0]
    with served.app.state.sessionmaker() as s:  # one "submitted" event: the retry wrote nothing
        submitted = s.scalar(select(func.count()).select_from(Event).where(Event.message.like("sweep submitted%")))
    assert submitted == 1


@pytest.mark.parametrize("served", [("late", 1)], indirect=True)
def test_a_timed_out_submit_is_retried_into_the_same_sweep(served: Served):
    """A read timeout: the request may have been served. With its key, a submit is retried (it
    used not to be, so that it would never make two sweeps) and gets the first try's sweep."""
    with SweepdClient(served.url, served.token, retries=2, backoff=0.01, timeout=1.0) as client:
        sweep = client.submit(served.spec)
    assert served.wrapper.lost == [201] and len(served.wrapper.submits) == 2
    assert [s.id for s in served.sweeps()] == [sweep["id"]]


@pytest.mark.parametrize("served", [("502", 99)], indirect=True)
def test_each_submit_has_its_own_key(served: Served):
    """Two submits of one spec are two sweeps (the key is per submit, not per spec), even when
    every answer is lost."""
    with SweepdClient(served.url, served.token, retries=1, backoff=0.01) as client:
        for _ in range(2):
            with pytest.raises(ServerUnreachable, match="HTTP 502"):
                client.submit(served.spec)
    keys = [h["idempotency-key"] for h in served.wrapper.submits]
    assert len(keys) == 4 and keys[0] == keys[1] and keys[2] == keys[3] and keys[0] != keys[2]
    assert len(served.sweeps()) == 2  # four tries, two submits, two sweeps
