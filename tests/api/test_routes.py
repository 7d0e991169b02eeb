"""Every route, table-driven: success, 401 (no token, bad token, revoked, malformed header),
404 for unknown ids, 422 for a bad parameter or body; public-read mode; the public routes.

The route table is generated from the served app's routes (the API plus the dashboard, as
`sweepd serve` builds it), so a new route cannot escape these checks: a route that depends on
``require_writer`` is a write, one that depends on ``require_reader`` is a read, one that depends
on ``require_admin`` is an admin route (the token routes), and every other route must be listed
in ``PUBLIC`` on purpose (with a URL that must answer 200 without a token). A route that fits
none of these, or several, fails ``test_the_route_table_classifies_every_route``. Scopes: a read
token is a 403 on every write and admin route, a write token on every admin route.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.app import create_app
from api.dashboard import router as dashboard_router
from api.deps import require_admin, require_reader, require_writer
from sweepd.settings import Settings, get_settings
from sweepd.store import repo, session_scope
from tests.api.factories import API, Api, Seeded, make_sweep, seed, spec_dict, start

try:  # FastAPI >= 0.165 keeps included routers as branches of app.routes; this flattens them
    from fastapi.routing import iter_route_contexts
except ImportError:  # older FastAPI: app.routes is already flat
    def iter_route_contexts(routes):  # type: ignore[no-redef]
        return iter(routes)

# The routes that need no token, each on purpose, with the URL to request (placeholders are
# filled with the seeded sweep's and trial's ids). Adding a public route means adding it here.
PUBLIC: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): "/healthz",
    ("GET", "/openapi.json"): "/openapi.json",  # the API's description: no data (as the source code)
    ("GET", "/docs"): "/docs",
    ("GET", "/docs/oauth2-redirect"): "/docs/oauth2-redirect",
    ("GET", "/redoc"): "/redoc",
    # the dashboard: HTML pages and static files; the pages fetch their data from the API
    ("GET", "/"): "/",
    ("GET", "/sweeps/{sweep_id}"): "/sweeps/{sweep_id}",
    ("GET", "/trials/{trial_id}"): "/trials/{trial_id}",
    ("GET", "/static/dashboard/{name}"): "/static/dashboard/api.js",
    ("GET", "/static/vendor/plotly.min.js"): "/static/vendor/plotly.min.js",
    ("GET", "/static/vendor/{name}"): "/static/vendor/uPlot.iife.min.js",
}

# The API routes this suite has always covered: the generated table must contain at least these
# (a floor against a generator that silently finds nothing).
KNOWN_TOKEN_ROUTES = {
    ("POST", f"{API}/sweeps"), ("GET", f"{API}/sweeps"), ("GET", f"{API}/sweeps/{{sweep_id}}"),
    ("POST", f"{API}/sweeps/{{sweep_id}}/cancel"), ("GET", f"{API}/sweeps/{{sweep_id}}/trials"),
    ("GET", f"{API}/sweeps/{{sweep_id}}/curves"), ("GET", f"{API}/sweeps/{{sweep_id}}/events"),
    ("GET", f"{API}/sweeps/{{sweep_id}}/calibration"), ("GET", f"{API}/sweeps/{{sweep_id}}/report"),
    ("GET", f"{API}/trials/{{trial_id}}"), ("GET", f"{API}/trials/{{trial_id}}/metrics"),
    ("GET", "/metrics"),  # sweep counts and traffic: a read (#15 finding 8)
}  # fmt: skip


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # as the app declares it, e.g. /api/v1/sweeps/{sweep_id}
    auth: str  # "write" (always a token), "read" (a token unless SWEEPD_PUBLIC_READ), "admin" or "public"
    status_code: int  # on success

    @property
    def writes(self) -> bool:
        return self.auth == "write"


def _dependency_calls(dependant: Any) -> Iterator[Any]:
    for dep in getattr(dependant, "dependencies", None) or ():
        yield dep.call
        yield from _dependency_calls(dep)


def served_app(settings: Settings | None = None) -> FastAPI:
    """The app as `sweepd serve` builds it: the API and the dashboard."""
    if settings is None:  # only for reading the routes: this database is never opened
        url = "sqlite:///" + os.path.join(tempfile.gettempdir(), "sweepd-route-table-never-opened.db")
        settings = Settings(database_url=url)
    return create_app(settings, extra_routers=[dashboard_router])


def classify(app: FastAPI) -> tuple[list[Route], list[str]]:
    """(the route table, a line for each route that cannot be classified)."""
    table: list[Route] = []
    problems: list[str] = []
    for route in iter_route_contexts(app.routes):
        path, methods = getattr(route, "path", None), getattr(route, "methods", None)
        if path is None or not methods:
            problems.append(f"{route!r}: not an HTTP route with a path and methods (a mount? a websocket?)")
            continue
        calls = set(_dependency_calls(getattr(route, "dependant", None)))
        needs = {"write"} if require_writer in calls else set()
        needs |= {"read"} if require_reader in calls else set()
        needs |= {"admin"} if require_admin in calls else set()
        for method in sorted(methods - {"HEAD"} if "GET" in methods else methods):
            public = (method, path) in PUBLIC
            if public and needs:
                problems.append(f"{method} {path}: listed in PUBLIC but depends on require_{needs.pop()}")
            elif len(needs) > 1:
                problems.append(f"{method} {path}: depends on several of require_reader, require_writer, "
                                f"require_admin ({sorted(needs)})")
            elif not public and not needs:
                problems.append(f"{method} {path}: needs no token (no require_reader/require_writer/"
                                "require_admin dependency) and is not listed in PUBLIC")
            else:
                auth = "public" if public else next(iter(needs))
                table.append(Route(method, path, auth, getattr(route, "status_code", None) or 200))
    return table, problems


def _route_table() -> tuple[list[Route], list[str]]:
    app = served_app()
    try:
        return classify(app)
    finally:
        app.state.engine.dispose()


TABLE, UNCLASSIFIED = _route_table()
ROUTES = [r for r in TABLE if r.auth != "public"]  # every route that needs a token
API_ROUTES = [r for r in ROUTES if r.path.startswith(API)]  # JSON, with parameters (not /metrics)
READS = [r for r in ROUTES if r.auth == "read"]
WRITES = [r for r in ROUTES if r.writes]
ADMIN = [r for r in ROUTES if r.auth == "admin"]
TOKEN_NAME = "to-revoke"  # the {name} of DELETE /tokens/{name}; admin_auth() creates it


def url(path: str, seeded: Seeded, *, sweep: str | None = None, trial: str | None = None,
        name: str | None = None) -> str:
    """``path`` with its ids filled in (a new placeholder is a KeyError here: teach it its id)."""
    return path.format(sweep_id=sweep or seeded.sweep_id, trial_id=trial or seeded.trial_ids[0],
                       name=name or TOKEN_NAME)


def admin_auth(api: Api) -> dict[str, str]:
    """Headers with an admin token (made once per app, with the token ``TOKEN_NAME`` to revoke)."""
    token = getattr(api, "admin_token", None)
    if token is None:
        with session_scope(api.sessions) as s:
            _, token = repo.create_token(s, "route-admin", scope="admin")
            repo.create_token(s, TOKEN_NAME, scope="read")
        api.admin_token = token  # type: ignore[attr-defined]
    return {"Authorization": f"Bearer {token}"}


def auth_for(api: Api, route: Route) -> dict[str, str]:
    """A token the route accepts: the admin token on admin routes, else the write token."""
    return admin_auth(api) if route.auth == "admin" else api.auth


def call(api: Api, method: str, path: str, headers: dict[str, str] | None = None, **kw):
    if method == "POST" and path.endswith("/sweeps") and "content" not in kw:
        kw = {"content": json.dumps(spec_dict(api.data)), **kw}
        headers = {"Content-Type": "application/json", **(headers or {})}
    if method == "POST" and path.endswith("/tokens") and "content" not in kw:
        kw = {"json": {"name": f"made-{uuid.uuid4().hex[:8]}", "scope": "read"}, **kw}
    if method == "POST" and path.endswith("/extend") and "content" not in kw:
        kw = {"json": {"trials": 2}, **kw}
    if method == "PATCH" and "content" not in kw:
        kw = {"json": {"priority": "high"}, **kw}
    return api.client.request(method, path, headers=headers or {}, **kw)


def shape(path: str) -> str:
    """A path with each id or placeholder as ``{}``: ``/api/v1/sweeps/{}/cancel``."""
    return re.sub(r"\{[^}]*\}", "{}", path.split("?")[0].replace("x" * 201, "{}"))


def test_the_route_table_classifies_every_route(api: Api):
    assert not UNCLASSIFIED, (
        "routes the table cannot classify: give each a require_reader/require_writer/require_admin dependency "
        "(api/deps.py ReaderDep/WriterDep/AdminDep), or add it to PUBLIC on purpose:\n  " + "\n  ".join(UNCLASSIFIED))
    assert KNOWN_TOKEN_ROUTES <= {(r.method, r.path) for r in ROUTES}
    assert {(r.method, r.path) for r in WRITES} == {("POST", f"{API}/sweeps"), ("POST", f"{API}/sweeps/{{sweep_id}}/cancel"),
                                                    ("POST", f"{API}/sweeps/{{sweep_id}}/extend"),
                                                    ("PATCH", f"{API}/sweeps/{{sweep_id}}")}
    assert {(r.method, r.path) for r in ADMIN} == {("GET", f"{API}/tokens"), ("POST", f"{API}/tokens"),
                                                   ("DELETE", f"{API}/tokens/{{name}}")}
    stale = set(PUBLIC) - {(r.method, r.path) for r in TABLE if r.auth == "public"}
    assert not stale, f"PUBLIC lists routes the app no longer has: {sorted(stale)}"
    # the app under test (the API without the dashboard) has exactly the table's token routes
    tested, problems = classify(api.app)
    assert not problems, problems
    assert sorted((r.method, r.path, r.auth) for r in tested if r.auth != "public") == sorted(
        (r.method, r.path, r.auth) for r in ROUTES)


def test_every_route_succeeds(api: Api, seeded: Seeded):
    finished = make_sweep(api.sessions, api.data, state="succeeded")  # what extend takes
    for route in ROUTES:
        sweep = finished if route.path.endswith("/extend") else None
        r = call(api, route.method, url(route.path, seeded, sweep=sweep), headers=auth_for(api, route))
        assert r.status_code == route.status_code, (route, r.text)
        expected = "text/plain" if route.path == "/metrics" else "application/json"
        assert r.headers["content-type"].startswith(expected), route
    # the status codes the table read from the routes are the API's documented ones
    assert {(r.method, r.path): r.status_code for r in WRITES} == {
        ("POST", f"{API}/sweeps"): 201, ("POST", f"{API}/sweeps/{{sweep_id}}/cancel"): 202,
        ("POST", f"{API}/sweeps/{{sweep_id}}/extend"): 202, ("PATCH", f"{API}/sweeps/{{sweep_id}}"): 200}
    assert {r.status_code for r in READS} == {200}
    assert {(r.method, r.path): r.status_code for r in ADMIN} == {
        ("GET", f"{API}/tokens"): 200, ("POST", f"{API}/tokens"): 201, ("DELETE", f"{API}/tokens/{{name}}"): 200}


def test_a_token_below_the_routes_scope_is_403_naming_the_scope(api: Api, seeded: Seeded):
    with session_scope(api.sessions) as s:
        _, read = repo.create_token(s, "route-reader", scope="read")
    for route in READS:  # a read token reads
        r = call(api, route.method, url(route.path, seeded), headers={"Authorization": f"Bearer {read}"})
        assert r.status_code == 200, (route, r.text)
    for scope, token, refused in (("read", read, WRITES + ADMIN), ("write", api.token, ADMIN)):
        for route in refused:
            r = call(api, route.method, url(route.path, seeded), headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 403, (scope, route, r.text)
            assert f"needs a token with scope {route.auth!r}" in r.json()["detail"], (route, r.text)
            assert f"has scope {scope!r}" in r.json()["detail"]


@pytest.mark.parametrize("header", [None, "Bearer swd_not-a-real-token", "Basic dXNlcjpwYXNz", "Bearer", "swd_x"])
def test_every_route_needs_a_valid_token(api: Api, seeded: Seeded, header: str | None):
    headers = {"Authorization": header} if header is not None else {}
    for route in ROUTES:
        r = call(api, route.method, url(route.path, seeded), headers=headers)
        assert r.status_code == 401, (route, header, r.text)
        assert r.headers.get("www-authenticate") == "Bearer", route
        assert isinstance(r.json()["detail"], str) and r.json()["detail"]


def test_a_revoked_token_is_refused(api: Api, seeded: Seeded):
    with session_scope(api.sessions) as s:
        repo.revoke_token(s, "tests")
    for route in ROUTES:
        r = call(api, route.method, url(route.path, seeded), headers=api.auth)
        assert r.status_code == 401, route
        assert "revoked" in r.json()["detail"]


def test_unknown_ids_are_404_naming_the_id(api: Api, seeded: Seeded):
    with_ids = [r for r in ROUTES if "{" in r.path]
    assert len(with_ids) >= 9 and all(any(p in r.path for p in ("{sweep_id}", "{trial_id}", "{name}")) for r in with_ids)
    for route in with_ids:
        r = call(api, route.method, url(route.path, seeded, sweep="nope123", trial="nope123-0001", name="nope123"),
                 headers=auth_for(api, route))
        assert r.status_code == 404, (route, r.text)
        assert "nope123" in r.json()["detail"], route
    # ids that cannot exist (too long for the store, NUL, non-printable) are 404 or 422, never 5xx
    for odd in ["x" * 150, "a%00b", "%E2%80%8B", "..", "%20"]:
        for route in with_ids:
            r = call(api, route.method, url(route.path, seeded, sweep=odd, trial=odd, name=odd), headers=auth_for(api, route))
            assert r.status_code in (404, 422), (route, odd, r.status_code)


# (method, path, request kwargs, the field the 422 must name)
BAD = [
    ("POST", f"{API}/sweeps", {"content": b'{"name": 1}'}, "name"),
    ("GET", f"{API}/sweeps?limit=0", {}, "limit"),
    ("GET", f"{API}/sweeps?limit=201", {}, "limit"),
    ("GET", f"{API}/sweeps?offset=-1", {}, "offset"),
    ("GET", f"{API}/sweeps?state=bogus", {}, "state"),
    ("GET", f"{API}/sweeps/" + "x" * 201, {}, "sweep_id"),
    ("POST", f"{API}/sweeps/" + "x" * 201 + "/cancel", {}, "sweep_id"),
    ("POST", f"{API}/sweeps/{{sweep_id}}/extend", {"content": b'{"trials": 0}'}, "trials"),
    ("PATCH", f"{API}/sweeps/{{sweep_id}}", {"content": b'{"priority": "urgent"}'}, "priority"),
    ("GET", f"{API}/sweeps/{{sweep_id}}/trials?state=finished", {}, "state"),
    ("GET", f"{API}/sweeps/{{sweep_id}}/curves?max_points=1", {}, "max_points"),
    ("GET", f"{API}/sweeps/{{sweep_id}}/curves?max_points=2001", {}, "max_points"),
    ("GET", f"{API}/sweeps/{{sweep_id}}/curves?fields=loss,bogus", {}, "fields"),
    ("GET", f"{API}/sweeps/{{sweep_id}}/events?after_id=-1", {}, "after_id"),
    ("GET", f"{API}/sweeps/{{sweep_id}}/events?after_id=abc", {}, "after_id"),
    ("GET", f"{API}/sweeps/{{sweep_id}}/events?kind=no%20spaces", {}, "kind"),
    ("GET", f"{API}/sweeps/{{sweep_id}}/events?limit=0", {}, "limit"),
    ("GET", f"{API}/sweeps/" + "x" * 201 + "/calibration", {}, "sweep_id"),
    ("GET", f"{API}/sweeps/{{sweep_id}}/report?format=pdf", {}, "format"),
    ("GET", f"{API}/trials/" + "x" * 201, {}, "trial_id"),
    ("GET", f"{API}/trials/{{trial_id}}/metrics?max_points=1", {}, "max_points"),
    ("GET", f"{API}/trials/{{trial_id}}/metrics?max_points=10001", {}, "max_points"),
    ("GET", f"{API}/trials/{{trial_id}}/metrics?max_points=many", {}, "max_points"),
    ("GET", f"{API}/tokens?state=bogus", {}, "state"),
    ("POST", f"{API}/tokens", {"content": b'{"name": "no spaces please"}'}, "name"),
    ("POST", f"{API}/tokens", {"content": b'{"name": "ok", "expires_in": "3 days"}'}, "expires_in"),
    ("POST", f"{API}/tokens", {"content": b'{"name": "ok", "scope": "root"}'}, "scope"),
    ("DELETE", f"{API}/tokens/" + "x" * 201, {}, "name"),
]


def test_bad_parameters_are_422_naming_the_field(api: Api, seeded: Seeded):
    covered = {(m, shape(p)) for m, p, _, _ in BAD}
    uncovered = [(r.method, r.path) for r in API_ROUTES if (r.method, shape(r.path)) not in covered]
    assert not uncovered, f"every route has at least one 422 case in BAD; these have none: {uncovered}"
    for method, path, kw, field in BAD:
        auth = admin_auth(api) if path.startswith(f"{API}/tokens") else api.auth
        headers = {**auth, "Content-Type": "application/json"} if method in ("POST", "PATCH") else auth
        r = api.client.request(method, url(path, seeded), headers=headers, **kw)
        assert r.status_code == 422, (method, path, r.text)
        detail = r.json()["detail"]
        assert isinstance(detail, list) and detail, (method, path)
        assert any(field in item["loc"] for item in detail), (method, path, detail)
        assert all({"loc", "msg", "type"} <= set(item) for item in detail)


def test_public_routes_need_no_token(api: Api, seeded: Seeded):
    for path in ["/healthz", "/openapi.json", "/docs"]:
        assert api.client.get(path).status_code == 200, path
    # /metrics is a read (docker/README.md): 401 without a token, 200 with one of any scope
    assert api.client.get("/metrics").status_code == 401
    with session_scope(api.sessions) as s:
        _, read = repo.create_token(s, "prometheus", scope="read")
    scrape = api.client.get("/metrics", headers={"Authorization": f"Bearer {read}"})
    assert scrape.status_code == 200 and "sweepd_sweeps" in scrape.text
    # every public route of the served app (API and dashboard), each through its PUBLIC example
    with TestClient(served_app(get_settings())) as client:
        for route in (r for r in TABLE if r.auth == "public"):
            r = client.request(route.method, url(PUBLIC[route.method, route.path], seeded))
            assert r.status_code == route.status_code, (route, r.text[:300])


def test_public_read_mode(api_env: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SWEEPD_PUBLIC_READ", "1")
    get_settings.cache_clear()
    for api in start(api_env):
        seeded = seed(api)
        for route in READS:
            r = api.client.get(url(route.path, seeded))
            assert r.status_code == 200, (route, r.text)
            bad = api.client.get(url(route.path, seeded), headers={"Authorization": "Bearer swd_wrong"})
            assert bad.status_code == 401, route  # a token that is sent must be valid
        for route in WRITES + ADMIN:
            r = call(api, route.method, url(route.path, seeded))
            assert r.status_code == 401, (route, r.text)
        assert call(api, "POST", url(f"{API}/sweeps/{{sweep_id}}/cancel", seeded), headers=api.auth).status_code == 202
        # the schema says so: reads may be anonymous, writes may not
        schema = api.client.get("/openapi.json").json()
        assert {} in schema["paths"][f"{API}/sweeps"]["get"]["security"]
        assert {} not in schema["paths"][f"{API}/sweeps"]["post"]["security"]


def test_openapi_documents_every_route_and_its_errors(api: Api):
    schema = api.client.get("/openapi.json").json()
    for route in ROUTES:
        op = schema["paths"][route.path][route.method.lower()]
        codes = set(op["responses"])
        assert {"401", "422"} <= codes or (route.path == "/metrics" and "401" in codes), (route, codes)
        if "{" in route.path:
            assert "404" in codes, route
        if route.auth in ("write", "admin"):  # a token of a lower scope
            assert "403" in codes, route
        assert op["security"] == [{"HTTPBearer": []}]
    post = schema["paths"][f"{API}/sweeps"]["post"]
    assert {"413", "415"} <= set(post["responses"])
    assert set(post["requestBody"]["content"]) == {"application/json", "application/yaml", "application/x-yaml",
                                                   "text/yaml", "text/x-yaml"}
    assert "SweepSpec" in schema["components"]["schemas"]
    assert "409" in schema["paths"][f"{API}/sweeps/{{sweep_id}}/cancel"]["post"]["responses"]
