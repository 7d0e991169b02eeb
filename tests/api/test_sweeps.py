"""POST /sweeps (JSON and YAML, and every kind of bad body), listing, detail and cancel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from sqlalchemy import event

from sweepd.settings import get_settings
from sweepd.spec import SweepSpec
from sweepd.store import repo, session_scope
from tests.api.factories import API, Api, add_trial, make_sweep, preflighted, spec_dict, start

JSON = {"Content-Type": "application/json"}
YAML = {"Content-Type": "application/yaml"}


def post_spec(api: Api, body: str | bytes, headers: dict[str, str] = JSON):
    return api.post(f"{API}/sweeps", content=body, headers=headers)


def locs(r) -> list[list]:
    return [item["loc"] for item in r.json()["detail"]]


# ---- submitting -------------------------------------------------------------------------------


def test_post_json_creates_a_sweep_that_is_queued_once_its_data_is_validated(api: Api):
    r = post_spec(api, json.dumps(spec_dict(api.data)))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["state"] == "validating" and body["name"] == "api-test"  # new data: not cached
    assert preflighted(api, body["id"])["state"] == "queued"
    assert body["objective"] == {"metric": "eval_loss", "mode": "min"}
    assert body["progress"] == {"planned": 4, "pending": 0, "running": 0, "completed": 0, "stopped": 0,
                                "failed": 0, "diverged": 0, "oom": 0, "finished": 0}
    assert body["best"] is None and body["ledger"] == {}
    assert r.headers["location"] == f"{API}/sweeps/{body['id']}"
    with api.sessions() as s:
        stored = repo.get_sweep(s, body["id"])
        assert stored.state == "queued"
        # the stored spec is the validated model as JSON: defaults filled, paths resolved
        assert stored.spec["pruner"]["time_attr"] == "samples"
        assert stored.spec["data"]["train"][0]["path"] == str((api.data / "train.jsonl").resolve())
        assert SweepSpec.from_stored(stored.spec).planned_trials == 4
    detail = api.get(f"{API}/sweeps/{body['id']}").json()
    assert detail["spec"] == stored.spec


@pytest.mark.parametrize("content_type", ["application/yaml", "application/x-yaml", "text/yaml; charset=utf-8"])
def test_post_yaml_creates_a_sweep(api: Api, content_type: str):
    text = "# a comment\n" + yaml.safe_dump(spec_dict(api.data, name="from-yaml"), sort_keys=False)
    r = post_spec(api, text, {"Content-Type": content_type})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "from-yaml"


def test_relative_paths_resolve_inside_the_data_root(api: Api):
    spec = spec_dict(api.data)
    spec["data"] = {"train": [{"path": "train.jsonl"}], "eval": [{"path": "./eval.jsonl"}]}
    r = post_spec(api, json.dumps(spec))
    assert r.status_code == 201, r.text
    stored = api.get(f"{API}/sweeps/{r.json()['id']}").json()["spec"]
    assert stored["data"]["eval"][0]["path"] == str((api.data / "eval.jsonl").resolve())


def test_malformed_json_is_422(api: Api):
    r = post_spec(api, '{"name": "x",\n "model": }')
    assert r.status_code == 422
    [item] = r.json()["detail"]
    assert item["loc"] == ["body"] and item["type"] == "json_invalid"
    assert "line 2" in item["msg"]


def test_malformed_yaml_is_422_with_the_line_number(api: Api):
    r = post_spec(api, "name: x\nmodel: {path: builtin:tiny\nsearch: [1, 2\n", YAML)
    assert r.status_code == 422
    [item] = r.json()["detail"]
    assert item["loc"] == ["body"] and item["type"] == "yaml_invalid"
    assert "line 3" in item["msg"] or "line 4" in item["msg"], item


def test_duplicate_yaml_keys_are_422(api: Api):
    r = post_spec(api, "name: a\nname: b\n", YAML)
    assert r.status_code == 422
    assert "duplicate key" in r.json()["detail"][0]["msg"]


@pytest.mark.parametrize("body", ["[1, 2]", '"just a string"', "42", "null"])
def test_a_body_that_is_not_a_mapping_is_422(api: Api, body: str):
    r = post_spec(api, body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body"]


def test_every_problem_is_reported_with_its_field_path(api: Api):
    spec = spec_dict(api.data, colour="blue")
    spec["search"]["num_trials"] = 0  # out of range
    spec["search"]["max_concurrent"] = "two"  # wrong type
    spec["pruner"]["reduction_factor"] = 1  # must be > 1
    spec["data"]["train"][0]["phase"] = -1  # nested list item
    r = post_spec(api, json.dumps(spec))
    assert r.status_code == 422, r.text
    got = locs(r)
    for want in (["body", "colour"], ["body", "search", "num_trials"], ["body", "search", "max_concurrent"],
                 ["body", "pruner", "reduction_factor"], ["body", "data", "train", 0, "phase"]):
        assert want in got, (want, got)
    assert all(item["type"] == "spec_error" for item in r.json()["detail"])
    unknown = next(i for i in r.json()["detail"] if i["loc"] == ["body", "colour"])
    assert "unknown field" in unknown["msg"]


def test_path_traversal_is_422(api: Api):
    spec = spec_dict(api.data)
    spec["data"]["train"] = [{"path": "../../etc/passwd"}]
    spec["model"] = {"path": "../../../../../../etc"}
    r = post_spec(api, json.dumps(spec))
    assert r.status_code == 422, r.text
    by_loc = {tuple(i["loc"]): i["msg"] for i in r.json()["detail"]}
    assert "outside the data roots" in by_loc[("body", "data", "train", 0, "path")]
    assert "outside the data roots" in by_loc[("body", "model", "path")]


def test_an_absolute_path_outside_the_data_roots_is_422(api_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "train.jsonl").write_text((api_env / "train.jsonl").read_text())
    other_root = tmp_path / "other-root"
    other_root.mkdir()
    monkeypatch.setenv("SWEEPD_DATA_ROOTS", str(other_root))  # the data root is now somewhere else
    get_settings.cache_clear()
    for api in start(api_env):
        spec = spec_dict(api_env)
        spec["data"]["train"] = [{"path": str(elsewhere / "train.jsonl")}]
        r = post_spec(api, json.dumps(spec))
        assert r.status_code == 422, r.text
        by_loc = {tuple(i["loc"]): i["msg"] for i in r.json()["detail"]}
        assert str(other_root) in by_loc[("body", "data", "train", 0, "path")]
        assert ("body", "data", "eval", 0, "path") in by_loc  # the old root no longer counts either


def test_an_oversized_body_is_413(api_env: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SWEEPD_MAX_BODY_BYTES", "2000")
    get_settings.cache_clear()
    for api in start(api_env):
        small = json.dumps(spec_dict(api_env))
        assert len(small) < 2000
        assert post_spec(api, small).status_code == 201
        big = json.dumps(spec_dict(api_env, fixed={"eval": {"max_items": 10}}, padding="x" * 5000))
        r = post_spec(api, big)
        assert r.status_code == 413
        assert "2,000 bytes" in r.json()["detail"]

        def chunks():  # no Content-Length: the limit holds while streaming
            for _ in range(10):
                yield b" " * 500

        r = api.post(f"{API}/sweeps", content=chunks(), headers=JSON)
        assert r.status_code == 413


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_an_unsupported_content_type_is_415(api: Api, content_type: str | None):
    headers = {"Content-Type": content_type} if content_type else {}
    r = api.client.post(f"{API}/sweeps", content=json.dumps(spec_dict(api.data)).encode(),
                        headers={**api.auth, **headers})
    assert r.status_code == 415
    assert "application/json" in r.json()["detail"] and "application/yaml" in r.json()["detail"]


def test_bodies_that_would_blow_up_are_422(api: Api):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi")
    ) + "name: *i\n"
    r = post_spec(api, bomb, YAML)
    assert r.status_code == 422 and "values" in r.json()["detail"][0]["msg"]
    assert post_spec(api, "[" * 5000 + "]" * 5000).status_code == 422
    assert post_spec(api, "a:\n" + "".join("  " * i + "- \n" for i in range(1, 200)), YAML).status_code == 422
    assert post_spec(api, b"name: \xff\xfe\n", YAML).status_code == 422
    assert post_spec(api, "").status_code == 422
    spec = spec_dict(api.data)
    spec["data"]["train"] = [{"path": "tr\u0000ain.jsonl"}]
    assert post_spec(api, json.dumps(spec)).status_code == 422


# ---- listing and detail -----------------------------------------------------------------------


def test_list_is_paginated_newest_first_and_filtered_by_state(api: Api):
    ids = [make_sweep(api.sessions, api.data, name=f"s{i}") for i in range(5)]
    running = make_sweep(api.sessions, api.data, name="r", state="running")
    page = api.get(f"{API}/sweeps", params={"limit": 2}).json()
    assert page["total"] == 6 and page["limit"] == 2 and page["offset"] == 0
    assert [s["id"] for s in page["items"]] == [running, ids[4]]
    page2 = api.get(f"{API}/sweeps", params={"limit": 2, "offset": 2}).json()
    assert [s["id"] for s in page2["items"]] == [ids[3], ids[2]]
    only = api.get(f"{API}/sweeps", params={"state": "running"}).json()
    assert only["total"] == 1 and only["items"][0]["id"] == running
    assert api.get(f"{API}/sweeps", params={"offset": 100}).json()["items"] == []
    huge = api.get(f"{API}/sweeps", params={"offset": 2**31 - 1})  # the largest the schema allows
    assert huge.status_code == 200 and huge.json()["items"] == []
    assert api.get(f"{API}/sweeps", params={"offset": 2**31}).status_code == 422


def test_list_progress_costs_the_same_queries_for_any_page_size(api: Api):
    for i in range(12):
        sid = make_sweep(api.sessions, api.data, name=f"s{i}", state="running")
        for n in range(3):
            add_trial(api.sessions, sid, n, state=["completed", "stopped", "running"][n], objective=float(n + i))
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    api.get(f"{API}/sweeps")  # the token's first use writes last_used_at: not part of the count
    event.listen(api.app.state.engine, "before_cursor_execute", count)
    try:
        api.get(f"{API}/sweeps", params={"limit": 1})
        small = len(statements)
        statements.clear()
        page = api.get(f"{API}/sweeps", params={"limit": 12}).json()
        large = len(statements)
    finally:
        event.remove(api.app.state.engine, "before_cursor_execute", count)
    assert large == small, (small, large)
    for s in page["items"]:
        p = s["progress"]
        assert (p["completed"], p["stopped"], p["running"], p["finished"], p["planned"]) == (1, 1, 1, 2, 4)
        assert s["best"]["number"] == 0  # the only completed trial, while the sweep runs


def test_detail_has_progress_best_ledger_and_spec(api: Api):
    sid = make_sweep(api.sessions, api.data, state="running")
    add_trial(api.sessions, sid, 0, state="completed", objective=2.0)
    add_trial(api.sessions, sid, 1, state="completed", objective=1.0)
    add_trial(api.sessions, sid, 2, state="completed", objective=1.0)  # tie: the lower number wins
    add_trial(api.sessions, sid, 3, state="diverged")
    add_trial(api.sessions, sid, 4, state="pending")
    d = api.get(f"{API}/sweeps/{sid}").json()
    assert d["state"] == "running" and d["started_at"] is not None and d["finished_at"] is None
    assert d["progress"] == {"planned": 4, "pending": 1, "running": 0, "completed": 3, "stopped": 0,
                             "failed": 0, "diverged": 1, "oom": 0, "finished": 4}
    assert d["best"]["number"] == 1 and d["best"]["objective"] == 1.0
    assert d["best"]["config"]["effective_batch_size"] == 8
    assert d["spec"]["name"] == "api-test"
    # once the sweep is finished, the stored best trial and ledger are what counts
    with session_scope(api.sessions) as s:
        repo.set_best_trial(s, sid, f"{sid}-0000")
        repo.update_ledger(s, sid, {"spent": {"samples": 10}})
        repo.set_sweep_state(s, sid, "succeeded")
    d = api.get(f"{API}/sweeps/{sid}").json()
    assert d["state"] == "succeeded" and d["finished_at"] is not None
    assert d["best"]["number"] == 0 and d["ledger"] == {"spent": {"samples": 10}}


def test_max_objective_picks_the_highest(api: Api):
    sid = make_sweep(api.sessions, api.data, state="running", objective={"metric": "mc_accuracy"})
    add_trial(api.sessions, sid, 0, state="completed", objective=0.3)
    add_trial(api.sessions, sid, 1, state="completed", objective=0.7)
    d = api.get(f"{API}/sweeps/{sid}").json()
    assert d["objective"] == {"metric": "mc_accuracy", "mode": "max"}
    assert d["best"]["number"] == 1


def strict_json(token: str):
    raise AssertionError(f"{token} in a JSON response")


def test_non_finite_numbers_and_odd_stored_specs_never_break_a_read(api: Api):
    sid = make_sweep(api.sessions, api.data, state="running")
    # (SQLite stores NaN as null; PostgreSQL keeps it)
    add_trial(api.sessions, sid, 0, state="completed", objective=float("nan"), stopped_at=float("inf"))
    add_trial(api.sessions, sid, 1, state="completed", objective=float("-inf"))
    with session_scope(api.sessions) as s:
        odd = repo.create_sweep(s, name="odd", spec={"search": {"num_trials": "many"}}).id
    for path in [f"/sweeps/{sid}", "/sweeps", f"/sweeps/{sid}/trials", f"/trials/{sid}-0000",
                 f"/sweeps/{sid}/curves", f"/sweeps/{sid}/report", f"/sweeps/{sid}/report?format=markdown",
                 f"/sweeps/{sid}/calibration", f"/sweeps/{odd}", f"/sweeps/{odd}/calibration",
                 f"/sweeps/{odd}/report?format=markdown"]:
        r = api.get(API + path)
        assert r.status_code == 200, (path, r.text)
        if r.headers["content-type"].startswith("application/json"):
            json.loads(r.text, parse_constant=strict_json)  # no NaN/Infinity tokens: they are not JSON
    assert api.get(f"{API}/trials/{sid}-0000").json()["stopped_at"] is None
    assert api.get(f"{API}/sweeps/{odd}").json()["progress"]["planned"] == 0


# ---- cancel -------------------------------------------------------------------------------------


def test_cancel_a_queued_sweep_then_again_is_409(api: Api):
    sid = make_sweep(api.sessions, api.data)
    r = api.post(f"{API}/sweeps/{sid}/cancel")
    assert r.status_code == 202, r.text
    assert r.json()["state"] == "cancelled" and r.json()["finished_at"] is not None
    again = api.post(f"{API}/sweeps/{sid}/cancel")
    assert again.status_code == 409
    assert "already cancelled" in again.json()["detail"]
    with api.sessions() as s:
        kinds = [e.message for e in repo.list_events(s, sid, kind="state")]
    assert any("cancelled with token 'tests'" in m for m in kinds)


def test_cancel_a_running_sweep_and_not_a_finished_one(api: Api):
    running = make_sweep(api.sessions, api.data, state="running")
    assert api.post(f"{API}/sweeps/{running}/cancel").json()["state"] == "cancelled"
    for state in ("succeeded", "failed"):
        sid = make_sweep(api.sessions, api.data, state=state)
        r = api.post(f"{API}/sweeps/{sid}/cancel")
        assert r.status_code == 409 and f"already {state}" in r.json()["detail"]
        assert api.get(f"{API}/sweeps/{sid}").json()["state"] == state
