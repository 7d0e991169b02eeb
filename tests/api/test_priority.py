"""Sweeps sharing one cluster, through the API (issue 16): PATCH /sweeps/{id} changes a sweep's
priority; the list and the detail show its priority, its share (running trials of its limit),
its place in the queue and what it waits for."""

from __future__ import annotations

from datetime import timedelta
from typing import get_args

from sqlalchemy import event

from api.schemas import SweepPriority
from sweepd.protocol import PRIORITIES
from sweepd.store import repo, session_scope
from sweepd.store.models import Sweep, utcnow
from tests.api.factories import API, Api, add_trial, make_sweep


def patch(api: Api, sweep_id: str, body, headers: dict[str, str] | None = None):
    kw = {"content": body} if isinstance(body, (bytes, str)) else {"json": body}
    return api.client.patch(f"{API}/sweeps/{sweep_id}", headers={"Content-Type": "application/json",
                                                                 **(api.auth if headers is None else headers)}, **kw)


def queued(api: Api, name: str, *, priority: str = "normal", minutes_ago: int) -> str:
    """A queued sweep of this priority, created ``minutes_ago`` minutes ago."""
    sid = make_sweep(api.sessions, api.data, name=name, priority=priority)
    with session_scope(api.sessions) as s:
        s.get(Sweep, sid).created_at = utcnow() - timedelta(minutes=minutes_ago)
    return sid


def by_id(api: Api, **query) -> dict[str, dict]:
    r = api.get(f"{API}/sweeps", params=query)
    assert r.status_code == 200, r.text
    return {s["id"]: s for s in r.json()["items"]}


def test_the_schema_knows_the_protocols_priorities():
    assert get_args(SweepPriority) == PRIORITIES


def test_patch_changes_the_priority_and_logs_it(api: Api):
    sid = make_sweep(api.sessions, api.data)  # queued, priority normal (the spec's default)
    assert api.get(f"{API}/sweeps/{sid}").json()["priority"] == "normal"

    r = patch(api, sid, {"priority": "high"})
    assert r.status_code == 200, r.text
    assert r.json()["id"] == sid and r.json()["priority"] == "high"
    assert r.json()["spec"]["name"] == "api-test"  # the sweep's detail, as GET answers it
    assert api.get(f"{API}/sweeps/{sid}").json()["priority"] == "high"

    events = api.get(f"{API}/sweeps/{sid}/events", params={"kind": "info"}).json()["items"]
    changes = [e for e in events if e["message"].startswith("priority ")]
    assert [e["message"] for e in changes] == ["priority normal -> high, set with token 'tests'"]
    assert changes[0]["payload"] == {"priority": "high", "previous": "normal", "token": "tests"}

    # the same priority again changes nothing and logs nothing
    assert patch(api, sid, {"priority": "high"}).status_code == 200
    r = patch(api, sid, {"priority": "low"})
    assert r.status_code == 200 and r.json()["priority"] == "low"
    events = api.get(f"{API}/sweeps/{sid}/events", params={"kind": "info"}).json()["items"]
    assert [e["message"].split(",")[0] for e in events if e["message"].startswith("priority ")] == [
        "priority normal -> high", "priority high -> low"]


def test_patch_works_on_validating_and_running_sweeps(api: Api):
    for state in ("validating", "running"):
        sid = make_sweep(api.sessions, api.data, state=state)
        r = patch(api, sid, {"priority": "low"})
        assert r.status_code == 200, (state, r.text)
        assert r.json()["priority"] == "low" and r.json()["state"] == state


def test_patch_on_a_finished_sweep_is_409(api: Api):
    for state in ("succeeded", "failed", "cancelled"):
        sid = make_sweep(api.sessions, api.data, state=state)
        r = patch(api, sid, {"priority": "high"})
        assert r.status_code == 409, (state, r.text)
        assert r.json()["detail"] == (f"sweep {sid!r} is already {state}: only a validating, queued or running "
                                      "sweep's priority can change")
        assert api.get(f"{API}/sweeps/{sid}").json()["priority"] == "normal"


