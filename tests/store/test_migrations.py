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


def test_0007_idempotency_key_upgrades_and_downgrades_with_sweeps_in_place(db_url):
    """0007 adds sweeps.idempotency_key (unique, nullable) and idempotency_digest: sweeps stored
    before it keep their rows with no key; the constraint refuses a second sweep with a key taken
    (what makes concurrent retried submits one sweep) but not several without one; down to 0006
    the columns go and the rows stay."""
    import pytest
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    def insert(conn, sweep_id: str, key: str | None = None) -> None:
        cols = "id, name, state, spec, ledger, created_at, extensions" + (", idempotency_key" if key else "")
        vals = ":id, 'n', 'queued', '{}', '{}', CURRENT_TIMESTAMP, 0" + (", :key" if key else "")
        conn.execute(text(f"INSERT INTO sweepd_sweeps ({cols}) VALUES ({vals})"), {"id": sweep_id, "key": key})

    def columns(engine) -> set[str]:
        return {c["name"] for c in inspect(engine).get_columns("sweepd_sweeps")}

    upgrade(db_url, "0006")
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            insert(conn, "old1")
        assert "idempotency_key" not in columns(engine)
        engine.dispose()
        upgrade(db_url)
        assert {"idempotency_key", "idempotency_digest"} <= columns(engine)
        assert any(u["column_names"] == ["idempotency_key"] for u in inspect(engine).get_unique_constraints("sweepd_sweeps"))
        with engine.begin() as conn:
            assert conn.execute(text("SELECT idempotency_key FROM sweepd_sweeps WHERE id = 'old1'")).scalar_one() is None
            insert(conn, "new1", key="k-1")
            insert(conn, "new2")  # NULL keys never collide
        with pytest.raises(IntegrityError), engine.begin() as conn:
            insert(conn, "new3", key="k-1")
        engine.dispose()
        downgrade(db_url, "0006")
        assert "idempotency_key" not in columns(engine) and "idempotency_digest" not in columns(engine)
        with engine.connect() as conn:
            assert sorted(conn.execute(text("SELECT id FROM sweepd_sweeps")).scalars()) == ["new1", "new2", "old1"]
        engine.dispose()
        upgrade(db_url)
        assert _schema_diff(db_url) == []
    finally:
        engine.dispose()
