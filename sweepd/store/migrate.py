"""Alembic, driven from Python: ``sweepd db upgrade`` and the tests call these.

The migration scripts live in ``migrations/`` at the repository root, found relative to this
file in a source checkout (an editable install), so the commands work from any working
directory; a wheel carries a copy as ``sweepd/store/_migrations/`` (see setup.py).
The schema changes only through these migrations; there is no ``create_all`` in the product.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.engine import URL

from sweepd.store.db import make_engine, normalize_url
from sweepd.store.models import VERSION_TABLE


def _migrations_dir() -> Path:
    source = Path(__file__).resolve().parents[2] / "migrations"  # a source checkout
    if (source / "env.py").is_file():
        return source
    return Path(__file__).resolve().parent / "_migrations"  # an installed wheel


MIGRATIONS_DIR = _migrations_dir()


def alembic_config(url: str | URL | None = None) -> Config:
    """An Alembic Config pointing at ``migrations/``; ``url`` defaults to the settings' URL.

    The URL travels in ``config.attributes`` (not the ini option, whose ``%`` interpolation
    would mangle passwords).
    """
    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise RuntimeError(f"Alembic migrations not found at {MIGRATIONS_DIR}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        cfg.attributes["url"] = normalize_url(url)
    return cfg


def upgrade(url: str | URL | None = None, revision: str = "head") -> None:
    """Bring the database at ``url`` up to ``revision`` (creating a SQLite file if needed)."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | URL | None, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(url: str | URL | Engine | None = None) -> str | None:
    """The revision the database is at (None: never migrated)."""
    engine = url if isinstance(url, Engine) else make_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            return ctx.get_current_revision()
    finally:
        if not isinstance(url, Engine):
            engine.dispose()


def is_up_to_date(url: str | URL | Engine | None = None) -> bool:
    return current_revision(url) == head_revision()
