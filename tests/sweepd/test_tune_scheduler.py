"""The Ray Tune adapter: a real (short) Tune run, and the scheduler's state across a resume."""

from __future__ import annotations

import json

import pytest

ray = pytest.importorskip("ray")
from ray import tune  # noqa: E402

from sweepd.pruners import ASHAPruner, make_pruner  # noqa: E402
from sweepd.engine.tune_scheduler import EarlySignalScheduler  # noqa: E402

SPEC = {"type": "asha", "signal": "grad_norm", "grace": 256, "reduction_factor": 2,
        "max_t": 1024, "window": 3}  # fmt: skip  rungs at 256 and 512 samples
# Run one after another (so the expected verdicts do not depend on timing):
#   t1 is 2nd of 2 at 256 -> stopped; t3 is 3rd of 4 at 256 (top 2) -> stopped;
#   t4 is 3rd of 5 at 256 (top 3), then 3rd of 3 at 512 (top 2) -> stopped; t5 is last at 256.
GRAD_NORMS = [1.0, 2.0, 0.5, 2.5, 1.2, 3.0]
EXPECTED_STOP = {1: 256, 3: 256, 4: 512, 5: 256}


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


class Record:
    """A picklable on_decision callback (it travels in tuner.pkl)."""

    def __init__(self):
        self.decisions = []

    def __call__(self, decision):
        self.decisions.append(decision)


def test_tune_run_stops_the_trials_the_pruner_rejects(ray_local, tmp_path, monkeypatch):
    # The objective arrives only in the final report; Tune's strict check wants it in every one.
    monkeypatch.setenv("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")

    def trainable(config):  # nested: shipped to the workers by value
        from ray import tune

        for step in range(1, 9):
            result = {"step": step, "samples": step * 128, "loss": 2.0,
                      "grad_norm": config["grad_norm"]}  # fmt: skip
            if step == 8:
                result["eval_loss"] = config["grad_norm"]
            tune.report(result)

    record = Record()
    state_path = tmp_path / "pruner_state.json"
    scheduler = EarlySignalScheduler(SPEC, on_decision=record, state_path=state_path)
    tuner = tune.Tuner(
        trainable,
        param_space={"grad_norm": tune.grid_search(GRAD_NORMS)},
        tune_config=tune.TuneConfig(
            metric="eval_loss", mode="min", scheduler=scheduler, max_concurrent_trials=1,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="prune", verbose=0),
    )
    results = tuner.fit()
    assert not results.errors

    last_samples = {
        GRAD_NORMS.index(r.config["grad_norm"]): r.metrics["samples"] for r in results
    }
    expected = {i: EXPECTED_STOP.get(i, 1024) for i in range(len(GRAD_NORMS))}
    assert last_samples == expected  # stopped trials report nothing after their rung

    stops = [d for d in record.decisions if d.stop]
    assert sorted(d.rung_time for d in stops) == [256, 256, 256, 512]
    assert all(d.reason.startswith("stopped at ") for d in stops)

    # Tune's metric reached the pruner, and only the trials that finished taught it anything.
    assert scheduler.pruner.metric == "eval_loss"
    state = json.loads(state_path.read_text())
    assert sorted(state["finals"].values()) == [0.5, 1.0]
    assert [len(rung) for rung in state["rungs"]] == [len(GRAD_NORMS), 3]

    # A fresh scheduler (what Tuner.restore unpickles) picks the rungs up from state_path.
    resumed = EarlySignalScheduler(SPEC, state_path=state_path)
    resumed.on_trial_add(None, None)
    assert resumed.pruner.state_dict() == scheduler.pruner.state_dict()


