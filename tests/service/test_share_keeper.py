"""The supervisor's fair-share bookkeeping in the store (sweepd/service/share_keeper.py) and the
searcher's side of it (sweepd/engine/share_gate.py): real SQLite, real stored specs."""

from __future__ import annotations

import time
from pathlib import Path

from sweepd.engine import share_gate
from sweepd.engine.share_gate import ShareGate
from sweepd.service.share_keeper import ShareKeeper
from sweepd.spec import load_spec
from sweepd.store import repo, session_scope
from tests.service.support import get

REPO = Path(__file__).resolve().parents[2]


class Cluster:
    def __init__(self, cpus: float) -> None:
        self.cpus = cpus

    def capacity(self) -> dict[str, float]:
        return {"CPU": self.cpus, "GPU": 0.0}


def stored_sweep(engine, name: str, *, priority: str = "normal", state: str = "running", running: int = 0,
                 max_concurrent: int = 4) -> str:
    spec = load_spec(REPO / "examples" / "demo.yaml", check_paths=False)
    doc = spec.to_stored()
    doc["priority"] = priority
    doc["search"]["max_concurrent"] = max_concurrent
    with session_scope(engine) as s:
        sw = repo.create_sweep(s, name=name, spec=doc)
        if state != "queued":
            repo.set_sweep_state(s, sw.id, state)
        for number in range(1, running + 1):
            repo.upsert_trial(s, sw.id, number, state="running", config={})
        return sw.id


def test_running_sweeps_get_their_fair_share_written_and_queued_ones_say_what_they_wait_for(engine):
    a = stored_sweep(engine, "a", running=2)
    b = stored_sweep(engine, "b")
    q = stored_sweep(engine, "q", state="queued")
    keeper = ShareKeeper(engine, Cluster(cpus=4))
    keeper.tick([a, b], {q: "a sweep slot: 2 of 2 running"})
    assert (get(engine, a).trial_limit, get(engine, b).trial_limit) == (2, 2)
    assert "2 of 4 trial slots, 2 sweeps sharing" in get(engine, a).waiting_for
    assert get(engine, q).trial_limit is None and get(engine, q).waiting_for == "a sweep slot: 2 of 2 running"

    # b turns high: its share grows at once; a runs on (no preemption) but may start no more
    with session_scope(engine) as s:
        repo.set_priority(s, b, "high")
    keeper.tick([a, b], {})
    assert (get(engine, a).trial_limit, get(engine, b).trial_limit) == (1, 3)
    assert get(engine, q).waiting_for is None  # started, or no longer waiting: cleared

    # a ends: b has the cluster to itself (its max_concurrent, 4), and a's grant is cleared
    keeper.tick([b], {})
    assert get(engine, b).trial_limit == 4 and get(engine, b).waiting_for is None
    assert get(engine, a).trial_limit is None and get(engine, a).waiting_for is None


def test_no_cluster_no_grants(engine):
    a = stored_sweep(engine, "alone")
    ShareKeeper(engine, None).tick([a], {})
    assert get(engine, a).trial_limit is None


def test_the_searchers_gate_reads_the_grant_and_follows_its_changes(engine, sqlite_url, monkeypatch):
    a = stored_sweep(engine, "gated")
    gate = ShareGate(sqlite_url, a)
    assert gate.limit() is None and gate.allows(running=100)  # no grant: only max_concurrent applies
    with session_scope(engine) as s:
        repo.set_share(s, a, trial_limit=1, waiting_for="x")
    monkeypatch.setattr(share_gate, "RECHECK_S", 0.0)
    assert gate.limit() == 1
    assert gate.allows(running=0) and not gate.allows(running=1)
    with session_scope(engine) as s:
        repo.set_share(s, a, trial_limit=0, waiting_for="its turn")
    time.sleep(0.01)
    assert gate.limit() == 0 and not gate.allows(running=0)  # not its turn
    with session_scope(engine) as s:
        repo.set_share(s, a, trial_limit=3, waiting_for=None)
    time.sleep(0.01)
    assert gate.allows(running=2) and not gate.allows(running=3)
    import pickle
    assert pickle.loads(pickle.dumps(gate)).limit() == 3  # pickled with the searcher's state
