"""Extending a finished sweep (POST /api/v1/sweeps/{id}/extend, `SweepdClient.extend`,
`sweepd extend`), and what sweep creation adds for warm starts: the fingerprint and the
`search.warm_start` reference check. Nothing is driven here (the e2e test does that)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sweepd.cli import app as cli_app
from sweepd.client import ConflictError, NotFoundError, SpecRejected, SweepdClient
from sweepd.store import repo, session_scope
from tests.api.factories import API, Api, add_trial, make_sweep, spec_dict


def extend(api: Api, sweep_id: str, **body):
    return api.post(f"{API}/sweeps/{sweep_id}/extend", json=body)


def finished(api: Api, trials: int = 4, state: str = "succeeded", **spec_changes) -> str:
    sid = make_sweep(api.sessions, api.data, state=state, **spec_changes)
    for n in range(1, trials + 1):
        add_trial(api.sessions, sid, n, state="completed", objective=1.0 + n, samples=1024)
    return sid


def test_extending_requeues_the_same_sweep_with_more_trials(api: Api):
    sid = finished(api)
    with session_scope(api.sessions) as s:
        repo.set_best_trial(s, sid, repo.trial_id_for(sid, 1))
    r = extend(api, sid, trials=2)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["id"] == sid and body["state"] == "queued" and body["extensions"] == 1
    assert body["progress"]["planned"] == 6 and body["progress"]["completed"] == 4
    assert body["spec"]["search"]["num_trials"] == 6 and body["finished_at"] is None
    assert body["optuna_study_name"] == f"sweepd-{sid}"
    events = api.get(f"{API}/sweeps/{sid}/events", params={"kind": "state"}).json()["items"]
    assert events[-1]["message"] == ("sweep extended by token 'tests': +2 trials (num_trials 4 -> 6); queued again")
    assert events[-1]["payload"]["extension"] == 1 and events[-1]["payload"]["was"] == "succeeded"
    # queued again: the supervisor picks it up; a second extension waits until it has finished
    assert extend(api, sid, trials=1).status_code == 409
    with session_scope(api.sessions) as s:
        repo.set_sweep_state(s, sid, "running")
        repo.set_sweep_state(s, sid, "cancelled")
    again = extend(api, sid, trials=1).json()
    assert again["extensions"] == 2 and again["spec"]["search"]["num_trials"] == 5  # 4 trials so far + 1


@pytest.mark.parametrize("state", ["queued", "running"])
def test_a_sweep_that_has_not_finished_is_a_409(api: Api, state: str):
    sid = make_sweep(api.sessions, api.data, state=state)
    r = extend(api, sid, trials=2)
    assert r.status_code == 409
    assert r.json()["detail"] == (f"sweep {sid!r} is {state}: only a finished sweep (succeeded, failed or cancelled) "
                                  "can be extended")


def test_unknown_sweep_is_a_404(api: Api):
    r = extend(api, "nope123", trials=2)
    assert r.status_code == 404 and "nope123" in r.json()["detail"]


def _locs(r) -> dict[str, str]:
    assert r.status_code == 422, r.text
    return {".".join(str(p) for p in item["loc"][1:]): item["msg"] for item in r.json()["detail"]}


@pytest.mark.parametrize("body, field", [
    ({}, ""), ({"trials": 0}, "trials"), ({"trials": 2.5}, "trials"), ({"budget": -1}, "budget"),
    ({"trials": 1, "colour": "red"}, "colour"),
])  # fmt: skip
def test_a_bad_body_is_a_422_naming_the_field(api: Api, body: dict, field: str):
    sid = finished(api)
    assert field in _locs(extend(api, sid, **body))


def test_a_narrowed_space_must_lie_inside_the_old_one(api: Api):
    sid = finished(api)  # learning_rate loguniform [1e-5, 1e-3], effective_batch_size choice [8, 16]
    locs = _locs(extend(api, sid, trials=1, space={
        "learning_rate": {"loguniform": [1e-6, 1e-4]}, "warmup_steps": {"choice": [0, 10]},
        "hparams.effective_batch_size": {"choice": [8]}}))
    assert locs["search.space.learning_rate"].startswith("log-uniform in [1e-06, 0.0001] is not inside the sweep's "
                                                         "log-uniform in [1e-05, 0.001]")
    assert "not in the sweep's space (learning_rate, effective_batch_size)" in locs["search.space.warmup_steps"]
    assert "the sweep names this field 'effective_batch_size'" in locs["search.space.hparams.effective_batch_size"]
    assert "search.space.effective_batch_size" in _locs(extend(api, sid, trials=1, space={"effective_batch_size": {"choice": [8, 32]}}))
    assert "search.space.learning_rate" in _locs(extend(api, sid, trials=1, space={"learning_rate": {"choice": [1e-2]}}))
    assert "search.space.learning_rate.loguniform" in _locs(extend(api, sid, trials=1, space={"learning_rate": {"loguniform": [1]}}))
    with session_scope(api.sessions) as s:  # nothing changed
        sweep = repo.get_sweep(s, sid)
        assert sweep.state == "succeeded" and sweep.extensions == 0 and sweep.spec["search"]["num_trials"] == 4


def test_a_narrowed_space_replaces_the_keys_it_names(api: Api):
    sid = finished(api)
    r = extend(api, sid, trials=2, space={"learning_rate": {"loguniform": [1e-4, 1e-3]}, "effective_batch_size": 16})
    assert r.status_code == 202, r.text
    space = r.json()["spec"]["search"]["space"]
    assert space == {"learning_rate": {"loguniform": [1e-4, 1e-3]}, "effective_batch_size": 16}
    [event] = [e for e in api.get(f"{API}/sweeps/{sid}/events").json()["items"] if "extended" in e["message"]]
    assert "learning_rate: log-uniform in [1e-05, 0.001] -> log-uniform in [0.0001, 0.001]" in event["message"]
    assert "effective_batch_size: choice of 8, 16 -> fixed at 16" in event["message"]


def test_more_budget_adds_to_the_compute_budget_or_starts_one(api: Api):
    plain = finished(api)  # 4 trials x 1024 samples spent, no compute budget
    body = extend(api, plain, budget=2048).json()
    assert body["spec"]["search"]["compute_budget"]["samples"] == 4 * 1024 + 2048
    assert body["spec"]["search"]["num_trials"] == 4 + 1000  # the cap is lifted: the budget decides

    search = {**spec_dict(api.data)["search"], "compute_budget": 8192, "num_trials": 6}
    budgeted = finished(api, search=search)
    body = extend(api, budgeted, budget=4096, trials=3).json()
    assert body["spec"]["search"]["compute_budget"]["samples"] == 8192 + 4096
    assert body["spec"]["search"]["num_trials"] == 7
    assert "budget" in _locs(extend(api, finished(api), budget=10.5))


def test_the_client_and_the_cli_extend_through_the_server(api: Api, tmp_path: Path):
    from tests.client.conftest import ThreadedServer

    sid, running = finished(api), make_sweep(api.sessions, api.data, state="running")
    space = tmp_path / "narrow.yaml"
    space.write_text("space:\n  learning_rate: {loguniform: [1.0e-4, 1.0e-3]}\n")
    server = ThreadedServer(api.app).start()
    try:
        with SweepdClient(server.url, api.token, retries=0) as client:
            body = client.extend(sid, trials=1, space=space)
            assert body["state"] == "queued"
            assert body["spec"]["search"]["space"]["learning_rate"] == {"loguniform": [1e-4, 1e-3]}
            with pytest.raises(ConflictError):
                client.extend(running, trials=1)
            with pytest.raises(NotFoundError):
                client.extend("nope123", trials=1)
            with pytest.raises(SpecRejected) as err:
                client.extend(finished(api), trials=1, space={"warmup_steps": 0})
            assert err.value.errors[0][0] == "search.space.warmup_steps"

        def cli(*args):
            return CliRunner().invoke(cli_app, ["extend", *args, "--server", server.url, "--token", api.token,
                                                "--retries", "0"])
        other = finished(api)
        ok = cli(other, "--trials", "2")
        assert ok.exit_code == 0, ok.output
        assert f"sweep {other} extended (6 trials planned): queued" in ok.output
        assert cli(other, "--trials", "2").exit_code == 1  # queued now: not finished
        assert cli("nope123", "--trials", "2").exit_code == 3
        assert cli(finished(api)).exit_code == 3  # how much more?
        bad = cli(finished(api), "--trials", "1", "--space", str(space.with_name("missing.yaml")))
        assert bad.exit_code == 3 and "cannot read space" in bad.output
    finally:
        server.stop()


def test_sweepd_extend_local_refuses_what_it_cannot_extend(api_env: Path, api: Api):
    def cli(*args):
        return CliRunner().invoke(cli_app, ["extend", *args, "--local"])

    assert cli("nope123", "--trials", "1").exit_code == 3
    running = make_sweep(api.sessions, api.data, state="running")
    assert cli(running, "--trials", "1").exit_code == 1
    bad = cli(finished(api), "--trials", "1", "--space", str(_space(api_env, {"warmup_steps": 0})))
    assert bad.exit_code == 2 and "search.space.warmup_steps" in bad.output


def _space(folder: Path, space: dict) -> Path:
    path = folder / "space.json"
    path.write_text(json.dumps(space))
    return path


# ---- creating a sweep: the fingerprint and search.warm_start -----------------------------------


def post_spec(api: Api, **changes):
    return api.post(f"{API}/sweeps", json=spec_dict(api.data, **changes))


def test_a_new_sweep_gets_its_fingerprint(api: Api):
    a, b = post_spec(api).json(), post_spec(api).json()
    assert a["fingerprint"] and a["fingerprint"] == b["fingerprint"]
    other = post_spec(api, objective={"metric": "train_loss", "mode": "min"}).json()
    assert other["fingerprint"] != a["fingerprint"]
    (api.data / "train.jsonl").write_text((api.data / "train.jsonl").read_text() + " ")
    assert post_spec(api).json()["fingerprint"] != a["fingerprint"]
    detail = api.get(f"{API}/sweeps/{a['id']}").json()
    assert detail["fingerprint"] == a["fingerprint"] and detail["warm_start"] is None and detail["extensions"] == 0


def test_warm_start_from_a_sweep_that_does_not_exist_or_has_another_objective_is_a_422(api: Api):
    search = spec_dict(api.data)["search"]
    locs = _locs(post_spec(api, search={**search, "warm_start": "nope123"}))
    assert "no sweep 'nope123' to warm-start from" in locs["search.warm_start"]
    other = post_spec(api, objective={"metric": "train_loss", "mode": "min"}).json()["id"]
    locs = _locs(post_spec(api, search={**search, "warm_start": other}))
    assert "optimises train_loss (min), this sweep eval_loss (min)" in locs["search.warm_start"]
    same = post_spec(api).json()["id"]
    r = post_spec(api, search={**search, "warm_start": same})
    assert r.status_code == 201, r.text
    assert "search.warm_start" in _locs(post_spec(api, search={**search, "warm_start": "not an id"}))


def test_the_detail_shows_where_the_prior_came_from(api: Api):
    source, sid = finished(api), finished(api)
    with session_scope(api.sessions) as s:
        repo.record_warm_start(s, sid, source=source, details={
            "mode": "previous", "source": source, "trials_added": 4, "curves": 4,
            "message": f"warm start: 4 trials from sweep {source} added to the study; 4 curves to the pruner"})
    warm = api.get(f"{API}/sweeps/{sid}").json()["warm_start"]
    assert warm["source"] == source and warm["trials_added"] == 4 and warm["message"].startswith("warm start: 4 trials")
