from __future__ import annotations

import math

import pytest
from sqlalchemy.exc import IntegrityError

from sweepd.store import MetricPoint, repo


@pytest.fixture
def trial_id(session):
    sweep = repo.create_sweep(session, name="m", spec={})
    trial = repo.upsert_trial(session, sweep.id, 0)
    session.commit()
    return trial.id


def _points(steps, **extra):
    return [
        {"step": s, "samples": 8 * (s + 1), "tokens": 512 * (s + 1), "loss": 2.0 / (s + 1),
         "grad_norm": 1.0 + s / 100, "lr": 1e-5, "seconds": 0.1 * s, **extra}
        for s in steps
    ]


def test_writing_the_same_points_twice_is_idempotent(session, trial_id):
    assert repo.add_metric_points(session, trial_id, _points(range(100))) == 100
    session.commit()
    assert repo.add_metric_points(session, trial_id, _points(range(100))) == 0
    session.commit()
    assert repo.count_metric_points(session, trial_id) == 100
    # A resumed trial re-reports some steps and adds new ones.
    assert repo.add_metric_points(session, trial_id, _points(range(50, 150))) == 50
    session.commit()
    assert repo.count_metric_points(session, trial_id) == 150
    assert [p.step for p in repo.read_metrics(session, trial_id)] == list(range(150))


def test_a_rewritten_step_keeps_its_first_values(session, trial_id):
    repo.add_metric_points(session, trial_id, [{"step": 3, "loss": 1.0}])
    repo.add_metric_points(session, trial_id, [{"step": 3, "loss": 9.0}])
    session.commit()
    [point] = repo.read_metrics(session, trial_id)
    assert point.loss == 1.0


def test_duplicate_steps_within_one_call(session, trial_id):
    assert repo.add_metric_points(session, trial_id, _points([1, 1, 2, 2, 2])) == 2
    session.commit()
    assert repo.count_metric_points(session, trial_id) == 2


def test_unique_trial_and_step_is_enforced_by_the_database(session, trial_id):
    repo.add_metric_points(session, trial_id, _points([7]))
    session.commit()
    session.add(MetricPoint(trial_id=trial_id, step=7, loss=0.5))
    with pytest.raises(IntegrityError):
        session.commit()
    session.rollback()
    assert repo.count_metric_points(session, trial_id) == 1


def test_large_writes_go_in_batches(session, trial_id):
    assert repo.add_metric_points(session, trial_id, _points(range(1234)), batch_size=100) == 1234
    session.commit()
    assert repo.count_metric_points(session, trial_id) == 1234
    with pytest.raises(ValueError):
        repo.add_metric_points(session, trial_id, _points([0]), batch_size=0)


def test_columns_extra_and_non_finite_values(session, trial_id):
    repo.add_metric_points(
        session,
        trial_id,
        [
            {"step": 0, "loss": math.nan, "grad_norm": math.inf, "lr": 2e-5, "eval_loss": 1.25},
            {"step": 1, "loss": 1.5},
        ],
    )
    session.commit()
    first, second = repo.read_metrics(session, trial_id)
    assert first.loss is None and first.grad_norm is None and first.lr == 2e-5
    assert first.extra == {"eval_loss": 1.25}
    assert first.to_dict()["eval_loss"] == 1.25
    assert second.extra is None and second.samples is None
    with pytest.raises(ValueError, match="without a step"):
        repo.add_metric_points(session, trial_id, [{"loss": 1.0}])


@pytest.mark.parametrize("max_points", [1, 2, 3, 10, 333, 999, 1000, 5000])
def test_downsampling_keeps_first_and_last_and_respects_max_points(session, trial_id, max_points):
    steps = list(range(0, 3000, 3))  # 1000 points, steps not contiguous
    repo.add_metric_points(session, trial_id, _points(steps))
    session.commit()
    got = [p.step for p in repo.read_metrics(session, trial_id, max_points=max_points)]
    assert len(got) == min(max_points, len(steps))
    assert got == sorted(set(got))
    assert got[-1] == steps[-1]
    if max_points > 1:
        assert got[0] == steps[0]
    if max_points >= len(steps):
        assert got == steps
    if 1 < max_points < len(steps):  # evenly spread: no gap more than twice the ideal one
        gaps = [b - a for a, b in zip(got, got[1:])]
        ideal = (steps[-1] - steps[0]) / (max_points - 1)
        assert max(gaps) <= 2 * ideal


def test_downsampling_edge_cases(session, trial_id):
    assert repo.read_metrics(session, trial_id, max_points=10) == []
    with pytest.raises(ValueError):
        repo.read_metrics(session, trial_id, max_points=0)
    repo.add_metric_points(session, trial_id, _points([5]))
    session.commit()
    assert [p.step for p in repo.read_metrics(session, trial_id, max_points=1)] == [5]


def test_points_of_other_trials_are_not_mixed_in(session, trial_id):
    other = repo.upsert_trial(session, repo.get_trial(session, trial_id).sweep_id, 1)
    repo.add_metric_points(session, trial_id, _points(range(10)))
    repo.add_metric_points(session, other.id, _points(range(100)))
    session.commit()
    assert repo.count_metric_points(session, trial_id) == 10
    assert len(repo.read_metrics(session, trial_id, max_points=5)) == 5
    assert {p.trial_id for p in repo.read_metrics(session, trial_id, max_points=5)} == {trial_id}
