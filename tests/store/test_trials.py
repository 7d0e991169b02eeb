from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError

from sweepd.store import Trial, TrialState, repo


@pytest.fixture
def sweep_id(session):
    sweep = repo.create_sweep(session, name="t", spec={})
    session.commit()
    return sweep.id


def test_upsert_creates_then_updates(session, sweep_id):
    trial = repo.upsert_trial(session, sweep_id, 3, config={"learning_rate": 1e-5}, state="running")
    session.commit()
    assert trial.id == repo.trial_id_for(sweep_id, 3)
    assert trial.state == "running" and trial.attempts == 0 and trial.objective is None

    again = repo.upsert_trial(session, sweep_id, 3, state=TrialState.stopped, stopped_at=2048.0,
                              reason="grad norm 1.84 is 5th of 6", samples=2048, attempts=1)
    session.commit()
    assert again.id == trial.id
    assert again.config == {"learning_rate": 1e-5}  # not given: kept
    assert (again.state, again.stopped_at, again.samples, again.attempts) == (
        "stopped", 2048.0, 2048, 1)
    assert repo.count_trials(session, sweep_id) == 1

    # upserting with no fields is a no-op for an existing trial
    assert repo.upsert_trial(session, sweep_id, 3).state == "stopped"
    session.commit()
    session.expire_all()
    assert repo.get_trial(session, trial.id).reason.startswith("grad norm")


def test_a_running_trials_totals_are_one_update_of_a_stored_trial(session, sweep_id):
    repo.upsert_trial(session, sweep_id, 1, state="running")
    session.commit()
    assert repo.set_trial_totals(session, repo.trial_id_for(sweep_id, 1), samples=96, tokens=4000, seconds=2.5)
    assert not repo.set_trial_totals(session, repo.trial_id_for(sweep_id, 2), samples=1, tokens=1, seconds=1.0)
    session.commit()
    session.expire_all()
    trial = repo.get_trial(session, repo.trial_id_for(sweep_id, 1))
    assert (trial.state, trial.samples, trial.tokens, trial.seconds) == ("running", 96, 4000, 2.5)
    assert repo.count_trials(session, sweep_id) == 1  # nothing created for the missing one


def test_upsert_validates(session, sweep_id):
    with pytest.raises(ValueError, match="unknown trial field"):
        repo.upsert_trial(session, sweep_id, 0, colour="red")
    with pytest.raises(ValueError, match="unknown trial state"):
        repo.upsert_trial(session, sweep_id, 0, state="done")
    with pytest.raises(repo.NotFound):
        repo.upsert_trial(session, "missing", 0)


def test_sweep_and_number_are_unique(session, sweep_id):
    repo.upsert_trial(session, sweep_id, 0)
    session.commit()
    session.add(Trial(id="other-id", sweep_id=sweep_id, number=0, config={}, state="pending",
                      attempts=0, samples=0, tokens=0, seconds=0.0))
    with pytest.raises(IntegrityError):
        session.commit()
    session.rollback()


def test_list_and_count(session, sweep_id):
    for n in (2, 0, 1, 3):
        repo.upsert_trial(session, sweep_id, n, state="completed" if n % 2 else "stopped",
                          objective=float(n))
    session.commit()
    assert [t.number for t in repo.list_trials(session, sweep_id)] == [0, 1, 2, 3]
    assert [t.number for t in repo.list_trials(session, sweep_id, state="stopped")] == [0, 2]
    assert len(repo.list_trials(session, sweep_id, state=["stopped", "completed"])) == 4
    assert repo.count_trials(session, sweep_id, state="completed") == 2
    assert repo.get_trial_by_number(session, sweep_id, 2).objective == 2.0
    assert repo.get_trial_by_number(session, sweep_id, 9) is None
    assert [t.number for t in repo.get_sweep(session, sweep_id).trials] == [0, 1, 2, 3]
