"""A database on the test PostgreSQL server owned by a role of its own with a password, for the
tests that the password stays out of what sweepd hands around and pickles (#15 finding 9).

The test server trusts local connections, so it would accept the role without its password;
the tests check what each connection was given (psycopg's ``info.password``) and what files hold."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def password_database(dbs) -> Iterator[tuple[str, str]]:
    """(url with the password, the password) of a fresh database; ``dbs`` is the suite's
    ``_postgres_databases``. Database and role are dropped afterwards."""
    tag = uuid.uuid4().hex[:8]
    role, name, password = f"sweepd_secret_{tag}", f"{dbs.prefix}secret_{tag}", f"pw-{uuid.uuid4().hex}"
    with dbs.admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'")
        conn.exec_driver_sql(f'CREATE DATABASE "{name}" OWNER "{role}"')
    try:
        yield dbs.url.set(username=role, password=password, database=name).render_as_string(hide_password=False), \
            password
    finally:
        dbs.drop(name)
        with dbs.admin.connect() as conn:
            conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{role}"')
