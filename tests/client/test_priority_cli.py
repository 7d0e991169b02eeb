"""A sweep's priority from Python and the shell (issue 16): ``SweepdClient.set_priority``,
`sweepd priority ID {low,normal,high}` (every exit code with its one-line reason) and what
`sweepd status` says about a sweep's priority, share and what it waits for.

The server is a real `sweepd serve --no-supervise` (tests/client/conftest.py); the sweeps, their
trials and the supervisor's grants are written straight into its store.
"""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
import pytest

from sweepd.client import ConflictError, NotFoundError, ServerUnreachable, SpecRejected, SweepdClient

from .conftest import sweepd


def put_sweep(server, name: str, *, state: str = "queued", priority: str = "normal", minutes_ago: int = 0,
              max_concurrent: int = 2) -> str:
    """A sweep in the server's store, as its supervisor would leave it (no driver runs)."""
    from sweepd.store import repo
    from sweepd.store.db import session_scope
    from sweepd.store.models import Sweep, utcnow

    spec = {"name": name, "priority": priority, "search": {"max_concurrent": max_concurrent}}
    with session_scope(server.engine) as s:
        sid = repo.create_sweep(s, name=name, spec=spec).id
        s.get(Sweep, sid).created_at = utcnow() - timedelta(minutes=minutes_ago)
        if state != "queued":
            repo.set_sweep_state(s, sid, "running")
            if state != "running":
                repo.set_sweep_state(s, sid, state)
    return sid


def cli(server, *args: str, token: str | None = None):
    return sweepd(server, *args, "--server", server.url, "--token", token or server.token, "--retries", "0")


def one_line_error(run) -> str:
    assert "Traceback" not in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    return run.reason


# ---- the Python client ----------------------------------------------------------------------------


def test_set_priority_reorders_the_queue(server):
    first = put_sweep(server, "queue-a", minutes_ago=30)
    second = put_sweep(server, "queue-b", minutes_ago=20)
    with SweepdClient(server.url, server.token) as c:
        before = {sid: c.get_sweep(sid)["queue_position"] for sid in (first, second)}
        assert before[first] < before[second]  # normal and normal: the older first
        raised = c.set_priority(second, "high")
        assert raised["id"] == second and raised["priority"] == "high"
        assert raised["queue_position"] < c.get_sweep(first)["queue_position"]
        events = c._json("GET", f"/api/v1/sweeps/{second}/events", params={"kind": "info"})["items"]
        assert any(e["message"].startswith("priority normal -> high") for e in events)

        with pytest.raises(SpecRejected) as bad:
            c.set_priority(first, "urgent")
        assert [path for path, _ in bad.value.errors] == ["priority"]
        with pytest.raises(NotFoundError, match="nope123"):
            c.set_priority("nope123", "high")
        done = put_sweep(server, "queue-done", state="succeeded")
        with pytest.raises(ConflictError, match="already succeeded"):
            c.set_priority(done, "low")


def test_set_priority_is_retried_after_a_read_timeout():
    """Setting a priority twice is the same as once: a request that may have reached the server is
    sent again (a cancel is not, tests/client/test_client.py)."""
    calls = []

    def handler(request):
        calls.append((request.method, request.url.path, json.loads(request.content)))
        if len(calls) < 3:
            raise httpx.ReadTimeout("slow", request=request)
        return httpx.Response(200, json={"id": "s1", "priority": "low"})

    c = SweepdClient("http://sweepd.test", "swd_t", transport=httpx.MockTransport(handler), sleep=lambda s: None,
                     retries=3)
    assert c.set_priority("s1", "low") == {"id": "s1", "priority": "low"}
    assert calls == [("PATCH", "/api/v1/sweeps/s1", {"priority": "low"})] * 3
    calls.clear()
    c = SweepdClient("http://sweepd.test", "swd_t", transport=httpx.MockTransport(handler), sleep=lambda s: None,
                     retries=1)
    with pytest.raises(ServerUnreachable, match="2 attempts"):
        c.set_priority("s1", "low")


