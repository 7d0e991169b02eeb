"""The schema comes only from the migrations, and the models match it."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from sweepd.store import Base, head_revision, make_engine, upgrade
from sweepd.store.migrate import current_revision, downgrade
from sweepd.store.models import TABLE_PREFIX, VERSION_TABLE

TABLES = {
    "sweepd_sweeps",
    "sweepd_trials",
    "sweepd_metric_points",
    "sweepd_events",
    "sweepd_api_tokens",
}


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _schema_diff(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn,
                opts={
                    "version_table": VERSION_TABLE,
                    "compare_type": True,
                    "include_name": lambda name, type_, parents: type_ != "table"
                    or (name.startswith(TABLE_PREFIX) and name != VERSION_TABLE),
                },
            )
            return compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()


def test_upgrade_from_empty_creates_the_schema(db_url):
    assert current_revision(db_url) is None
    upgrade(db_url)
    assert TABLES | {VERSION_TABLE} <= _tables(db_url)
    assert current_revision(db_url) == head_revision() is not None


def test_models_match_the_migrated_schema(db_url):
    upgrade(db_url)
    assert _schema_diff(db_url) == []


def test_upgrade_is_idempotent_and_downgrade_round_trips(db_url):
    upgrade(db_url)
    upgrade(db_url)
    downgrade(db_url, "base")
    assert not (_tables(db_url) & TABLES)
    assert current_revision(db_url) is None
    upgrade(db_url)
    assert TABLES <= _tables(db_url)
    assert _schema_diff(db_url) == []


def test_optuna_storage_shares_the_database(db_url):
    """Optuna's RDB storage (tables `trials`, `studies`, its own `alembic_version`) lives in the
    same database as sweepd's tables, whichever is created first."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(db_url)
    study = optuna.create_study(study_name="s", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    storage.engine.dispose()

    upgrade(db_url)
    tables = _tables(db_url)
    assert {"trials", "studies", "alembic_version"} <= tables
    assert TABLES <= tables
    assert _schema_diff(db_url) == []

    storage = optuna.storages.RDBStorage(db_url)  # checks its own schema version
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == 2
    storage.engine.dispose()


def test_product_code_never_creates_tables_itself():
    root = Path(__file__).resolve().parents[2]
    for path in [*(root / "sweepd").rglob("*.py"), *(root / "api").rglob("*.py")]:
        assert "create_all(" not in path.read_text(), f"{path}: the schema comes from migrations"
