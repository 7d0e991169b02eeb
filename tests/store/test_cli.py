from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
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


def test_db_upgrade_brings_optunas_tables_up_with_sweepds(db_url):
    """After an Optuna upgrade that changed its schema, every driver would fail opening its study
    ("run `optuna storage upgrade`"): `sweepd db upgrade` upgrades Optuna's tables too."""
    import optuna
    from alembic import command

    from sweepd.store.db import normalize_url

    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade", "--url", db_url]).exit_code == 0
    assert "Optuna" not in runner.invoke(app, ["db", "upgrade", "--url", db_url]).output  # no sweep has run
    storage = optuna.storages.RDBStorage(normalize_url(db_url).render_as_string(hide_password=False))
    head = storage.get_head_version()
    # the tables Optuna 3.0/3.1 left: no index on trials.study_id yet (its migration v3.2.0.a adds
    # one; its downgrade drops a name create_all never made, so it is undone by hand here)
    assert head == "v3.2.0.a"
    with storage.engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_trials_study_id")
    older = "v3.0.0.d"
    command.stamp(storage._version_manager._create_alembic_config(), older)
    storage.engine.dispose()
    with pytest.raises(RuntimeError, match="optuna storage upgrade"):
        optuna.storages.RDBStorage(normalize_url(db_url).render_as_string(hide_password=False))

    result = runner.invoke(app, ["db", "upgrade", "--url", db_url])
    assert result.exit_code == 0, result.output
    assert f"Optuna's tables: upgraded {older} -> {head}" in result.output
    reopened = optuna.storages.RDBStorage(normalize_url(db_url).render_as_string(hide_password=False))
    assert reopened.get_current_version() == head
    reopened.engine.dispose()
    assert f"Optuna's tables: already at {head}" in runner.invoke(app, ["db", "upgrade", "--url", db_url]).output
