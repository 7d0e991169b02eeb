"""Fixtures for the REST API tests: an app on a fresh database (SQLite and PostgreSQL, through
the suite's ``db_url``) with a bearer token, and a data root with tiny data files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sweepd.settings import get_settings
from tests.api.factories import LINE, Api, Seeded, seed, start


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    (root / "train.jsonl").write_text(LINE * 4)
    (root / "eval.jsonl").write_text(LINE * 2)
    return root


@pytest.fixture
def api_env(db_url: str, data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """SWEEPD_* pointing at the test database and data root (settings cache cleared)."""
    monkeypatch.setenv("SWEEPD_DATABASE_URL", db_url)
    monkeypatch.setenv("SWEEPD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SWEEPD_DATA_ROOTS", str(data_root))
    monkeypatch.delenv("SWEEPD_PUBLIC_READ", raising=False)
    monkeypatch.delenv("SWEEPD_MAX_BODY_BYTES", raising=False)
    monkeypatch.chdir(data_root)  # relative spec paths resolve here
    get_settings.cache_clear()
    yield data_root
    get_settings.cache_clear()


@pytest.fixture
def api(api_env: Path) -> Iterator[Api]:
    yield from start(api_env)


@pytest.fixture
def seeded(api: Api) -> Seeded:
    """A running sweep with finished, stopped and running trials, curves and events."""
    return seed(api)