def test_patch_unknown_sweep_is_404(api: Api):
    r = patch(api, "nope123", {"priority": "high"})
    assert r.status_code == 404 and r.json()["detail"] == "no sweep 'nope123'"


def test_patch_bad_bodies_are_422_naming_the_field(api: Api):
    sid = make_sweep(api.sessions, api.data)
    for body, field in [({"priority": "urgent"}, "priority"), ({"priority": 3}, "priority"),
                        ({"priority": None}, "priority"), ({}, "priority"),
                        ({"priority": "high", "colour": "red"}, "colour")]:
        r = patch(api, sid, body)
        assert r.status_code == 422, (body, r.text)
        locs = [item["loc"] for item in r.json()["detail"]]
        assert any(field in loc for loc in locs), (body, locs)
    msg = patch(api, sid, {"priority": "urgent"}).json()["detail"][0]["msg"]
    assert "'low', 'normal' or 'high'" in msg, msg
    for raw in (b"not json", b"[1, 2]", b'"high"', b"L\xff\xfe"):  # never a 5xx
        r = patch(api, sid, raw)
        assert 400 <= r.status_code < 500, (raw, r.status_code, r.text)
    assert api.get(f"{API}/sweeps/{sid}").json()["priority"] == "normal"  # nothing changed


def test_patch_needs_a_write_token(api: Api):
    sid = make_sweep(api.sessions, api.data)
    assert patch(api, sid, {"priority": "high"}, headers={}).status_code == 401
    assert patch(api, sid, {"priority": "high"}, headers={"Authorization": "Bearer swd_nope"}).status_code == 401
    with session_scope(api.sessions) as s:
        _, read = repo.create_token(s, "reader", scope="read")
    r = patch(api, sid, {"priority": "high"}, headers={"Authorization": f"Bearer {read}"})
    assert r.status_code == 403 and "needs a token with scope 'write'" in r.json()["detail"]
    assert api.get(f"{API}/sweeps/{sid}").json()["priority"] == "normal"


def test_list_and_detail_show_share_and_waiting(api: Api):
    sid = make_sweep(api.sessions, api.data, state="running", priority="high",
                     search={"algorithm": "random", "num_trials": 8, "max_concurrent": 4, "seed": 0,
                             "space": {"learning_rate": {"loguniform": [1.0e-5, 1.0e-3]}}})
    for n, state in enumerate(["running", "running", "running", "completed", "pending"]):
        add_trial(api.sessions, sid, n, state=state, objective=1.0 if state == "completed" else None)
    with session_scope(api.sessions) as s:
        repo.set_share(s, sid, trial_limit=2, waiting_for="its fair share of the cluster: 2 of 4 trial slots")
    idle = make_sweep(api.sessions, api.data, state="running")  # no trials, no limit

    shown = by_id(api)[sid]
    assert {k: shown[k] for k in ("priority", "max_concurrent", "trial_limit", "running_trials", "queue_position",
                                  "waiting_for")} == {
        "priority": "high", "max_concurrent": 4, "trial_limit": 2, "running_trials": 3, "queue_position": None,
        "waiting_for": "its fair share of the cluster: 2 of 4 trial slots"}
    assert shown["progress"]["running"] == 3
    detail = api.get(f"{API}/sweeps/{sid}").json()
    assert {k: detail[k] for k in ("priority", "trial_limit", "running_trials", "waiting_for")} == {
        "priority": "high", "trial_limit": 2, "running_trials": 3,
        "waiting_for": "its fair share of the cluster: 2 of 4 trial slots"}
    other = by_id(api)[idle]
    assert (other["trial_limit"], other["running_trials"], other["waiting_for"], other["max_concurrent"]) == (
        None, 0, None, 1)

    with session_scope(api.sessions) as s:  # the supervisor lifts the limit
        repo.set_share(s, sid, trial_limit=None, waiting_for=None)
    shown = by_id(api)[sid]
    assert (shown["trial_limit"], shown["waiting_for"]) == (None, None)


