"""`sweepd serve` and the app it serves (api/service.py): options and settings, and a supervisor
that lives exactly as long as the app. uvicorn itself is replaced; tests/client and
tests/e2e/test_service_crash.py run the real thing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import uvicorn
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from sweepd.cli import app as cli
from sweepd.service.supervisor import DriverProcess
from sweepd.settings import Settings, get_settings


@pytest.fixture
def serve_env(tmp_path, sqlite_url, monkeypatch):
    """A clean SWEEPD_ environment on a temporary database; uvicorn.run only records its call."""
    for key in [k for k in os.environ if k.startswith("SWEEPD_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("SWEEPD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SWEEPD_DATABASE_URL", sqlite_url)
    # registered here so that what `serve` writes into them is undone after the test
    monkeypatch.setenv("SWEEPD_MAX_SWEEPS", "1")
    monkeypatch.setenv("SWEEPD_SUPERVISE", "1")
    calls: list[tuple[str, dict]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append((app, kwargs)))
    get_settings.cache_clear()
    yield calls, monkeypatch
    get_settings.cache_clear()


def serve(*args: str):
    get_settings.cache_clear()
    return CliRunner().invoke(cli, ["serve", *args])


def test_serve_listens_where_the_settings_say_unless_told_otherwise(serve_env):
    calls, env = serve_env
    env.setenv("SWEEPD_HOST", "127.0.0.2")
    env.setenv("SWEEPD_PORT", "8123")
    result = serve()
    assert result.exit_code == 0, result.output
    assert calls == [("api.service:create_service_app",
                      {"factory": True, "host": "127.0.0.2", "port": 8123, "log_level": "warning"})]

    result = serve("--host", "localhost", "--port", "9000")
    assert result.exit_code == 0, result.output
    assert (calls[-1][1]["host"], calls[-1][1]["port"]) == ("localhost", 9000)


def test_serve_hands_max_sweeps_and_supervise_to_the_app_through_the_settings(serve_env):
    calls, env = serve_env
    env.setenv("SWEEPD_MAX_SWEEPS", "4")
    assert serve().exit_code == 0
    settings = get_settings()  # what the app factory reads when uvicorn builds it
    assert (settings.max_sweeps, settings.supervise) == (4, True)

    assert serve("--max-sweeps", "3", "--no-supervise").exit_code == 0
    settings = get_settings()
    assert (settings.max_sweeps, settings.supervise) == (3, False)
    assert len(calls) == 2


@pytest.mark.parametrize("args, host_env, message", [
    (["--host", "0.0.0.0"], None, "refusing to bind 0.0.0.0"),
    ([], "192.0.2.1", "refusing to bind 192.0.2.1"),  # SWEEPD_HOST is refused alike
])
def test_serve_refuses_a_public_address_when_reads_are_public(serve_env, args, host_env, message):
    calls, env = serve_env
    env.setenv("SWEEPD_PUBLIC_READ", "1")
    if host_env:
        env.setenv("SWEEPD_HOST", host_env)
    result = serve(*args)
    assert result.exit_code == 2 and message in result.output
    assert calls == []


def test_serve_on_a_public_address_needs_explicit_data_roots(serve_env, tmp_path):
    """#15 finding 9: the data roots default to the working directory, everything when the
    server starts from / or $HOME; bound beyond loopback they must be set."""
    calls, env = serve_env
    env.delenv("SWEEPD_DATA_ROOTS", raising=False)
    result = serve("--host", "0.0.0.0")
    assert result.exit_code == 2 and "set SWEEPD_DATA_ROOTS" in result.output and calls == []
    env.setenv("SWEEPD_DATA_ROOTS", str(tmp_path))
    assert serve("--host", "0.0.0.0").exit_code == 0 and len(calls) == 1
    assert serve("--host", "127.0.0.1").exit_code == 0  # loopback: the default roots are fine


def test_serve_refuses_no_sweeps_at_once(serve_env):
    calls, _ = serve_env
    result = serve("--max-sweeps", "0")
    assert result.exit_code == 2 and "--max-sweeps must be at least 1, got 0" in result.output
    assert calls == []


def test_the_service_app_runs_the_supervisor_for_its_lifetime(tmp_path, sqlite_url):
    from api.service import create_service_app

    app = create_service_app(Settings(home=tmp_path / "home", database_url=sqlite_url, max_sweeps=2))
    with TestClient(app) as client:
        page = client.get("/sweeps/abc")  # the dashboard is served too
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        supervisor = app.state.supervisor
        assert supervisor.max_sweeps == 2 and supervisor._thread.is_alive()
        assert supervisor.log_dir == tmp_path / "home" / "logs"
        assert client.get("/healthz").status_code == 200
        driver = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        supervisor.drivers["s1"] = DriverProcess("s1", driver)
    # the server stopping stops the supervisor, and its drivers get SIGTERM
    assert not supervisor._thread.is_alive()
    assert driver.wait(timeout=10) == -signal.SIGTERM


def test_the_service_app_without_supervision_runs_no_supervisor(tmp_path, sqlite_url):
    from api.service import create_service_app

    app = create_service_app(Settings(home=tmp_path / "home", database_url=sqlite_url, supervise=False))
    with TestClient(app) as client:
        assert app.state.supervisor is None
        assert client.get("/healthz").status_code == 200
