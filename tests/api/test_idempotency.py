"""POST /sweeps with an Idempotency-Key: a repeat makes no second sweep, the same key with another
body is refused naming the header, and concurrent repeats make one sweep (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from api import body as api_body
from sweepd.store import repo
from sweepd.store.models import Sweep
from tests.api.factories import API, Api, spec_dict

KEY = "Idempotency-Key"


def submit(api: Api, spec: dict, key: str | None = None, **headers: str):
    if key is not None:
        headers[KEY] = key
    return api.post(f"{API}/sweeps", content=json.dumps(spec), headers={"Content-Type": "application/json", **headers})


def sweeps_in_store(api: Api) -> int:
    with api.sessions() as s:
        return s.scalar(select(func.count()).select_from(Sweep))


def test_the_same_key_and_body_twice_make_one_sweep(api: Api):
    spec = spec_dict(api.data)
    first = submit(api, spec, key="9f1c2d4e-retry-me")
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    again = submit(api, spec, key="9f1c2d4e-retry-me")
    assert again.status_code == 201, again.text  # what the first answer was
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"] and again.headers["location"] == first.headers["location"]
    assert sweeps_in_store(api) == 1
    with api.sessions() as s:
        stored = repo.sweep_by_idempotency_key(s, "9f1c2d4e-retry-me")
        assert stored.id == first.json()["id"] and len(stored.idempotency_digest) == 64
    # the IETF draft's form, a quoted string, is the same key
    assert submit(api, spec, key='"9f1c2d4e-retry-me"').json()["id"] == first.json()["id"]
    assert sweeps_in_store(api) == 1


def test_the_same_key_with_another_body_is_422_naming_the_header(api: Api):
    first = submit(api, spec_dict(api.data, name="one"), key="k-1")
    assert first.status_code == 201
    other = submit(api, spec_dict(api.data, name="two"), key="k-1")
    assert other.status_code == 422, other.text
    [item] = other.json()["detail"]
    assert item["loc"] == ["header", KEY]
    assert first.json()["id"] in item["msg"] and "different request body" in item["msg"]
    assert sweeps_in_store(api) == 1
    # the same bytes as YAML instead of JSON are another request too
    yaml_again = api.post(f"{API}/sweeps", content=json.dumps(spec_dict(api.data, name="one")),
                          headers={"Content-Type": "application/yaml", KEY: "k-1"})
    assert yaml_again.status_code == 422 and sweeps_in_store(api) == 1


def test_without_a_key_every_post_makes_a_sweep(api: Api):
    spec = spec_dict(api.data)
    ids = {submit(api, spec).json()["id"] for _ in range(2)}
    assert len(ids) == 2 and sweeps_in_store(api) == 2
    assert len({submit(api, spec, key=k).json()["id"] for k in ("a", "b")}) == 2  # two keys: two sweeps
    assert sweeps_in_store(api) == 4


def test_a_refused_spec_does_not_use_up_its_key(api: Api):
    bad = submit(api, spec_dict(api.data, search={"num_trials": 0}), key="fix-and-retry")
    assert bad.status_code == 422 and sweeps_in_store(api) == 0
    good = submit(api, spec_dict(api.data), key="fix-and-retry")
    assert good.status_code == 201 and sweeps_in_store(api) == 1


@pytest.mark.parametrize("value,why", [
    ("", "empty"), ('""', "empty"), ("x" * 256, "at most 255"), ("two words", "visible ASCII"),
    ("caf\u00e9", "visible ASCII"),
])
def test_a_malformed_key_is_422_naming_the_header(api: Api, value: str, why: str):
    r = api.client.post(f"{API}/sweeps", content=json.dumps(spec_dict(api.data)),
                        headers={**api.auth, "Content-Type": "application/json", KEY: value.encode("latin-1")})
    assert r.status_code == 422, r.text
    [item] = r.json()["detail"]
    assert item["loc"] == ["header", KEY] and why in item["msg"]
    assert sweeps_in_store(api) == 0


def test_two_key_headers_are_422(api: Api):
    r = api.client.post(f"{API}/sweeps", content=json.dumps(spec_dict(api.data)),
                        headers=[("Authorization", f"Bearer {api.token}"), ("Content-Type", "application/json"),
                                 (KEY, "a"), (KEY, "b")])
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["header", KEY]


def test_concurrent_repeats_make_one_sweep(api: Api, monkeypatch: pytest.MonkeyPatch):
    """Four tries with one key at the same instant: each looks the key up before any has inserted
    (a barrier holds them after validation), so all four insert; the unique constraint lets one
    through and the other three answer its sweep, marked as replays."""
    n = 4
    barrier = threading.Barrier(n, timeout=30)
    precheck = api_body.precheck_data

    def held(*args, **kwargs):
        barrier.wait()  # every request has looked the key up and found nothing
        return precheck(*args, **kwargs)

    monkeypatch.setattr(api_body, "precheck_data", held)
    spec = spec_dict(api.data)
    with ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(lambda _: submit(api, spec, key="raced-key"), range(n)))
    assert [r.status_code for r in answers] == [201] * n, [r.text for r in answers]
    assert len({r.json()["id"] for r in answers}) == 1
    assert sorted(r.headers.get("idempotent-replayed", "no") for r in answers) == ["no"] + ["true"] * (n - 1)
    assert sweeps_in_store(api) == 1


def test_the_openapi_schema_documents_the_header(api: Api):
    op = api.client.get("/openapi.json").json()["paths"][f"{API}/sweeps"]["post"]
    [param] = [p for p in op["parameters"] if p["name"] == KEY]
    assert param["in"] == "header" and not param["required"] and param["schema"]["maxLength"] == 255