def test_save_restore_and_search_properties(tmp_path):
    class FakeTrial:
        def __init__(self, trial_id):
            self.trial_id = trial_id

    scheduler = EarlySignalScheduler(ASHAPruner(signal="grad_norm", grace=100, reduction_factor=2, max_t=1000))
    assert scheduler.set_search_properties("eval_acc", "max")
    assert scheduler.pruner.metric == "eval_acc" and scheduler.pruner.mode == "max"
    assert scheduler.set_search_properties("eval_acc", "max")  # the same again is fine
    assert not scheduler.set_search_properties("eval_loss", "min")  # a contradiction is not

    a, b = FakeTrial("a"), FakeTrial("b")
    assert scheduler.on_trial_result(None, a, {"samples": 100, "grad_norm": 1.0}) == "CONTINUE"
    scheduler.save(str(tmp_path / "state.json"))
    other = EarlySignalScheduler(make_pruner({"type": "asha", "signal": "grad_norm", "grace": 100,
                                              "reduction_factor": 2, "max_t": 1000}))  # fmt: skip
    other.restore(str(tmp_path / "state.json"))
    for sched in (scheduler, other):
        assert sched.on_trial_result(None, b, {"samples": 100, "grad_norm": 2.0}) == "STOP"
    assert "1 trials stopped" in other.debug_string()

    with pytest.raises(ValueError, match="mode must be 'min' or 'max', got 'down'"):
        EarlySignalScheduler({"type": "none"}, mode="down")


def test_a_replayed_result_is_not_judged():
    """After a crash the trainable replays a finished trial's stored result (REPLAYED_KEY): the
    pruner must not judge it at every rung it crosses and write decisions for it."""
    from sweepd.engine.trainable import REPLAYED_KEY

    class FakeTrial:
        def __init__(self, trial_id):
            self.trial_id = trial_id

    record = Record()
    scheduler = EarlySignalScheduler(ASHAPruner(signal="grad_norm", grace=100, reduction_factor=2, max_t=1000), on_decision=record)
    for i, g in enumerate([1.0, 2.0]):
        scheduler.on_trial_result(None, FakeTrial(f"t{i}"), {"samples": 100, "grad_norm": g})
    judged = len(record.decisions)
    replay = {"samples": 1000, "grad_norm": 9.0, "eval_loss": 1.0, REPLAYED_KEY: True}
    assert scheduler.on_trial_result(None, FakeTrial("r"), replay) == "CONTINUE"
    assert len(record.decisions) == judged
    # without the mark, the same result is judged (and stopped) at the first rung
    assert scheduler.on_trial_result(None, FakeTrial("r"), {k: v for k, v in replay.items() if k != REPLAYED_KEY}) == "STOP"


def test_the_state_is_written_at_most_every_autosave_every_s_and_at_the_last_trial(tmp_path, monkeypatch):
    """Writing the pruner state after every event cost tens of ms a write at 1,000 trials: it is written
    at most every AUTOSAVE_EVERY_S (what changed since, at Tune's next step once that time is up), and
    at once when the last live trial ends."""
    from sweepd.engine import tune_scheduler

    class FakeTrial:
        def __init__(self, trial_id):
            self.trial_id = trial_id

    class FakeController:
        def __init__(self, live):
            self.live = live

        def get_live_trials(self):
            return list(self.live)

        def get_trials(self):
            return []

    state_path = tmp_path / "pruner.json"
    scheduler = EarlySignalScheduler(ASHAPruner(signal="grad_norm", grace=100, reduction_factor=2, max_t=1000),
                                     metric="eval_loss", mode="min", state_path=state_path)
    a, b, c = FakeTrial("a"), FakeTrial("b"), FakeTrial("c")
    controller = FakeController([a, b, c])

    def finals():
        return json.loads(state_path.read_text())["finals"]

    for trial in (a, b, c):
        scheduler.on_trial_result(controller, trial, {"samples": 100, "grad_norm": 1.0})
    scheduler.on_trial_complete(controller, a, {"eval_loss": 1.0})
    scheduler.on_trial_complete(controller, b, {"eval_loss": 2.0})
    assert finals() == {}  # the first result was written at once; the rest waits out AUTOSAVE_EVERY_S
    scheduler.choose_trial_to_run(controller)
    assert finals() == {}  # not due yet
    monkeypatch.setattr(tune_scheduler, "AUTOSAVE_EVERY_S", 0.0)
    scheduler.choose_trial_to_run(controller)
    assert finals() == {"a": 1.0, "b": 2.0}  # due: Tune's next step wrote it
    monkeypatch.setattr(tune_scheduler, "AUTOSAVE_EVERY_S", 3600.0)
    controller.live = [c]
    scheduler.on_trial_complete(controller, c, {"eval_loss": 3.0})
    assert finals() == {"a": 1.0, "b": 2.0, "c": 3.0}  # the last live trial: written at once
