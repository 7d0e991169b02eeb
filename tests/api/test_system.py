"""/healthz, /metrics (Prometheus text; a read, so with a token), and a database that cannot be reached."""

from __future__ import annotations

import re

from sweepd.store import make_engine, make_sessionmaker, repo, session_scope
from tests.api.factories import API, Api, Seeded, make_sweep

UNREACHABLE = "postgresql+psycopg://nobody@127.0.0.1:1/nothing?connect_timeout=2"


def sample(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if labels else "") + r" (\S+)$"
    found = [float(m.group(1)) for line in text.splitlines() if (m := re.match(pattern, line))]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def test_healthz(api: Api):
    r = api.client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok", "database": "ok"}


def test_metrics_exposition(api: Api, seeded: Seeded):
    make_sweep(api.sessions, api.data)  # queued
    with session_scope(api.sessions) as s:
        repo.add_event(s, seeded.sweep_id, "decision", "another one")
    api.get(f"{API}/sweeps/{seeded.sweep_id}")
    api.get(f"{API}/sweeps/{seeded.sweep_id}")
    api.client.get("/no/such/page")
    r = api.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = r.text
    assert sample(text, "sweepd_sweeps", state="running") == 1
    assert sample(text, "sweepd_sweeps", state="queued") == 1
    assert sample(text, "sweepd_sweeps", state="cancelled") == 0
    assert sample(text, "sweepd_trials_running") == 1
    assert sample(text, "sweepd_decisions_total") == 2
    assert sample(text, "sweepd_database_up") == 1
    route = f"{API}/sweeps/{{sweep_id}}"
    h = "sweepd_http_request_duration_seconds"
    assert sample(text, f"{h}_count", method="GET", route=route) == 2
    assert sample(text, f"{h}_bucket", method="GET", route=route, le="+Inf") == 2
    assert sample(text, f"{h}_sum", method="GET", route=route) > 0
    assert sample(text, "sweepd_http_requests_total", method="GET", route=route, status="200") == 2
    assert sample(text, "sweepd_http_requests_total", method="GET", route="<unmatched>", status="404") == 1
    assert seeded.sweep_id not in text  # labels are route templates, never raw paths
    # buckets are cumulative and every metric is typed
    buckets = [float(m.group(1)) for m in re.finditer(rf'{h}_bucket\{{method="GET",route="{re.escape(route)}",le="[^"]+"\}} (\S+)', text)]
    assert buckets == sorted(buckets) and len(buckets) == 12
    for name in ("sweepd_sweeps", "sweepd_trials_running", "sweepd_decisions_total", h, "sweepd_http_requests_total"):
        assert re.search(rf"^# TYPE {name} (gauge|counter|histogram)$", text, re.M), name


def test_an_unreachable_database_is_503_not_500(api: Api, monkeypatch):
    broken = make_engine(UNREACHABLE)
    api.app.state.engine, api.app.state.sessionmaker = broken, make_sessionmaker(broken)
    try:
        r = api.client.get("/healthz")
        assert r.status_code == 503 and r.json()["status"] == "error"
        assert "unreachable" in r.json()["database"] and "nobody" not in r.text  # no URL in the answer
        # with tokens on, /metrics cannot check the scraper's token: 503, so the scrape fails
        # (Prometheus' `up` goes 0); with public reads it answers sweepd_database_up 0 (below)
        assert api.get("/metrics").status_code == 503
        monkeypatch.setattr(api.app.state.settings, "public_read", True)
        metrics = api.client.get("/metrics")
        assert metrics.status_code == 200 and "sweepd_database_up 0" in metrics.text
        r = api.get(f"{API}/sweeps")
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json() == {"detail": "database unavailable; retry shortly"}
    finally:
        broken.dispose()


def test_metrics_labels_come_from_a_closed_set(api: Api):
    """#15 finding 2: the method was a label verbatim; 1,000 requests with an 8 KB method name
    made /metrics 122 MB. Now any unknown method is one label, OTHER."""
    before = len(api.get("/metrics").text)
    for i in range(200):
        api.client.request(f"X{i:03d}" + "A" * 8000, "/healthz")
    text = api.get("/metrics").text
    assert "AAAA" not in text
    others = [line for line in text.splitlines() if line.startswith("sweepd_http_requests_total{") and 'method="OTHER"' in line]
    assert len(others) == 1 and others[0].endswith(" 200"), others
    assert len(text) < before + 5_000  # one new histogram and counter, not 200


def test_security_headers_on_every_response(api: Api):
    for path in ("/healthz", f"{API}/sweeps", "/no/such/page"):
        r = api.client.get(path)
        assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert "content-security-policy" not in api.client.get("/docs").headers  # its UI comes from a CDN


def test_a_loopback_server_answers_only_loopback_host_names(monkeypatch, tmp_path):
    """#15 finding 8: DNS rebinding. A page on evil.example whose name resolves to 127.0.0.1
    sends Host: evil.example; a server on loopback refuses it."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from sweepd.settings import Settings

    monkeypatch.delenv("SWEEPD_ALLOWED_HOSTS", raising=False)
    settings = Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'h.db'}", host="127.0.0.1")
    assert settings.resolved_allowed_hosts == ["127.0.0.1", "::1", "localhost"]
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8080") as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/healthz", headers={"host": "localhost:8080"}).status_code == 200
        assert client.get("/healthz", headers={"host": "evil.example"}).status_code == 400
    public = Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'h.db'}", host="0.0.0.0")
    assert public.resolved_allowed_hosts == ["*"]
    assert Settings(host="0.0.0.0", allowed_hosts="sweeps.example.com, 10.0.0.5").resolved_allowed_hosts == \
        ["sweeps.example.com", "10.0.0.5"]
