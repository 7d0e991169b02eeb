"""Metric points of a retried trial: each point carries its attempt; a later attempt's steps
supersede an earlier attempt's from its first step on, and the superseded points are kept apart,
so the curve has every step once (issue 13, resumable trials)."""

from __future__ import annotations

from sweepd.store import repo


def _points(steps, loss=2.0, **extra):
    return [{"step": s, "samples": 8 * s, "tokens": 100 * s, "loss": loss - s / 100, "grad_norm": 1.0,
             "lr": 1e-3, "seconds": 0.5 * s, **extra} for s in steps]


def _trial(session) -> str:
    sweep = repo.create_sweep(session, name="attempts", spec={})
    trial = repo.upsert_trial(session, sweep.id, 1)
    session.commit()
    return trial.id


def _curve(session, trial_id):
    return [(p.step, p.attempt, p.loss) for p in repo.read_metrics(session, trial_id)]


def test_a_resumed_attempt_continues_the_curve_and_keeps_the_replaced_steps_apart(session):
    tid = _trial(session)
    repo.add_metric_points(session, tid, _points(range(1, 8)))  # attempt 1 crashed after step 7
    session.commit()
    # attempt 2 resumed from the checkpoint of step 4: steps 5.. again, with its own values
    assert repo.add_metric_points(session, tid, _points(range(5, 11), loss=3.0), attempt=2) == 6
    session.commit()
    curve = _curve(session, tid)
    assert [s for s, _, _ in curve] == list(range(1, 11))  # every step once
    assert [a for _, a, _ in curve] == [1] * 4 + [2] * 6
    assert curve[4][2] == 3.0 - 5 / 100  # step 5 is attempt 2's
    superseded = repo.read_superseded(session, tid)
    assert [(p["attempt"], p["step"]) for p in superseded] == [(1, 5), (1, 6), (1, 7)]
    assert superseded[0]["loss"] == 2.0 - 5 / 100 and superseded[0]["samples"] == 40

    # idempotent: the same attempt's points again change nothing, neither do older ones
    assert repo.add_metric_points(session, tid, _points(range(5, 11), loss=3.0), attempt=2) == 0
    assert repo.add_metric_points(session, tid, _points(range(8, 12), loss=9.0)) == 1  # step 11 is new
    session.commit()
    assert _curve(session, tid)[7] == (8, 2, 3.0 - 8 / 100)
    assert len(repo.read_superseded(session, tid)) == 3


def test_a_retry_from_step_one_replaces_the_whole_earlier_curve(session):
    """No checkpoint: the retry starts over; even stopped early it leaves no earlier step behind."""
    tid = _trial(session)
    repo.add_metric_points(session, tid, _points(range(1, 21)))
    session.commit()
    repo.add_metric_points(session, tid, _points([1, 2, 3], loss=5.0, attempt=2))  # the point's own key
    session.commit()
    assert [(s, a) for s, a, _ in _curve(session, tid)] == [(1, 2), (2, 2), (3, 2)]
    assert len(repo.read_superseded(session, tid)) == 20


def test_a_third_attempt_supersedes_both_earlier_ones(session):
    tid = _trial(session)
    repo.add_metric_points(session, tid, _points(range(1, 11)))
    repo.add_metric_points(session, tid, _points(range(5, 9)), attempt=2)
    repo.add_metric_points(session, tid, _points(range(7, 13)), attempt=3)
    session.commit()
    assert [(s, a) for s, a, _ in _curve(session, tid)] == (
        [(s, 1) for s in range(1, 5)] + [(5, 2), (6, 2)] + [(s, 3) for s in range(7, 13)])
    assert [(p["attempt"], p["step"]) for p in repo.read_superseded(session, tid)] == (
        [(1, s) for s in range(5, 11)] + [(2, 7), (2, 8)])
    repo.delete_metric_points(session, tid)
    session.commit()
    assert repo.read_metrics(session, tid) == [] and repo.read_superseded(session, tid) == []


def test_points_from_before_attempts_are_attempt_one(db_url):
    """Migration 0006 on a database with points: down to 0005 (no attempt column, no superseded
    table) and up again: every point is attempt 1, the curve intact."""
    from sqlalchemy import inspect

    from sweepd.store import make_engine, session_scope, upgrade
    from sweepd.store.migrate import downgrade

    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with session_scope(engine) as s:
            tid = _trial(s)
            repo.add_metric_points(s, tid, _points(range(1, 6)))
            repo.add_metric_points(s, tid, _points(range(4, 8)), attempt=2)
        engine.dispose()
        downgrade(db_url, "0005")
        assert "sweepd_superseded_points" not in inspect(engine).get_table_names()
        assert "attempt" not in {c["name"] for c in inspect(engine).get_columns("sweepd_metric_points")}
        engine.dispose()
        upgrade(db_url)
        with session_scope(engine) as s:
            assert [(p.step, p.attempt) for p in repo.read_metrics(s, tid)] == [(s_, 1) for s_ in range(1, 8)]
            assert repo.read_superseded(s, tid) == []
    finally:
        engine.dispose()