def test_queue_positions_follow_priority_then_age(api: Api):
    old_low = queued(api, "old-low", priority="low", minutes_ago=50)
    old_normal = queued(api, "old-normal", minutes_ago=40)
    new_normal = queued(api, "new-normal", minutes_ago=10)
    new_high = queued(api, "new-high", priority="high", minutes_ago=5)
    running = make_sweep(api.sessions, api.data, state="running")
    expected = {new_high: 1, old_normal: 2, new_normal: 3, old_low: 4}

    shown = by_id(api)
    assert {sid: shown[sid]["queue_position"] for sid in expected} == expected
    assert shown[running]["queue_position"] is None
    assert by_id(api, state="queued").keys() == expected.keys()
    # the place is in the whole queue, not in the page: one sweep per page
    for offset in range(4):
        [(sid, s)] = by_id(api, state="queued", limit=1, offset=offset).items()
        assert s["queue_position"] == expected[sid]
    assert api.get(f"{API}/sweeps/{old_low}").json()["queue_position"] == 4

    # raising the oldest low sweep to high puts it first (oldest of the two high ones)
    assert patch(api, old_low, {"priority": "high"}).json()["queue_position"] == 1
    shown = by_id(api)
    assert [shown[sid]["queue_position"] for sid in (old_low, new_high, old_normal, new_normal)] == [1, 2, 3, 4]
    # a sweep that starts leaves the queue; the ones behind it move up
    with session_scope(api.sessions) as s:
        repo.set_sweep_state(s, old_low, "running")
    shown = by_id(api)
    assert shown[old_low]["queue_position"] is None
    assert [shown[sid]["queue_position"] for sid in (new_high, old_normal, new_normal)] == [1, 2, 3]



def test_order_start_pages_through_the_queue_in_the_order_it_starts(api: Api):
    """The dashboard's Queue card reads the first 200 to start this way, not the newest 200."""
    low = queued(api, "low", priority="low", minutes_ago=50)
    old = queued(api, "old", minutes_ago=40)
    new = queued(api, "new", minutes_ago=10)
    high = queued(api, "high", priority="high", minutes_ago=5)
    make_sweep(api.sessions, api.data, state="running")
    pages = [api.get(f"{API}/sweeps", params={"state": "queued", "order": "start", "limit": 2, "offset": o}).json()
             for o in (0, 2)]
    assert [[s["id"] for s in p["items"]] for p in pages] == [[high, old], [new, low]]
    assert [s["queue_position"] for p in pages for s in p["items"]] == [1, 2, 3, 4]
    assert list(by_id(api, state="queued")) == [high, new, old, low]  # the default: newest first
    r = api.get(f"{API}/sweeps", params={"order": "oldest"})
    assert r.status_code == 422 and "order" in r.text

def test_a_page_costs_the_same_queries_however_many_sweeps_share_the_cluster(api: Api):
    """The counts are one grouped query and the queue one query per page, not one per sweep."""
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    def page_cost() -> tuple[int, int]:
        statements.clear()
        event.listen(api.app.state.engine, "before_cursor_execute", count)
        try:
            assert api.get(f"{API}/sweeps", params={"limit": 200}).status_code == 200
        finally:
            event.remove(api.app.state.engine, "before_cursor_execute", count)
        return len(statements), sum("sweepd_trials" in s for s in statements)

    def add(n: int) -> None:
        for k in range(n):
            sid = make_sweep(api.sessions, api.data, state="running" if k % 2 else "queued",
                             priority=PRIORITIES[k % 3])
            add_trial(api.sessions, sid, 0, state="running")

    add(2)
    page_cost()  # (caches warmed: the spec summaries)
    small = page_cost()
    add(12)
    page_cost()
    large = page_cost()
    assert large == small, (small, large)
