"""The recorder keeps a retried trial's attempts apart: each point is labelled with its attempt, a
resumed attempt's steps continue the curve, and the points it replaces are kept aside (issue 13).
Tune's callbacks called by hand, as in test_recorder.py."""

from __future__ import annotations

import pickle

from sweepd.engine.recorder import StoreRecorder
from sweepd.store import repo, session_scope
from tests.engine.test_recorder import FINAL, FakeTrial, step, stored, sweep_id  # noqa: F401  (a fixture)


def test_a_resumed_retry_continues_the_curve_from_its_checkpoint(engine, sqlite_url, sweep_id, tmp_path):
    rec = StoreRecorder(sqlite_url, sweep_id, "eval_loss")
    trial = FakeTrial(1)
    rec.on_trial_start(0, [trial], trial)
    for n in range(1, 7):  # a checkpoint after step 4, then the worker dies after step 6
        rec.on_trial_result(n, [trial], trial, step(n))
        if n == 4:
            rec.on_checkpoint(n, [trial], trial, checkpoint=object())
    rec.on_trial_recover(6, [trial], trial)
    rec.on_trial_start(7, [trial], trial)  # the retry resumes from step 4's checkpoint
    for n in range(5, 11):
        rec.on_trial_result(n, [trial], trial, step(n, loss=9.0 + n))
    trial.last_result = FINAL
    rec.on_trial_complete(11, [trial], trial)

    done, points = stored(engine, sweep_id, 1)
    assert done.attempts == 2
    assert [(p.step, p.attempt) for p in points] == [(s, 1) for s in range(1, 5)] + [(s, 2) for s in range(5, 11)]
    assert [p.loss for p in points][4:] == [9.0 + n for n in range(5, 11)]
    with session_scope(engine) as s:
        aside = repo.read_superseded(s, done.id)
    assert [(p["attempt"], p["step"]) for p in aside] == [(1, 5), (1, 6)]


def test_a_checkpoint_flushes_the_points_before_it(engine, sqlite_url, sweep_id):
    rec = StoreRecorder(sqlite_url, sweep_id, "eval_loss")
    trial = FakeTrial(2)
    rec.on_trial_start(0, [trial], trial)
    for n in (1, 2, 3):
        rec.on_trial_result(n, [trial], trial, step(n))
    assert stored(engine, sweep_id, 2)[1] == []  # buffered
    rec.on_checkpoint(3, [trial], trial, checkpoint=object())
    assert [p.step for p in stored(engine, sweep_id, 2)[1]] == [1, 2, 3]


def test_a_restored_recorder_labels_points_with_the_stored_attempt(engine, sqlite_url, sweep_id):
    rec = StoreRecorder(sqlite_url, sweep_id, "eval_loss")
    trial = FakeTrial(3)
    rec.on_trial_start(0, [trial], trial)
    rec.on_trial_recover(0, [trial], trial)
    rec.on_trial_start(0, [trial], trial)  # attempt 2
    again = pickle.loads(pickle.dumps(rec))  # the sweep's driver restarted mid-trial
    again.on_trial_result(1, [trial], trial, step(1))
    again.on_experiment_end([trial])
    assert [(p.step, p.attempt) for p in stored(engine, sweep_id, 3)[1]] == [(1, 2)]
