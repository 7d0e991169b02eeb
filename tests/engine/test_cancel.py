"""CancelStopper: Ray Tune asks it after every result whether to stop; it says yes to everything
once the sweep is `cancelled` in the store, and not before."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import pytest

from sweepd.engine import cancel
from sweepd.engine.cancel import CancelStopper
from sweepd.store import repo, session_scope


@pytest.fixture
def clock(monkeypatch):
    """The stopper's monotonic clock, moved by hand."""
    now = SimpleNamespace(t=1000.0)
    monkeypatch.setattr(cancel, "time", SimpleNamespace(monotonic=lambda: now.t))
    return now


def new_sweep(engine, state: str = "running") -> str:
    with session_scope(engine) as s:
        sweep = repo.create_sweep(s, name="c", spec={})
        repo.set_sweep_state(s, sweep.id, state)
        return sweep.id


def set_state(engine, sweep_id: str, state: str) -> None:
    with session_scope(engine) as s:
        repo.set_sweep_state(s, sweep_id, state)


def test_stops_every_trial_once_the_sweep_is_cancelled_not_before(engine, sqlite_url, clock):
    sweep_id = new_sweep(engine)
    stopper = CancelStopper(sqlite_url, sweep_id)
    assert stopper("1", {"loss": 2.0}) is False and stopper.stop_all() is False

    set_state(engine, sweep_id, "cancelled")
    clock.t += cancel.CHECK_EVERY_SECONDS
    assert stopper.stop_all() is True
    assert stopper("1", {"loss": 1.9}) is True and stopper("2", {}) is True  # every trial


def test_looks_at_the_store_at_most_once_a_second(engine, sqlite_url, clock):
    sweep_id = new_sweep(engine)
    stopper = CancelStopper(sqlite_url, sweep_id)
    assert stopper.stop_all() is False
    set_state(engine, sweep_id, "cancelled")
    clock.t += cancel.CHECK_EVERY_SECONDS / 2
    assert stopper.stop_all() is False  # not looked again yet
    clock.t += cancel.CHECK_EVERY_SECONDS / 2
    assert stopper.stop_all() is True


@pytest.mark.parametrize("state", ["queued", "succeeded", "failed"])
def test_other_states_stop_nothing(engine, sqlite_url, clock, state):
    assert CancelStopper(sqlite_url, new_sweep(engine, state)).stop_all() is False
    assert CancelStopper(sqlite_url, "no-such-sweep").stop_all() is False


def test_a_resumed_stopper_looks_again(engine, sqlite_url, clock):
    sweep_id = new_sweep(engine)
    stopper = CancelStopper(sqlite_url, sweep_id)
    assert stopper.stop_all() is False
    copy = pickle.loads(pickle.dumps(stopper))  # Ray keeps it in the experiment state
    set_state(engine, sweep_id, "cancelled")
    assert copy._engine is None and copy.stop_all() is True  # no wait after a restore