# ---- `sweepd priority` ----------------------------------------------------------------------------


def test_priority_command_changes_it_and_says_where_the_sweep_is(server):
    sid = put_sweep(server, "cli-low", priority="low", minutes_ago=60)
    run = cli(server, "priority", sid, "high")
    assert run.code == 0, run.stderr
    with SweepdClient(server.url, server.token) as c:
        sweep = c.get_sweep(sid)
    assert sweep["priority"] == "high"
    assert run.reason == f"sweep {sid} (cli-low): priority high; queue position {sweep['queue_position']}"

    running = put_sweep(server, "cli-running", state="running")
    run = cli(server, "priority", running, "low")
    assert run.code == 0 and run.reason == f"sweep {running} (cli-running): priority low"


def test_priority_command_errors_are_one_line(server):
    sid = put_sweep(server, "cli-errors")
    bad = cli(server, "priority", sid, "urgent")
    assert bad.code == 3
    assert one_line_error(bad) == "error: priority must be one of low, normal, high, got 'urgent'"

    missing = cli(server, "priority", "nope123", "high")
    assert missing.code == 3 and "not found" in one_line_error(missing) and "nope123" in missing.reason

    done = put_sweep(server, "cli-done", state="cancelled")
    finished = cli(server, "priority", done, "high")
    assert finished.code == 1
    assert one_line_error(finished).startswith(f"sweep {done} priority not changed: sweep {done!r} is already "
                                               "cancelled")

    from sweepd.store import repo
    from sweepd.store.db import session_scope

    with session_scope(server.engine) as s:
        _, read = repo.create_token(s, "cli-reader", scope="read")
    refused = cli(server, "priority", sid, "high", token=read)
    assert refused.code == 3 and "needs a token with scope 'write'" in one_line_error(refused)
    with SweepdClient(server.url, server.token) as c:
        assert c.get_sweep(sid)["priority"] == "normal"  # none of these changed it


# ---- `sweepd status` -------------------------------------------------------------------------------


def test_status_shows_priority_share_and_waiting(server):
    from sweepd.store import repo
    from sweepd.store.db import session_scope

    sid = put_sweep(server, "shared", state="running", priority="high", max_concurrent=4)
    with session_scope(server.engine) as s:
        for n in range(3):
            repo.upsert_trial(s, sid, n, state="running" if n < 2 else "completed", config={})
        repo.set_share(s, sid, trial_limit=2, waiting_for="its fair share of the cluster: 2 of 5 trial slots")
    run = cli(server, "status", sid)
    assert run.code == 0, run.stderr
    lines = run.stdout.splitlines()
    assert "  priority: high; share: 2 of 2 trial slots running" in lines, run.stdout
    assert "  waiting for its fair share of the cluster: 2 of 5 trial slots" in lines

    with session_scope(server.engine) as s:  # the limit lifted: its own max_concurrent
        repo.set_share(s, sid, trial_limit=None, waiting_for=None)
    lines = cli(server, "status", sid).stdout.splitlines()
    assert "  priority: high; running 2 of up to 4 trials at once" in lines
    assert not [line for line in lines if "waiting for" in line]

    waiting = put_sweep(server, "in-line", priority="low")
    with session_scope(server.engine) as s:
        repo.set_share(s, waiting, trial_limit=None, waiting_for="a sweep slot: 4 of 4 running")
    with SweepdClient(server.url, server.token) as c:
        position = c.get_sweep(waiting)["queue_position"]
    lines = cli(server, "status", waiting).stdout.splitlines()
    assert f"  priority: low; queue position {position}" in lines
    assert "  waiting for a sweep slot: 4 of 4 running" in lines

    done = put_sweep(server, "all-done", state="succeeded")  # a finished sweep shares nothing
    lines = cli(server, "status", done).stdout.splitlines()
    assert lines[0] == f"sweep {done} (all-done): succeeded"
    assert not [line for line in lines if "priority" in line or "waiting for" in line], lines
