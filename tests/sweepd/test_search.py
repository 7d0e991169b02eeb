"""SweepOptunaSearch against a real Optuna RDB study: numbering, PRUNED with the curve, and the
replays that follow a crash."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

ray = pytest.importorskip("ray")
from ray import tune  # noqa: E402

from sweepd.engine import search  # noqa: E402
from sweepd.engine.search import NUMBER_ATTR, SweepOptunaSearch, make_sampler, optuna_storage  # noqa: E402
from sweepd.engine.trainable import FINAL_MARKER, NUMBER_KEY, REPLAYED_KEY  # noqa: E402

SPACE = {"learning_rate": tune.loguniform(1e-4, 1e-2)}


def searcher(url: str) -> SweepOptunaSearch:
    return SweepOptunaSearch(space=SPACE, sampler=make_sampler("random", 0), storage=optuna_storage(url),
                             study_name="sweepd-test", metric="eval_loss", mode="min")  # fmt: skip


def study_trials(url: str):
    return optuna.load_study(study_name="sweepd-test", storage=url).get_trials(deepcopy=False)


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def test_trials_are_numbered_in_the_config_and_in_optuna(url):
    s = searcher(url)
    configs = [s.suggest(f"t{i}") for i in range(3)]
    assert [c[NUMBER_KEY] for c in configs] == [1, 2, 3]
    assert [t.user_attrs[NUMBER_ATTR] for t in study_trials(url)] == [1, 2, 3]


def test_finished_is_complete_stopped_is_pruned_with_its_curve(url):
    s = searcher(url)
    s.suggest("a")
    s.suggest("b")
    for k in range(1, 4):
        s.on_trial_result("a", {"loss": 3.0 - k, "samples": 8 * k})
        s.on_trial_result("b", {"loss": 3.5 - k, "samples": 8 * k})
    s.on_trial_complete("a", {"loss": 0.5, "samples": 32, "eval_loss": 1.2, FINAL_MARKER: "completed"})
    s.on_trial_complete("b", {"loss": 0.5, "samples": 24})  # stopped: no final marker
    a, b = study_trials(url)
    assert (a.state, a.value) == (TrialState.COMPLETE, 1.2)
    # the study gets a trial's first point, one every INTERMEDIATE_EVERY_S, and its last before it is told
    assert b.state == TrialState.PRUNED and b.intermediate_values == {8: 2.5, 24: 0.5}
    assert b.value == 0.5  # TPE ranks a pruned trial by its last value
    assert a.intermediate_values == {8: 2.0, 24: 0.0}


def test_the_study_gets_a_point_every_intermediate_every_s(url, monkeypatch):
    monkeypatch.setattr(search, "INTERMEDIATE_EVERY_S", 0.0)
    s = searcher(url)
    s.suggest("b")
    for k in range(1, 4):
        s.on_trial_result("b", {"loss": 3.5 - k, "samples": 8 * k})
    assert study_trials(url)[0].intermediate_values == {8: 2.5, 16: 1.5, 24: 0.5}  # written as they came
    s.on_trial_complete("b", {"loss": 0.5, "samples": 24})
    assert study_trials(url)[0].state == TrialState.PRUNED


def test_a_replay_under_a_new_optuna_trial_is_told_fail(url, tmp_path):
    """The searcher's saved state is older than the crash: the number is suggested again as a new
    Optuna trial while the trainable replays the first trial's stored result."""
    s = searcher(url)
    s.save(str(tmp_path / "searcher.pkl"))  # the state Tune saved, before trial 1 was suggested
    s.suggest("before-crash")
    final = {"loss": 0.5, "samples": 32, "eval_loss": 1.2, FINAL_MARKER: "completed"}
    s.on_trial_complete("before-crash", final)

    resumed = searcher(url)
    resumed.restore(str(tmp_path / "searcher.pkl"))
    assert resumed.suggest("after-resume")[NUMBER_KEY] == 1  # the same number again
    resumed.on_trial_result("after-resume", {**final, REPLAYED_KEY: True})
    resumed.on_trial_complete("after-resume", {**final, REPLAYED_KEY: True})
    first, again = study_trials(url)
    assert (first.state, first.value) == (TrialState.COMPLETE, 1.2)
    assert again.state == TrialState.FAIL and again.user_attrs[NUMBER_ATTR] == 1
    assert "finished before a crash" in again.system_attrs["sweepd_replayed"]


def test_a_replay_of_a_trial_it_already_told_changes_nothing(url):
    s = searcher(url)
    s.suggest("a")
    final = {"loss": 0.5, "samples": 32, "eval_loss": 1.2, FINAL_MARKER: "completed"}
    s.on_trial_complete("a", final)
    s._completed_trials.discard("a")  # as after a restore from a state saved before the tell
    s.on_trial_complete("a", {**final, REPLAYED_KEY: True})
    [a] = study_trials(url)
    assert (a.state, a.value) == (TrialState.COMPLETE, 1.2)
