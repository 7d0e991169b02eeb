"""/api/v1/tokens (admin only) and token scopes and expiry on the whole API, on SQLite and
PostgreSQL. The route table (tests/api/test_routes.py) checks 401/403/404/422 on every route."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from api.deps import SCOPE_HEADER
from sweepd.store import repo, session_scope
from sweepd.store.models import ApiToken, utcnow
from tests.api.factories import API, Api, spec_dict


def make(api: Api, name: str, scope: str, **kw) -> dict[str, str]:
    with session_scope(api.sessions) as s:
        _, secret = repo.create_token(s, name, scope=scope, **kw)
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def admin(api: Api) -> dict[str, str]:
    return make(api, "root", "admin")


def submit(api: Api, headers: dict[str, str]):
    return api.client.post(f"{API}/sweeps", headers={**headers, "Content-Type": "application/json"},
                           content=json.dumps(spec_dict(api.data)))


def test_admin_lists_creates_and_revokes_tokens(api: Api, admin):
    r = api.client.post(f"{API}/tokens", headers=admin, json={"name": "dash", "scope": "read", "expires_in": "30d"})
    assert r.status_code == 201, r.text
    made = r.json()
    secret = made.pop("token")
    assert secret.startswith("swd_")
    assert made["name"] == "dash" and made["scope"] == "read" and made["state"] == "active"
    assert made["revoked"] is False and made["last_used_at"] is None
    assert made["expires_at"] is not None
    # the new token works, for what its scope allows, and says its scope
    r = api.client.get(f"{API}/sweeps", headers={"Authorization": f"Bearer {secret}"})
    assert r.status_code == 200 and r.headers[SCOPE_HEADER] == "read"

    listed = api.client.get(f"{API}/tokens", headers=admin)
    assert listed.status_code == 200 and listed.headers[SCOPE_HEADER] == "admin"
    items = {t["name"]: t for t in listed.json()["items"]}
    assert set(items) == {"tests", "root", "dash"}
    assert (items["tests"]["scope"], items["tests"]["expires_at"]) == ("write", None)
    assert "last_used_at" in items["root"]  # recorded at most once a minute per token and process
    assert secret not in listed.text and "token_hash" not in listed.text and "swd_" not in listed.text

    r = api.client.post(f"{API}/tokens", headers=admin, json={"name": "dash"})
    assert r.status_code == 409 and "already exists" in r.json()["detail"]
    r = api.client.post(f"{API}/tokens", headers=admin, json={"name": "ci"})  # defaults: write, no expiry
    assert r.status_code == 201 and (r.json()["scope"], r.json()["expires_at"]) == ("write", None)

    r = api.client.delete(f"{API}/tokens/dash", headers=admin)
    assert r.status_code == 200 and r.json()["state"] == "revoked" and r.json()["revoked"] is True
    assert api.client.delete(f"{API}/tokens/dash", headers=admin).status_code == 200  # again: no-op
    r = api.client.get(f"{API}/sweeps", headers={"Authorization": f"Bearer {secret}"})
    assert r.status_code == 401 and r.json()["detail"].startswith("API token 'dash' has been revoked")
    r = api.client.delete(f"{API}/tokens/nope", headers=admin)
    assert r.status_code == 404 and r.json()["detail"] == "no token 'nope'"

    active = api.client.get(f"{API}/tokens", headers=admin, params={"state": "active"}).json()["items"]
    revoked = api.client.get(f"{API}/tokens", headers=admin, params={"state": "revoked"}).json()["items"]
    assert {t["name"] for t in active} == {"tests", "root", "ci"} and [t["name"] for t in revoked] == ["dash"]


@pytest.mark.parametrize("scope", ["read", "write"])
def test_only_admins_manage_tokens(api: Api, scope: str):
    headers = make(api, "someone", scope)
    calls = [("GET", f"{API}/tokens", {}), ("POST", f"{API}/tokens", {"json": {"name": "mine", "scope": "admin"}}),
             ("DELETE", f"{API}/tokens/tests", {})]
    for method, path, kw in calls:
        r = api.client.request(method, path, headers=headers, **kw)
        assert r.status_code == 403, (method, r.text)
        assert r.json()["detail"] == (f"this route needs a token with scope 'admin'; token 'someone' has scope {scope!r}")
    with session_scope(api.sessions) as s:  # nothing happened
        assert repo.get_token(s, "mine") is None and not repo.get_token(s, "tests").revoked


def test_a_read_token_cannot_submit_a_write_token_can(api: Api):
    read = make(api, "dash", "read")
    r = submit(api, read)
    assert r.status_code == 403
    assert r.json()["detail"] == ("this route needs a token with scope 'write' (or admin); "
                                  "token 'dash' has scope 'read'")
    assert api.client.get(f"{API}/sweeps", headers=read).json()["items"] == []  # and nothing was made
    r = submit(api, make(api, "ci", "write"))
    assert r.status_code == 201, r.text
    assert r.headers[SCOPE_HEADER] == "write"
    assert submit(api, make(api, "boss", "admin")).status_code == 201  # admin implies write


def test_an_expired_token_is_401_saying_so(api: Api, admin):
    headers = make(api, "short", "write", expires_in=timedelta(hours=1))
    assert api.client.get(f"{API}/sweeps", headers=headers).status_code == 200
    with session_scope(api.sessions) as s:
        token = repo.get_token(s, "short")
        token.expires_at = utcnow() - timedelta(minutes=5)
    for r in (api.client.get(f"{API}/sweeps", headers=headers), submit(api, headers)):
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert r.json()["detail"].startswith("API token 'short' expired at ")
    listed = api.client.get(f"{API}/tokens", headers=admin, params={"state": "expired"}).json()["items"]
    assert [t["name"] for t in listed] == ["short"]


def test_expires_in_sets_the_expiry(api: Api, admin):
    r = api.client.post(f"{API}/tokens", headers=admin, json={"name": "ci", "expires_in": "12h"})
    assert r.status_code == 201
    with session_scope(api.sessions) as s:
        token = s.query(ApiToken).filter_by(name="ci").one()
        assert timedelta(hours=11, minutes=59) < token.expires_at - utcnow() <= timedelta(hours=12)
    r = api.client.post(f"{API}/tokens", headers=admin, json={"name": "x", "expires_in": "12 hours"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "expires_in"]


def test_an_unknown_token_is_401_naming_no_token(api: Api):
    r = api.client.get(f"{API}/sweeps", headers={"Authorization": "Bearer swd_nope"})
    assert r.status_code == 401 and r.json()["detail"].startswith("invalid API token")
    assert SCOPE_HEADER not in r.headers
