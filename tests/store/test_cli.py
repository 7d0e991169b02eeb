from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from sweepd.cli import app
from sweepd.store import head_revision
from sweepd.store.migrate import current_revision


def test_db_upgrade_and_current(db_url):
    runner = CliRunner()
    result = runner.invoke(app, ["db", "current", "--url", db_url])
    assert result.exit_code == 1, result.output
    assert "(empty)" in result.output

    result = runner.invoke(app, ["db", "upgrade", "--url", db_url])
    assert result.exit_code == 0, result.output
    assert f"-> {head_revision()}" in result.output
    assert current_revision(db_url) == head_revision()

    result = runner.invoke(app, ["db", "upgrade", "--url", db_url])
    assert result.exit_code == 0 and "already at" in result.output
    result = runner.invoke(app, ["db", "current", "--url", db_url])
    assert result.exit_code == 0 and "up to date" in result.output


def test_sweepd_db_upgrade_from_any_directory(db_url, tmp_path):
    """The installed `sweepd` script, run elsewhere, with the URL from SWEEPD_DATABASE_URL."""
    exe = Path(sys.executable).with_name("sweepd")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "sweepd.cli"]
    env = {**os.environ, "SWEEPD_DATABASE_URL": db_url}
    proc = subprocess.run([*cmd, "db", "upgrade"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert current_revision(db_url) == head_revision()


def test_default_database_is_sqlite_under_sweepd_home(tmp_path, monkeypatch):
    monkeypatch.delenv("SWEEPD_DATABASE_URL", raising=False)
    monkeypatch.setenv("SWEEPD_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "home" / "sweepd.db").exists()
