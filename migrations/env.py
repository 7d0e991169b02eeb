"""Alembic environment for sweepd.

Run through ``sweepd db upgrade`` (see sweepd/store/migrate.py) or the ``alembic`` CLI with the
repository's alembic.ini. The URL comes from ``config.attributes["url"]``, else the ini's
``sqlalchemy.url``, else the settings (SWEEPD_DATABASE_URL / the default SQLite file).

Only sweepd's own tables (prefix ``sweepd_``) are looked at: Optuna's tables share the database.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from sweepd.store.db import default_url, make_engine, normalize_url
from sweepd.store.models import TABLE_PREFIX, VERSION_TABLE, Base, UTCDateTime

config = context.config
if config.config_file_name is not None:  # the alembic CLI with alembic.ini: its logging setup
    from logging.config import fileConfig

    fileConfig(config.config_file_name, disable_existing_loggers=False)
target_metadata = Base.metadata

# Any key: serialises concurrent `sweepd db upgrade` runs on PostgreSQL.
_PG_LOCK_KEY = 0x5E_EBD_0001


def _url():
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    return normalize_url(url or default_url())


def include_name(name, type_, parent_names):
    if type_ == "table":
        return name.startswith(TABLE_PREFIX) and name != VERSION_TABLE
    return True


def render_item(type_, obj, autogen_context):
    """Freeze our TypeDecorators as plain SQLAlchemy types in generated migrations."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(**kw) -> None:
    context.configure(
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,  # SQLite can't ALTER most things: batch mode recreates tables
        include_name=include_name,
        compare_type=True,
        render_item=render_item,
        **kw,
    )


def run_migrations_offline() -> None:
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(_url())
    try:
        with engine.connect() as connection:
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:
                # Batch mode copies tables; foreign keys must be off meanwhile (outside a transaction).
                connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
                connection.commit()
            _configure(connection=connection)
            with context.begin_transaction():
                if connection.dialect.name == "postgresql":
                    connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
                context.run_migrations()
            if sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
