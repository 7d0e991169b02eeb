"""Reads take a sweep's stored spec as it is: it was validated when it was stored, and a GET never
validates it again (#15). The list reads only the few fields it shows, never whole specs."""

from __future__ import annotations

import logging
import re

from sqlalchemy import event

from api import stored
from api.stored import summary_of
from sweepd.spec import Capacity, parse_spec
from sweepd.store import repo, session_scope
from tests.api.factories import API, Api, add_trial, make_sweep, spec_dict

# A document this sweepd's validation refuses (a newer sweepd's schema version, a pruner it does
# not know, a field it does not have), though every field a read shows is readable.
FROM_ANOTHER_VERSION = {
    "schema_version": 99,
    "name": "from-the-future",
    "objective": {"metric": "mc_accuracy"},  # mode: the metric's (max)
    "search": {"algorithm": "grid", "num_trials": 10,
               "space": {"learning_rate": {"choice": [1e-4, 2e-4, 3e-4]}, "effective_batch_size": {"choice": [8, 16]},
                         "warmup_steps": 3}},
    "pruner": {"type": "quantum"},
    "novelty": True,
}  # fmt: skip


def whole_spec_reads(statements: list[str]) -> list[str]:
    """The statements that read sweepd_sweeps.spec whole (not one of its fields through the
    database's JSON operators)."""
    field = re.compile(r"JSON_EXTRACT\(sweepd_sweeps\.spec,|sweepd_sweeps\.spec\s*(->|#>)", re.I)
    return [s for s in statements if "sweepd_sweeps.spec" in field.sub("", s)]


def test_a_stored_spec_that_would_not_validate_now_is_listed_and_shown_as_stored(api: Api, caplog):
    with session_scope(api.sessions) as s:
        sid = repo.create_sweep(s, name="from-the-future", spec=FROM_ANOTHER_VERSION, state="running").id
    add_trial(api.sessions, sid, 0, state="completed", objective=0.4)
    add_trial(api.sessions, sid, 1, state="completed", objective=0.7)
    with caplog.at_level(logging.WARNING, logger="sweepd.api"):
        listed = api.get(f"{API}/sweeps")
        detail = api.get(f"{API}/sweeps/{sid}")
    assert listed.status_code == 200 and detail.status_code == 200, (listed.text, detail.text)
    [item] = listed.json()["items"]
    for view in (item, detail.json()):
        assert view["objective"] == {"metric": "mc_accuracy", "mode": "max"}
        assert view["progress"]["planned"] == 6  # the grid's 3 x 2 points cap num_trials 10
        assert view["best"]["number"] == 1  # mode max: the highest objective
    assert detail.json()["spec"] == FROM_ANOTHER_VERSION  # as stored, not rebuilt
    assert not [r for r in caplog.records if "spec" in r.getMessage()], "a read judged the stored spec"


def test_the_list_never_reads_whole_specs(api: Api):
    """However large the stored specs are, a page reads only the objective and the plan's few
    fields from each (so it can neither validate a spec nor load a megabyte of one per row)."""
    search = {"algorithm": "random", "num_trials": 7, "seed": 0,
              "space": {"learning_rate": {"choice": [1e-5 + i * 1e-9 for i in range(20_000)]}}}
    for i in range(3):
        make_sweep(api.sessions, api.data, name=f"big-{i}", search=search)
    api.get(f"{API}/sweeps")  # the token's first use writes last_used_at: not part of what is looked at
    stored._summaries.clear()  # as a fresh server: the summaries come from the database
    statements: list[str] = []

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(api.app.state.engine, "before_cursor_execute", record)
    try:
        page = api.get(f"{API}/sweeps", params={"limit": 50})
    finally:
        event.remove(api.app.state.engine, "before_cursor_execute", record)
    assert page.status_code == 200
    assert [s["progress"]["planned"] for s in page.json()["items"]] == [7, 7, 7]
    assert any("sweepd_sweeps" in s for s in statements)
    assert whole_spec_reads(statements) == [], whole_spec_reads(statements)
    extracts = [s for s in statements if "sweepd_sweeps.spec" in s]
    assert len(extracts) == 1, extracts  # one query for the page's summaries
    statements.clear()
    event.listen(api.app.state.engine, "before_cursor_execute", record)
    try:
        assert api.get(f"{API}/sweeps").status_code == 200
    finally:
        event.remove(api.app.state.engine, "before_cursor_execute", record)
    assert not [s for s in statements if "sweepd_sweeps.spec" in s]  # then they are kept


