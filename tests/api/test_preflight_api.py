"""POST /sweeps and the data preflight: what is cheap and certain (a file that does not open, an
empty train file, a tokenizer that does not load) is a 422 before the sweep exists; the tokenising
pass runs off the request while the sweep is `validating`, then queues it (its summary is the
"data" event) or fails it with the preflight's file:line message and no trial."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.preflight import PreflightStopped
from sweepd.spec import Capacity, parse_spec
from sweepd.store import repo, session_scope
from tests.api.factories import API, LINE, Api, make_sweep, preflighted, spec_dict, start

JSON = {"Content-Type": "application/json"}
LONG = json.dumps({"messages": [{"role": "user", "content": "x" * 100}, {"role": "assistant", "content": "y"}]}) + "\n"


def post(api: Api, spec: dict):
    return api.post(f"{API}/sweeps", content=json.dumps(spec), headers=JSON)


@contextmanager
def held(api: Api) -> Iterator[tuple[threading.Event, threading.Event]]:
    """Every preflight waits for ``release`` before it reads a line (``started`` is set once one
    waits); it gives up like the real one when its sweep is cancelled or the app stops."""
    worker = api.app.state.preflight
    real, release, started = worker.run, threading.Event(), threading.Event()

    def slow(spec, cache_dir, chat):
        started.set()
        while not release.wait(0.02):
            if chat.stopped():
                raise PreflightStopped
        return real(spec, cache_dir, chat)

    worker.run = slow
    try:
        yield release, started
    finally:
        release.set()
        worker.run = real


def events(api: Api, sweep_id: str, kind: str) -> list[dict]:
    return api.get(f"{API}/sweeps/{sweep_id}/events", params={"kind": kind}).json()["items"]


def test_post_answers_at_once_while_a_slow_preflight_runs_then_the_sweep_is_queued(api: Api):
    with held(api) as (release, started):
        r = post(api, spec_dict(api.data))  # answered although the preflight cannot end before `release`
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        assert r.json()["state"] == "validating" and r.headers["location"] == f"{API}/sweeps/{sid}"
        assert started.wait(60)
        assert api.get(f"{API}/sweeps/{sid}").json()["state"] == "validating"
        listed = api.get(f"{API}/sweeps", params={"state": "validating"}).json()["items"]
        assert [s["id"] for s in listed] == [sid]
        assert events(api, sid, "data") == []
        assert events(api, sid, "state")[0]["message"].startswith("validating data: reading 2 files")
        release.set()
        done = preflighted(api, sid)
    assert done["state"] == "queued" and done["error"] is None
    [data] = events(api, sid, "data")
    assert data["payload"]["totals"]["train_samples"] == 4
    assert events(api, sid, "state")[-1]["message"].startswith("data preflight passed (")


def test_a_bad_data_line_fails_the_sweep_with_file_and_line_and_no_trial(api: Api):
    (api.data / "train.jsonl").write_text(LINE + "{oops\n" + LINE + "[1]\n")
    r = post(api, spec_dict(api.data))
    assert r.status_code == 201 and r.json()["state"] == "validating", r.text
    sid = r.json()["id"]
    done = preflighted(api, sid)
    train = (api.data / "train.jsonl").resolve()
    assert done["state"] == "failed" and done["finished_at"] is not None
    assert done["error"].startswith(f"{train}:2: not valid JSON")
    assert done["error"].endswith("(and 1 more data error)")
    [err] = events(api, sid, "error")
    assert err["payload"]["count"] == 2 and err["payload"]["errors"][1].startswith(f"{train}:4: ")
    assert events(api, sid, "data") == []
    with api.sessions() as s:
        assert repo.count_trials(s, sid) == 0


def test_overlong_error_fails_the_sweep_and_drop_is_counted(api: Api):
    (api.data / "train.jsonl").write_text(LINE * 3 + LONG)
    spec = spec_dict(api.data)
    spec["data"] = {**spec["data"], "max_seq_len": 64, "overlong": "error"}
    failed = preflighted(api, post(api, spec).json()["id"])
    assert failed["state"] == "failed" and ":4: over-long sample" in failed["error"], failed

    spec["data"]["overlong"] = "drop"
    r = post(api, spec)
    assert r.status_code == 201, r.text
    assert preflighted(api, r.json()["id"])["state"] == "queued"
    [event] = events(api, r.json()["id"], "data")
    assert "1 over-long dropped" in event["message"] and event["payload"]["totals"]["train_samples"] == 3


def test_a_cached_preflight_queues_the_sweep_at_once(api: Api):
    first = post(api, spec_dict(api.data)).json()
    assert first["state"] == "validating" and preflighted(api, first["id"])["state"] == "queued"
    r = post(api, spec_dict(api.data, name="again"))
    assert r.status_code == 201 and r.json()["state"] == "queued", r.text
    assert r.json()["id"] not in api.app.state.preflight.futures  # no worker needed
    [event] = events(api, r.json()["id"], "data")
    assert event["payload"]["totals"]["train_samples"] == 4


def test_cheap_and_certain_data_errors_stay_a_422(api: Api):
    train = api.data / "train.jsonl"
    train.write_text("")
    r = post(api, spec_dict(api.data))
    assert r.status_code == 422, r.text
    [item] = r.json()["detail"]
    assert item["loc"] == ["body", "data", "train", 0, "path"] and item["msg"] == f"{train.resolve()}: no lines"

    (api.data / "broken.parquet").write_bytes(b"not parquet at all")
    spec = spec_dict(api.data)
    spec["data"] = {**spec["data"], "eval": [{"path": str(api.data / "broken.parquet")}]}
    train.write_text(LINE)
    r = post(api, spec)
    assert r.status_code == 422, r.text
    [item] = r.json()["detail"]
    assert item["loc"] == ["body", "data", "eval", 0, "path"] and "not a readable Parquet file" in item["msg"]
    with api.sessions() as s:
        assert repo.list_sweeps(s).total == 0  # nothing stored, nothing validating


def test_a_model_folder_whose_tokenizer_does_not_load_is_a_422(api: Api):
    model = api.data / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
                                                   "num_attention_heads": 2, "intermediate_size": 128,
                                                   "vocab_size": 300}))
    r = post(api, spec_dict(api.data, model={"path": str(model)}))
    assert r.status_code == 422, r.text
    [item] = r.json()["detail"]
    assert item["loc"] == ["body", "model", "path"]
    assert item["msg"].startswith(f"model.path: cannot load the tokenizer of {str(model.resolve())!r}")


def test_cancel_a_validating_sweep_stops_its_preflight(api: Api):
    with held(api) as (release, started):
        sid = post(api, spec_dict(api.data)).json()["id"]
        assert started.wait(60)
        r = api.post(f"{API}/sweeps/{sid}/cancel")
        assert r.status_code == 202 and r.json()["state"] == "cancelled", r.text
        assert api.app.state.preflight.futures[sid].result(timeout=10) is None  # stopped, moved nothing
    done = api.get(f"{API}/sweeps/{sid}").json()
    assert done["state"] == "cancelled" and events(api, sid, "data") == []
    assert api.post(f"{API}/sweeps/{sid}/cancel").status_code == 409


def test_healthz_answers_promptly_while_a_real_preflight_runs(api: Api):
    big = api.data / "big.jsonl"
    with big.open("w") as fh:
        for i in range(3000):
            fh.write(json.dumps({"messages": [{"role": "user", "content": f"question {i}: " + "lorem ipsum " * 8},
                                              {"role": "assistant", "content": f"answer {i} " * 6}]}) + "\n")
    spec = spec_dict(api.data)
    spec["data"] = {**spec["data"], "train": [{"path": str(big)}]}
    t0 = time.monotonic()
    r = post(api, spec)
    posted = time.monotonic() - t0
    assert r.status_code == 201 and r.json()["state"] == "validating", r.text
    future = api.app.state.preflight.futures[r.json()["id"]]
    latencies = []
    while not future.done():
        t = time.monotonic()
        assert api.client.get("/healthz").status_code == 200
        latencies.append(time.monotonic() - t)
        time.sleep(0.02)
    took = time.monotonic() - t0
    assert future.result() == "queued"
    assert len(latencies) >= 3, (posted, took)  # the preflight outlived several health checks
    assert max(latencies) < 2.0, latencies
    assert posted < took  # the answer came before the preflight ended


def test_a_restarted_server_validates_the_sweeps_left_validating(api_env: Path):
    session = start(api_env)
    api = next(session)
    with held(api) as (_, started):
        sid = post(api, spec_dict(api.data)).json()["id"]
        assert started.wait(60)
        session.close()  # the server stops mid-preflight: the sweep stays validating
    (api_env / "bad.jsonl").write_text(LINE + "{oops\n")
    spec = spec_dict(api_env)
    spec["data"]["train"] = [{"path": str(api_env / "bad.jsonl")}]
    with session_scope(api.sessions) as s:  # as a crashed server left it
        bad = repo.create_sweep(s, name="bad", state="validating",
                                spec=parse_spec(spec, data_roots=[api_env], capacity=Capacity.unlimited()).to_stored()).id
    with api.sessions() as s:
        assert repo.get_sweep(s, sid).state == "validating"

    app = create_app()  # a new server on the same database: its startup validates both again
    with TestClient(app) as client:
        api = Api(client=client, app=app, sessions=app.state.sessionmaker, token=api.token, data=api_env)
        assert set(api.app.state.preflight.futures) == {sid, bad}
        assert preflighted(api, sid)["state"] == "queued"
        assert events(api, sid, "info")[-1]["message"] == "server restarted during the data preflight; validating again"
        failed = preflighted(api, bad)
        assert failed["state"] == "failed" and failed["error"].startswith(f"{(api_env / 'bad.jsonl').resolve()}:2: ")


@pytest.mark.parametrize("state", ["validating"])
def test_the_state_filter_and_metrics_know_validating(api: Api, state: str):
    sid = make_sweep(api.sessions, api.data, state=state)
    assert api.app.state.preflight.futures == {}  # made behind the app's back: nothing runs it
    assert [s["id"] for s in api.get(f"{API}/sweeps", params={"state": state}).json()["items"]] == [sid]
    assert 'sweepd_sweeps{state="validating"} 1' in api.get("/metrics").text
