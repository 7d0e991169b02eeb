"""A compute-budget sweep's ``budget`` in the API (sweep detail and list), read from the trials in
the store; a sweep without a budget has none."""

from __future__ import annotations

from sqlalchemy import event

from tests.api.factories import API, Api, add_trial, make_sweep, spec_dict


def budget_sweep(api: Api, state: str = "running", **changes) -> str:
    search = {**spec_dict(api.data)["search"], "compute_budget": 5000}
    search.pop("num_trials")
    sid = make_sweep(api.sessions, api.data, state=state, search={**search, **changes})
    for n, (st, samples, secs) in enumerate([("completed", 1024, 10.0), ("stopped", 256, 2.0),
                                             ("stopped", 256, 2.0), ("running", 128, 1.0)]):
        add_trial(api.sessions, sid, n, state=st, samples=samples, seconds=secs)
    return sid


def test_the_detail_shows_spent_remaining_and_the_projection(api: Api):
    sid = budget_sweep(api)
    body = api.get(f"{API}/sweeps/{sid}").json()
    b = body["budget"]
    assert b.pop("eta_seconds") > 0  # 3,336 samples left at the rate so far
    assert b == {"unit": "samples", "total": 5000, "spent": 1664, "committed": 896, "remaining": 3336,
                 "fraction_spent": 0.3328, "trials_launched": 4, "trials_cap": 1000, "cost_per_trial": 512,
                 "projected_trials": 4, "exhausted": False}
    # planned: the 4 launched and the 4 the budget is projected to buy
    assert body["progress"]["planned"] == 8
    listed = api.get(f"{API}/sweeps").json()["items"][0]
    assert listed["budget"]["spent"] == 1664 and listed["progress"]["planned"] == 8


def test_a_finished_budget_sweep_commits_and_projects_nothing(api: Api):
    sid = budget_sweep(api, state="succeeded")
    b = api.get(f"{API}/sweeps/{sid}").json()["budget"]
    assert (b["spent"], b["committed"], b["projected_trials"], b["eta_seconds"], b["exhausted"]) == (1664, 0, 0, None, True)


def test_a_trial_cap_caps_the_projection(api: Api):
    sid = budget_sweep(api, num_trials=5)
    body = api.get(f"{API}/sweeps/{sid}").json()
    assert (body["budget"]["trials_cap"], body["budget"]["projected_trials"], body["progress"]["planned"]) == (5, 1, 5)


def test_a_sweep_without_a_budget_has_none(api: Api):
    sid = make_sweep(api.sessions, api.data, state="running")
    body = api.get(f"{API}/sweeps/{sid}").json()
    assert body["budget"] is None and body["progress"]["planned"] == 4


def test_budgets_cost_one_query_for_any_page_size(api: Api):
    for i in range(6):
        budget_sweep(api)
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    api.get(f"{API}/sweeps")  # the token's first use writes last_used_at: not part of the count
    event.listen(api.app.state.engine, "before_cursor_execute", count)
    try:
        api.get(f"{API}/sweeps", params={"limit": 1})
        small = len(statements)
        statements.clear()
        page = api.get(f"{API}/sweeps", params={"limit": 6}).json()
        large = len(statements)
    finally:
        event.remove(api.app.state.engine, "before_cursor_execute", count)
    assert large == small and all(s["budget"]["spent"] == 1664 for s in page["items"])


def test_sweepd_status_prints_the_budget_line(api: Api, monkeypatch):
    from contextlib import contextmanager

    from typer.testing import CliRunner

    import sweepd.cli.remote as remote
    from sweepd.cli import app

    sid = budget_sweep(api)
    body = api.get(f"{API}/sweeps/{sid}").json()

    class Stub:
        base_url = "http://sweepd.test"

        def get_sweep(self, sweep_id):
            return body

    @contextmanager
    def connected(*args):
        yield Stub()

    monkeypatch.setattr(remote, "_connected", connected)
    out = CliRunner().invoke(app, ["status", sid])
    assert out.exit_code == 0, out.output
    line = next(x for x in out.output.splitlines() if "budget:" in x)
    assert line.startswith("  budget: 1,664 of 5,000 samples spent (33.3%) by 4 trials, 3,336 left; "
                           "896 more committed to running trials; ~4 more trials at 512 each, spent in ~")