def test_the_summary_of_a_stored_spec_is_what_the_spec_model_says(api: Api):
    """The fields a read takes from the stored document agree with the validated model's, for the
    plans that differ: random, a grid smaller than num_trials, a grid larger, a max metric."""
    cases = [
        {},
        {"search": {"algorithm": "grid", "num_trials": 50, "space": {"learning_rate": {"choice": [1e-4, 2e-4]},
                                                                     "effective_batch_size": {"choice": [8, 16, 32]}}}},
        {"search": {"algorithm": "grid", "num_trials": 3, "space": {"learning_rate": {"choice": [1e-4, 2e-4]},
                                                                    "effective_batch_size": {"choice": [8, 16]}}}},
        {"objective": {"metric": "exact_match"}},
    ]  # fmt: skip
    for changes in cases:
        spec = parse_spec(spec_dict(api.data, **changes), data_roots=[api.data], capacity=Capacity.unlimited())
        summary = summary_of(spec.to_stored())
        assert summary.planned == spec.planned_trials, changes
        assert (summary.objective.metric, summary.objective.mode) == (spec.objective.metric, spec.objective.mode)
        assert not summary.has_budget
        sid = make_sweep(api.sessions, api.data, **changes)
        assert api.get(f"{API}/sweeps/{sid}").json()["progress"]["planned"] == spec.planned_trials


def test_what_a_read_keeps_of_a_spec_follows_an_extension(api: Api):
    """The list keeps each sweep's summary (and a budget sweep's plan); extending a sweep changes
    its stored spec, and the next page shows the new one."""
    sid = make_sweep(api.sessions, api.data, state="succeeded")
    search = {**spec_dict(api.data)["search"], "compute_budget": 2048}
    search.pop("num_trials")
    budget_sid = make_sweep(api.sessions, api.data, state="succeeded", name="budget", search=search)
    add_trial(api.sessions, budget_sid, 0, state="completed", objective=1.0, samples=1024)

    def listed() -> dict[str, dict]:
        return {s["id"]: s for s in api.get(f"{API}/sweeps").json()["items"]}

    before = listed()
    assert before[sid]["progress"]["planned"] == 4 and before[budget_sid]["budget"]["total"] == 2048
    add_trial(api.sessions, sid, 0, state="completed", objective=1.0)
    extended = api.post(f"{API}/sweeps/{sid}/extend", json={"trials": 5})  # 1 held + 5 more
    assert extended.status_code == 202 and extended.json()["spec"]["search"]["num_trials"] == 6
    assert api.post(f"{API}/sweeps/{budget_sid}/extend", json={"budget": 1000}).status_code == 202
    after = listed()
    assert after[sid]["progress"]["planned"] == 6
    assert after[budget_sid]["budget"]["total"] == 3048


def test_a_page_ranks_each_live_sweeps_best_in_its_own_mode(api: Api):
    """One query ranks every live sweep's completed trials (min or max, lowest number on ties);
    a finished sweep shows its stored best whatever the objectives."""
    lo = make_sweep(api.sessions, api.data, state="running", name="lo")
    hi = make_sweep(api.sessions, api.data, state="running", name="hi", objective={"metric": "mc_accuracy"})
    done = make_sweep(api.sessions, api.data, state="running", name="done")
    for sid in (lo, hi, done):
        for n, (state, obj) in enumerate([("completed", 0.5), ("completed", 0.2), ("completed", 0.9),
                                          ("completed", 0.2), ("stopped", 0.01), ("running", None)]):
            add_trial(api.sessions, sid, n, state=state, objective=obj)
    with session_scope(api.sessions) as s:
        repo.set_best_trial(s, done, repo.trial_id_for(done, 0))
        repo.set_sweep_state(s, done, "succeeded")
    best = {s["id"]: s["best"]["number"] for s in api.get(f"{API}/sweeps").json()["items"]}
    assert best == {lo: 1, hi: 2, done: 0}  # 0.2 (trial 1 before 3), 0.9 (max), the stored one
