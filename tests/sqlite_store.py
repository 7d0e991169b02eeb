"""A migrated SQLite store for tests that drive the engine or the service against real rows
(tests/engine and tests/service import these fixtures in their conftest)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from sweepd.store import make_engine, upgrade


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """A migrated SQLite database (the service's processes share it through this URL)."""
    url = f"sqlite:///{tmp_path / 'sweepd.db'}"
    upgrade(url)
    return url


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    eng = make_engine(sqlite_url)
    yield eng
    eng.dispose()
