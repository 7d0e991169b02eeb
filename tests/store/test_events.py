from __future__ import annotations

from sweepd.store import EventKind, repo


def test_events_in_written_order_with_filters(session):
    sweep = repo.create_sweep(session, name="e", spec={})
    other = repo.create_sweep(session, name="o", spec={})
    t0 = repo.upsert_trial(session, sweep.id, 0)
    t1 = repo.upsert_trial(session, sweep.id, 1)
    decision = {"rung": 1, "time_attr": "samples", "at": 2048, "cohort": 6, "score": 1.84,
                "cutoff": 1.2, "action": "STOP"}
    written = []
    for i in range(12):
        trial = (t0, t1)[i % 2]
        written.append(repo.add_event(session, sweep.id, EventKind.decision, f"decision {i}",
                                      trial_id=trial.id, payload={**decision, "i": i}).id)
    repo.add_event(session, other.id, "info", "elsewhere")
    repo.add_event(session, sweep.id, "info", "note")
    session.commit()

    events = repo.list_events(session, sweep.id)
    assert [e.message for e in events] == [f"decision {i}" for i in range(12)] + ["note"]
    assert [e.id for e in events] == sorted(e.id for e in events)
    assert events[0].payload["cutoff"] == 1.2 and events[0].kind == "decision"
    assert [e.payload["i"] for e in repo.list_events(session, sweep.id, trial_id=t1.id)] == [
        1, 3, 5, 7, 9, 11]
    assert len(repo.list_events(session, sweep.id, kind="decision")) == 12
    newer = repo.list_events(session, sweep.id, after_id=written[9], limit=2)
    assert [e.message for e in newer] == ["decision 10", "decision 11"]
    assert [e.message for e in repo.list_events(session, other.id)] == ["elsewhere"]
