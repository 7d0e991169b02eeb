from tests.sqlite_store import engine, sqlite_url  # noqa: F401  (fixtures)
