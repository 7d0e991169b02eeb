"""Error answers always render (found by tests/api/test_fuzz_specs.py): a body with NaN, an
infinity or a lone surrogate where a field is validated was a 500, because FastAPI's 422 echoed
the input and JSON cannot hold it. Now it is a 422 naming the field, without the input."""

from __future__ import annotations

import json

import pytest

from tests.api.factories import API, Api, make_sweep, spec_dict
from tests.api.test_routes import admin_auth

NAN_BODY = b'{"trials": NaN}'
SURROGATE_BODY = b'{"name": "a\\ud800", "scope": "read"}'


@pytest.mark.parametrize("path,content,field", [
    ("/sweeps/{sid}/extend", NAN_BODY, "trials"),
    ("/sweeps/{sid}/extend", b'{"budget": Infinity}', "budget"),
    ("/sweeps/{sid}/extend", b'{"trials": 2, "space": {"learning_rate": "\\udc00"}}', "body"),  # pydantic: not text
    ("/tokens", SURROGATE_BODY, "name"),
    ("/tokens", b'{"name": "ok", "expires_in": -Infinity}', "expires_in"),
])
def test_a_body_json_cannot_echo_is_a_422_naming_the_field(api: Api, path: str, content: bytes, field: str):
    sid = make_sweep(api.sessions, api.data, state="succeeded")
    auth = admin_auth(api) if path == "/tokens" else api.auth
    r = api.client.post(API + path.format(sid=sid), content=content, headers={**auth, "Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert any(field in item["loc"] for item in detail), detail
    assert all(set(item) == {"loc", "msg", "type"} for item in detail)  # ErrorItem: no echoed input


def test_a_spec_with_a_lone_surrogate_is_a_422_naming_the_field(api: Api):
    spec = spec_dict(api.data)
    spec["fixed"] = {"eval": {"max_items": 4}, "note\ud800": 1}
    spec["objective"] = {"metric": "eval_loss\udc00"}
    r = api.post(f"{API}/sweeps", content=json.dumps(spec), headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    [item] = r.json()["detail"]  # the first one found
    assert item["loc"][:2] in (["body", "fixed"], ["body", "objective"]) and "lone surrogate" in item["msg"]
