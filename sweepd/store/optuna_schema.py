"""Optuna's own tables, which the sweeps' studies keep in sweepd's database (sweepd/engine/search.py).

Optuna creates them at a sweep's first run and checks their schema whenever it opens them: after
an Optuna upgrade that changed it, every driver fails with "run `optuna storage upgrade`".
`sweepd db upgrade` brings them up together with sweepd's own schema, through Optuna's own
migrations (`RDBStorage.upgrade`). A database no sweep has run in has none: nothing to do, and
Optuna (a second to import) is not loaded.
"""

from __future__ import annotations

from sqlalchemy import inspect
from sqlalchemy.engine import URL

from sweepd.store.db import make_engine, normalize_url

OPTUNA_TABLES = ("studies", "version_info")  # every Optuna schema has had both


def has_optuna_tables(url: str | URL) -> bool:
    engine = make_engine(url)
    try:
        names = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    return all(t in names for t in OPTUNA_TABLES)


def upgrade_optuna_tables(url: str | URL) -> tuple[str, str] | None:
    """Optuna's schema version (before, after) the upgrade; None: no sweep has made the tables."""
    if not has_optuna_tables(url):
        return None
    import optuna

    storage = optuna.storages.RDBStorage(normalize_url(url).render_as_string(hide_password=False),
                                         skip_compatibility_check=True, skip_table_creation=True)
    try:
        before = storage.get_current_version()
        if before != storage.get_head_version():
            storage.upgrade()
        return before, storage.get_current_version()
    finally:
        storage.engine.dispose()
