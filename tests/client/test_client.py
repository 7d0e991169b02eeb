"""sweepd.client.SweepdClient: retries, errors, request shapes (httpx.MockTransport), and a
port with nothing listening."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from sweepd.client import (
    AuthError,
    ClientError,
    ConflictError,
    NotFoundError,
    ServerUnreachable,
    SpecRejected,
    SweepdClient,
    WaitTimeout,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make(handler, **kw):
    sleeps: list[float] = []
    kw.setdefault("retries", 3)
    kw.setdefault("backoff", 0.1)
    c = SweepdClient("http://sweepd.test", "swd_t", transport=httpx.MockTransport(handler),
                     sleep=sleeps.append, **kw)
    return c, sleeps


SWEEP = {"id": "s1", "name": "demo", "state": "queued", "objective": {"metric": "eval_loss", "mode": "min"},
         "progress": {"planned": 2}, "best": None, "ledger": {}}


def test_retries_502_503_504_with_exponential_backoff_then_succeeds():
    answers = iter([502, 503, 504, 200])
    seen = []

    def handler(request):
        seen.append(request)
        code = next(answers)
        return httpx.Response(code, json=SWEEP if code == 200 else {"detail": "busy"})

    c, sleeps = make(handler)
    assert c.get_sweep("s1")["id"] == "s1"
    assert len(seen) == 4 and sleeps == [0.1, 0.2, 0.4]
    assert seen[0].headers["authorization"] == "Bearer swd_t"
    assert seen[0].url.path == "/api/v1/sweeps/s1"


def test_gives_up_after_retries_with_a_one_line_reason():
    c, sleeps = make(lambda r: httpx.Response(503, text="down\nfor maintenance"))
    with pytest.raises(ServerUnreachable) as info:
        c.health()
    assert len(sleeps) == 3 and "HTTP 503" in str(info.value) and "4 attempts" in str(info.value)
    assert "\n" not in str(info.value)


def test_connection_errors_are_retried_for_every_method():
    calls = []

    def handler(request):
        calls.append(request.method)
        if len(calls) < 3:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(201, json=SWEEP)

    c, sleeps = make(handler)
    assert c.submit({"name": "demo"})["id"] == "s1"
    assert calls == ["POST"] * 3 and sleeps == [0.1, 0.2]


def test_read_timeout_is_retried_for_reads_and_keyed_submits_not_for_cancel():
    """After a read timeout the request may have been served: a read is sent again, and so is a
    submit, whose Idempotency-Key makes the server answer a repeat with the first sweep; a cancel
    is not (a second cancel would be a 409 for a cancel that worked)."""
    calls = []

    def handler(request):
        calls.append((request.method, request.headers.get("idempotency-key")))
        raise httpx.ReadTimeout("slow", request=request)

    c, sleeps = make(handler)
    with pytest.raises(ServerUnreachable, match="4 attempts"):
        c.submit({"name": "demo"})
    assert [m for m, _ in calls] == ["POST"] * 4 and sleeps == [0.1, 0.2, 0.4]
    assert calls[0][1] and len({k for _, k in calls}) == 1  # one key, on every try
    calls.clear()
    with pytest.raises(ServerUnreachable, match="not retried"):
        c.cancel("s1")
    assert calls == [("POST", None)]
    calls.clear()
    with pytest.raises(ServerUnreachable):
        c.get_sweep("s1")
    assert [m for m, _ in calls] == ["GET"] * 4


def test_every_submit_sends_a_new_idempotency_key():
    keys = []

    def handler(request):
        keys.append(request.headers["idempotency-key"])
        return httpx.Response(201, json=SWEEP)

    c, _ = make(handler)
    c.submit({"name": "a"})
    c.submit({"name": "a"})
    assert len(set(keys)) == 2 and all(len(k) == 36 for k in keys)  # str(uuid4())


@pytest.mark.parametrize("code,exc", [(400, ClientError), (401, AuthError), (403, AuthError),
                                      (404, NotFoundError), (409, ConflictError), (500, ClientError)])
def test_4xx_and_500_are_not_retried(code, exc):
    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(code, json={"detail": f"nope {code}"})

    c, sleeps = make(handler)
    with pytest.raises(exc) as info:
        c.get_sweep("s1")
    assert calls == [1] and sleeps == []
    assert info.value.status == code and f"nope {code}" in str(info.value)


def test_422_becomes_spec_rejected_with_field_paths():
    body = {"detail": [
        {"loc": ["body", "search", "num_trials"], "msg": "Input should be greater than 0", "type": "x"},
        {"loc": ["data", "train", 0, "path"], "msg": "no such file", "type": "y"},
        {"loc": [], "msg": "something global", "type": "z"},
    ]}
    c, _ = make(lambda r: httpx.Response(422, json=body))
    with pytest.raises(SpecRejected) as info:
        c.submit("name: x\nsearch: {num_trials: 0}\n")
    assert info.value.errors == [("search.num_trials", "Input should be greater than 0"),
                                 ("data.train[0].path", "no such file"), ("", "something global")]
    msg = str(info.value)
    assert msg.startswith("invalid spec (3 problems): search.num_trials: Input should be greater than 0;")
    assert "\n" not in msg


def test_submit_bodies_dict_yaml_text_json_text_and_files(tmp_path):
    got = []

    def handler(request):
        got.append((request.headers["content-type"], request.content.decode()))
        return httpx.Response(201, json=SWEEP)

    c, _ = make(handler)
    c.submit({"name": "a"})
    c.submit("name: b\nsearch: {num_trials: 1}\n")
    c.submit('{"name": "c"}')
    (tmp_path / "d.yaml").write_text("name: d\n")
    (tmp_path / "e.json").write_text('{"name": "e"}')
    c.submit(tmp_path / "d.yaml")
    c.submit(str(tmp_path / "e.json"))
    assert got == [("application/json", '{"name": "a"}'),
                   ("application/yaml", "name: b\nsearch: {num_trials: 1}\n"),
                   ("application/json", '{"name": "c"}'),
                   ("application/yaml", "name: d\n"),
                   ("application/json", '{"name": "e"}')]
    with pytest.raises(ClientError, match="cannot read spec 'missing.yaml'"):
        c.submit("missing.yaml")


def test_other_routes():
    def handler(request):
        path, q = request.url.path, dict(request.url.params)
        if path == "/api/v1/sweeps" and request.method == "GET":
            return httpx.Response(200, json={"items": [SWEEP], "total": 1, "q": q})
        if path.endswith("/trials"):
            return httpx.Response(200, json={"items": [{"number": 0}, {"number": 1}]})
        if path.endswith("/cancel"):
            return httpx.Response(202, json={**SWEEP, "state": "running"})
        if path.endswith("/report"):
            if q["format"] == "markdown":
                return httpx.Response(200, text="# report")
            return httpx.Response(200, json={"sweep_id": "s1"})
        if path == "/healthz":
            return httpx.Response(200, json={"status": "ok"})
        return httpx.Response(404, json={"detail": "no route"})

    c, _ = make(handler)
    page = c.list_sweeps(state="running", limit=10, offset=5)
    assert page["q"] == {"state": "running", "limit": "10", "offset": "5", "order": "newest"}
    assert c.list_sweeps(state="queued", order="start")["q"]["order"] == "start"
    assert [t["number"] for t in c.trials("s1")] == [0, 1]
    assert c.cancel("s1")["state"] == "running"
    assert c.report("s1", "markdown") == "# report" and c.report("s1") == {"sweep_id": "s1"}
    assert c.health() == {"status": "ok"}
    with pytest.raises(ValueError):
        c.report("s1", "html")


def test_wait_polls_until_terminal_and_reports_each_poll():
    states = iter(["validating", "queued", "running", "running", "succeeded"])
    c, sleeps = make(lambda r: httpx.Response(200, json={**SWEEP, "state": next(states)}))
    seen = []
    final = c.wait("s1", poll=0.5, on_update=lambda s: seen.append(s["state"]))
    assert final["state"] == "succeeded"
    assert seen == ["validating", "queued", "running", "running", "succeeded"] and sleeps == [0.5] * 4


def test_wait_ends_when_the_data_preflight_fails_the_sweep():
    states = iter(["validating", "validating", "failed"])
    c, sleeps = make(lambda r: httpx.Response(200, json={**SWEEP, "state": next(states),
                                                         "error": "/data/train.jsonl:2: not valid JSON"}))
    final = c.wait("s1", poll=0.5)
    assert final["state"] == "failed" and final["error"] == "/data/train.jsonl:2: not valid JSON"
    assert sleeps == [0.5] * 2


def test_wait_timeout():
    c = SweepdClient("http://sweepd.test", transport=httpx.MockTransport(
        lambda r: httpx.Response(200, json={**SWEEP, "state": "running"})))
    t0 = time.monotonic()
    with pytest.raises(WaitTimeout, match="still running after 0.3 s"):
        c.wait("s1", poll=0.1, timeout=0.3)
    assert time.monotonic() - t0 < 2


def test_env_defaults(monkeypatch):
    monkeypatch.setenv("SWEEPD_SERVER", "http://elsewhere:9/")
    monkeypatch.setenv("SWEEPD_TOKEN", "swd_env")
    c = SweepdClient()
    assert c.base_url == "http://elsewhere:9" and c.token == "swd_env"
    with pytest.raises(ValueError, match="http://"):
        SweepdClient("localhost:8080")


def test_nothing_listening_gives_server_unreachable_quickly():
    port = free_port()
    c = SweepdClient(f"http://127.0.0.1:{port}", "swd_x", retries=3, backoff=0.01, timeout=2)
    t0 = time.monotonic()
    with pytest.raises(ServerUnreachable) as info:
        c.get_sweep("s1")
    assert time.monotonic() - t0 < 5
    msg = str(info.value)
    assert f"cannot reach sweepd at http://127.0.0.1:{port}" in msg and "4 attempts" in msg
    with pytest.raises(ServerUnreachable):
        c.submit({"name": "x"})  # a refused connection was never sent: retried too, then unreachable
