import pytest

from sweepd.service.supervisor import Supervisor
from tests.sqlite_store import engine, sqlite_url  # noqa: F401  (fixtures)

__all__ = ["engine", "sqlite_url"]  # the fixtures this folder's tests use


@pytest.fixture
def supervisors():
    """make(engine, **kwargs) -> a Supervisor; every fake driver it started is killed afterwards."""
    made: list[Supervisor] = []

    def make(engine_, **kwargs) -> Supervisor:
        sup = Supervisor(engine_, **kwargs)
        made.append(sup)
        return sup

    yield make
    for sup in made:  # no fake driver outlives its test
        sup._stop.set()
        if sup._thread:
            sup._thread.join(timeout=10)
        for d in sup.drivers.values():
            d.proc.kill()
            d.proc.wait()


@pytest.fixture
def make_supervisor(engine, supervisors):
    """make(**kwargs) -> a Supervisor on the SQLite `engine`."""
    return lambda **kwargs: supervisors(engine, **kwargs)


@pytest.fixture
def pg_url(_postgres_databases):
    """A migrated database of its own on the test PostgreSQL server (tests/conftest.py)."""
    from sqlalchemy.engine import make_url

    from sweepd.store import upgrade

    url = _postgres_databases.create()
    upgrade(url)
    yield url
    _postgres_databases.drop(make_url(url).database)
