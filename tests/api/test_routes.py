"""Every route, table-driven: success, 401 (no token, bad token, revoked, malformed header),
404 for unknown ids, 422 for a bad parameter or body; public-read mode; the public routes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sweepd.settings import get_settings
from sweepd.store import repo, session_scope
from tests.api.factories import API, Api, Seeded, seed, spec_dict, start

# (method, path with {sweep}/{trial} placeholders, writes?)
ROUTES = [
    ("POST", "/sweeps", True),
    ("GET", "/sweeps", False),
    ("GET", "/sweeps/{sweep}", False),
    ("POST", "/sweeps/{sweep}/cancel", True),
    ("GET", "/sweeps/{sweep}/trials", False),
    ("GET", "/sweeps/{sweep}/curves", False),
    ("GET", "/sweeps/{sweep}/events", False),
    ("GET", "/sweeps/{sweep}/calibration", False),
    ("GET", "/sweeps/{sweep}/report", False),
    ("GET", "/trials/{trial}", False),
    ("GET", "/trials/{trial}/metrics", False),
]
READS = [(m, p) for m, p, w in ROUTES if not w]
WRITES = [(m, p) for m, p, w in ROUTES if w]


def url(path: str, seeded: Seeded, *, sweep: str | None = None, trial: str | None = None) -> str:
    return API + path.format(sweep=sweep or seeded.sweep_id, trial=trial or seeded.trial_ids[0])


def call(api: Api, method: str, path: str, headers: dict[str, str] | None = None, **kw):
    if method == "POST" and path.endswith("/sweeps") and "content" not in kw:
        kw = {"content": json.dumps(spec_dict(api.data)), **kw}
        headers = {"Content-Type": "application/json", **(headers or {})}
    return api.client.request(method, path, headers=headers or {}, **kw)


def test_every_route_succeeds(api: Api, seeded: Seeded):
    expected = {"/sweeps": 201, "/sweeps/{sweep}/cancel": 202}
    for method, path, _ in ROUTES:
        r = call(api, method, url(path, seeded), headers=api.auth)
        want = expected.get(path, 200) if method == "POST" else 200
        assert r.status_code == want, (method, path, r.text)
        assert r.headers["content-type"].startswith("application/json"), (method, path)


@pytest.mark.parametrize("header", [None, "Bearer swd_not-a-real-token", "Basic dXNlcjpwYXNz", "Bearer", "swd_x"])
def test_every_route_needs_a_valid_token(api: Api, seeded: Seeded, header: str | None):
    headers = {"Authorization": header} if header is not None else {}
    for method, path, _ in ROUTES:
        r = call(api, method, url(path, seeded), headers=headers)
        assert r.status_code == 401, (method, path, header, r.text)
        assert r.headers.get("www-authenticate") == "Bearer", (method, path)
        assert isinstance(r.json()["detail"], str) and r.json()["detail"]


def test_a_revoked_token_is_refused(api: Api, seeded: Seeded):
    with session_scope(api.sessions) as s:
        repo.revoke_token(s, "tests")
    for method, path, _ in ROUTES:
        r = call(api, method, url(path, seeded), headers=api.auth)
        assert r.status_code == 401, (method, path)
        assert "revoked" in r.json()["detail"]


def test_unknown_ids_are_404_naming_the_id(api: Api, seeded: Seeded):
    with_ids = [(m, p) for m, p, _ in ROUTES if "{" in p]
    assert len(with_ids) == 9
    for method, path in with_ids:
        r = call(api, method, url(path, seeded, sweep="nope123", trial="nope123-0001"), headers=api.auth)
        assert r.status_code == 404, (method, path, r.text)
        assert "nope123" in r.json()["detail"], (method, path)
    # ids that cannot exist (too long for the store, NUL, non-printable) are 404 or 422, never 5xx
    for odd in ["x" * 150, "a%00b", "%E2%80%8B", "..", "%20"]:
        for method, path in with_ids:
            r = call(api, method, url(path, seeded, sweep=odd, trial=odd), headers=api.auth)
            assert r.status_code in (404, 422), (method, path, odd, r.status_code)


# (method, path, request kwargs, the field the 422 must name)
BAD = [
    ("POST", "/sweeps", {"content": b'{"name": 1}'}, "name"),
    ("GET", "/sweeps?limit=0", {}, "limit"),
    ("GET", "/sweeps?limit=201", {}, "limit"),
    ("GET", "/sweeps?offset=-1", {}, "offset"),
    ("GET", "/sweeps?state=bogus", {}, "state"),
    ("GET", "/sweeps/" + "x" * 201, {}, "sweep_id"),
    ("POST", "/sweeps/" + "x" * 201 + "/cancel", {}, "sweep_id"),
    ("GET", "/sweeps/{sweep}/trials?state=finished", {}, "state"),
    ("GET", "/sweeps/{sweep}/curves?max_points=1", {}, "max_points"),
    ("GET", "/sweeps/{sweep}/curves?max_points=2001", {}, "max_points"),
    ("GET", "/sweeps/{sweep}/curves?fields=loss,bogus", {}, "fields"),
    ("GET", "/sweeps/{sweep}/events?after_id=-1", {}, "after_id"),
    ("GET", "/sweeps/{sweep}/events?after_id=abc", {}, "after_id"),
    ("GET", "/sweeps/{sweep}/events?kind=no%20spaces", {}, "kind"),
    ("GET", "/sweeps/{sweep}/events?limit=0", {}, "limit"),
    ("GET", "/sweeps/" + "x" * 201 + "/calibration", {}, "sweep_id"),
    ("GET", "/sweeps/{sweep}/report?format=pdf", {}, "format"),
    ("GET", "/trials/" + "x" * 201, {}, "trial_id"),
    ("GET", "/trials/{trial}/metrics?max_points=1", {}, "max_points"),
    ("GET", "/trials/{trial}/metrics?max_points=10001", {}, "max_points"),
    ("GET", "/trials/{trial}/metrics?max_points=many", {}, "max_points"),
]


def test_bad_parameters_are_422_naming_the_field(api: Api, seeded: Seeded):
    covered = {(m, p.split("?")[0].replace("x" * 201, "{id}")) for m, p, _, _ in BAD}
    assert len(covered) >= len(ROUTES)  # every route has at least one case
    for method, path, kw, field in BAD:
        headers = {**api.auth, "Content-Type": "application/json"} if method == "POST" else api.auth
        r = api.client.request(method, url(path, seeded), headers=headers, **kw)
        assert r.status_code == 422, (method, path, r.text)
        detail = r.json()["detail"]
        assert isinstance(detail, list) and detail, (method, path)
        assert any(field in item["loc"] for item in detail), (method, path, detail)
        assert all({"loc", "msg", "type"} <= set(item) for item in detail)


def test_public_routes_need_no_token(api: Api):
    for path in ["/healthz", "/metrics", "/openapi.json", "/docs"]:
        assert api.client.get(path).status_code == 200, path


def test_public_read_mode(api_env: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SWEEPD_PUBLIC_READ", "1")
    get_settings.cache_clear()
    for api in start(api_env):
        seeded = seed(api)
        for method, path in READS:
            r = api.client.get(url(path, seeded))
            assert r.status_code == 200, (path, r.text)
            bad = api.client.get(url(path, seeded), headers={"Authorization": "Bearer swd_wrong"})
            assert bad.status_code == 401, path  # a token that is sent must be valid
        for method, path in WRITES:
            r = call(api, method, url(path, seeded))
            assert r.status_code == 401, (path, r.text)
        assert call(api, "POST", url("/sweeps/{sweep}/cancel", seeded), headers=api.auth).status_code == 202
        # the schema says so: reads may be anonymous, writes may not
        schema = api.client.get("/openapi.json").json()
        assert {} in schema["paths"][f"{API}/sweeps"]["get"]["security"]
        assert {} not in schema["paths"][f"{API}/sweeps"]["post"]["security"]


def test_openapi_documents_every_route_and_its_errors(api: Api):
    schema = api.client.get("/openapi.json").json()
    for method, path, writes in ROUTES:
        op = schema["paths"][API + path.replace("{sweep}", "{sweep_id}").replace("{trial}", "{trial_id}")][method.lower()]
        codes = set(op["responses"])
        assert {"401", "422"} <= codes, (method, path, codes)
        if "{" in path:
            assert "404" in codes, (method, path)
        assert op["security"] == [{"HTTPBearer": []}]
    post = schema["paths"][f"{API}/sweeps"]["post"]
    assert {"413", "415"} <= set(post["responses"])
    assert set(post["requestBody"]["content"]) == {"application/json", "application/yaml", "application/x-yaml",
                                                   "text/yaml", "text/x-yaml"}
    assert "SweepSpec" in schema["components"]["schemas"]
    assert "409" in schema["paths"][f"{API}/sweeps/{{sweep_id}}/cancel"]["post"]["responses"]
