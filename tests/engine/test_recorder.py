"""StoreRecorder and DecisionWriter: Ray Tune's callbacks called by hand, with stand-ins for Tune's
Trial (only the attributes the recorder reads), against a real SQLite store. No Ray cluster."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any

import pytest

from sweepd.engine.recorder import DecisionWriter, StoreRecorder
from sweepd.protocol import FINAL_MARKER, NUMBER_KEY, REPLAYED_KEY
from sweepd.store import repo, session_scope


@dataclass
class FakeTrial:
    """What the recorder reads of a ray.tune Trial."""

    number: int
    params: dict[str, Any] = field(default_factory=lambda: {"learning_rate": 1e-3, "effective_batch_size": 8})
    last_result: dict[str, Any] = field(default_factory=dict)
    error_file: str | None = None

    @property
    def config(self) -> dict[str, Any]:
        return {**self.params, NUMBER_KEY: self.number}


def step(n: int, **extra: Any) -> dict[str, Any]:
    """One per-step result as the trainable reports it (Tune adds keys of its own)."""
    return {"step": n, "samples": 8 * n, "tokens": 100 * n, "loss": 2.0 - 0.1 * n, "grad_norm": 1.0 / n,
            "lr": 1e-3, "seconds": 0.5 * n, "training_iteration": n, "trial_id": "abc", **extra}


FINAL = {FINAL_MARKER: "completed", "eval_loss": 1.25, "samples": 24, "tokens": 300, "seconds": 1.5,
         "config": {"learning_rate": 1e-3}, "time_this_iter_s": 0.1, "nested": {"a": 1}}


@pytest.fixture
def sweep_id(engine) -> str:
    with session_scope(engine) as s:
        sweep = repo.create_sweep(s, name="recorded", spec={})
        repo.set_sweep_state(s, sweep.id, "running")
        return sweep.id


@pytest.fixture
def recorder(sqlite_url, sweep_id) -> StoreRecorder:
    return StoreRecorder(sqlite_url, sweep_id, "eval_loss")


def stored(engine, sweep_id: str, number: int):
    with session_scope(engine) as s:
        trial = repo.get_trial_by_number(s, sweep_id, number)
        points = repo.read_metrics(s, trial.id) if trial else []
        return trial, points


def run_trial(rec: StoreRecorder, trial: FakeTrial, results: list[dict], final: dict | None) -> None:
    """Start, report, complete: what Tune calls for one trial."""
    rec.on_trial_start(0, [trial], trial)
    for r in results:
        rec.on_trial_result(r.get("training_iteration", 0), [trial], trial, r)
    if final is not None:
        rec.on_trial_result(99, [trial], trial, final)
    trial.last_result = final if final is not None else (results[-1] if results else {})
    rec.on_trial_complete(99, [trial], trial)


def test_a_completed_trial_has_its_config_curve_and_outcome(engine, recorder, sweep_id):
    trial = FakeTrial(1)
    recorder.on_trial_start(0, [trial], trial)
    started, _ = stored(engine, sweep_id, 1)
    assert (started.state, started.attempts, started.config) == ("running", 1, trial.params)  # no trial number
    assert started.started_at is not None

    for n in (1, 2, 3):
        recorder.on_trial_result(n, [trial], trial, step(n))
    recorder.on_trial_result(3, [trial], trial, {"eval_loss": 1.9, "step": 3})  # an interim eval: no curve point
    recorder.on_trial_result(4, [trial], trial, FINAL)  # the final result: recorded on completion
    trial.last_result = FINAL
    recorder.on_trial_complete(4, [trial], trial)

    done, points = stored(engine, sweep_id, 1)
    assert [(p.step, p.samples, p.tokens, p.loss, p.seconds) for p in points] == [
        (1, 8, 100, 1.9, 0.5), (2, 16, 200, 1.8, 1.0), (3, 24, 300, pytest.approx(1.7), 1.5)]
    assert all(p.extra is None for p in points)  # only the step keys, not Tune's own
    assert (done.state, done.objective, done.samples, done.tokens, done.seconds) == ("completed", 1.25, 24, 300, 1.5)
    assert done.finished_at is not None
    assert done.metrics_final == {FINAL_MARKER: "completed", "eval_loss": 1.25, "samples": 24, "tokens": 300,
                                  "seconds": 1.5, "time_this_iter_s": 0.1}  # no config, nothing nested


def test_a_replayed_trial_adds_no_rows_and_keeps_its_outcome(engine, recorder, sweep_id):
    run_trial(recorder, FakeTrial(1), [step(1), step(2)], FINAL)
    before, points_before = stored(engine, sweep_id, 1)

    # after a resume Tune may run the finished trial again: the trainable replays its final result
    # (trainable.replay_if_finished); here with another value, to show the stored one stands
    run_trial(recorder, FakeTrial(1), [], {**FINAL, REPLAYED_KEY: True, "eval_loss": 9.0})

    after, points_after = stored(engine, sweep_id, 1)
    assert len(points_after) == len(points_before) == 2
    assert (after.state, after.objective, after.attempts) == ("completed", 1.25, 1)
    assert (after.finished_at, after.samples, after.metrics_final) == (before.finished_at, 24, before.metrics_final)
    with session_scope(engine) as s:
        assert repo.count_trials(s, sweep_id) == 1


def test_a_retried_trial_counts_attempts_and_keeps_one_curve(engine, recorder, sweep_id, tmp_path):
    error = tmp_path / "error.txt"
    error.write_text("Traceback (most recent call last):\n  ...\nRuntimeError: worker lost\n")
    trial = FakeTrial(2, error_file=str(error))
    recorder.on_trial_start(0, [trial], trial)
    for n in (1, 2):
        recorder.on_trial_result(n, [trial], trial, step(n))
    recorder.on_trial_recover(2, [trial], trial)  # crashed; Tune retries from its checkpoint
    recorder.on_trial_start(3, [trial], trial)
    for n in (2, 3):  # the step at the checkpoint is reported again
        recorder.on_trial_result(n, [trial], trial, step(n))
    trial.last_result = FINAL
    recorder.on_trial_complete(4, [trial], trial)

    done, points = stored(engine, sweep_id, 2)
    assert (done.state, done.attempts) == ("completed", 2)
    assert [p.step for p in points] == [1, 2, 3]
    with session_scope(engine) as s:
        [event] = [e for e in repo.list_events(s, sweep_id, kind="state") if e.trial_id == done.id]
    assert event.message == "trial 2 crashed; retrying" and "RuntimeError: worker lost" in event.payload["error"]


def test_a_number_re_suggested_with_other_params_starts_a_fresh_curve(engine, recorder, sweep_id):
    first = FakeTrial(3, {"learning_rate": 1e-3})
    recorder.on_trial_start(0, [first], first)
    recorder.on_trial_result(1, [first], first, step(1))
    recorder.on_experiment_end([first])  # the sweep died here; its searcher state was older
    assert len(stored(engine, sweep_id, 3)[1]) == 1

    other = FakeTrial(3, {"learning_rate": 5e-4})
    recorder.on_trial_start(0, [other], other)
    trial, points = stored(engine, sweep_id, 3)
    assert (trial.config, trial.attempts, points) == ({"learning_rate": 5e-4}, 1, [])


@pytest.mark.parametrize("final, state, objective, reason", [
    (None, "stopped", None, None),  # no final result: the pruner (or the sweep) stopped it
    ({FINAL_MARKER: "diverged", "eval_loss": None, "samples": 16, "reason": "loss is nan at step 2"}, "diverged", None,
     "loss is nan at step 2"),
])
def test_a_trial_without_a_completed_result_is_stopped_or_diverged(engine, recorder, sweep_id, final, state,
                                                                   objective, reason):
    run_trial(recorder, FakeTrial(4), [step(1), step(2)], final)
    trial, points = stored(engine, sweep_id, 4)
    assert (trial.state, trial.objective, trial.reason) == (state, objective, reason)
    assert len(points) == 2 and trial.samples == 16 and trial.finished_at is not None


def test_a_failed_trial_keeps_the_end_of_its_error(engine, recorder, sweep_id, tmp_path):
    error = tmp_path / "error.txt"
    error.write_text("x" * 5000 + "\nRuntimeError: CUDA out of memory")
    with_text, without = FakeTrial(5, error_file=str(error)), FakeTrial(6, error_file=str(tmp_path / "missing"))
    for trial in (with_text, without):
        recorder.on_trial_start(0, [trial], trial)
        recorder.on_trial_result(1, [trial], trial, step(1))
        recorder.on_trial_error(1, [trial], trial)

    failed, points = stored(engine, sweep_id, 5)
    assert failed.state == "failed" and failed.finished_at is not None and len(points) == 1
    assert failed.error == "RuntimeError: CUDA out of memory"  # the message; the end of the text apart
    assert failed.error_detail.endswith("RuntimeError: CUDA out of memory") and len(failed.error_detail) == 4000
    assert stored(engine, sweep_id, 6)[0].error == "trial failed (no error text recorded)"


def test_the_recorder_pickles_without_its_engine_and_buffer_and_still_writes(engine, recorder, sweep_id):
    trial = FakeTrial(7)
    recorder.on_trial_start(0, [trial], trial)
    recorder.on_trial_result(1, [trial], trial, step(1))  # buffered, not yet written
    copy = pickle.loads(pickle.dumps(recorder))  # what Ray does with a callback (tuner.pkl)
    assert (copy._engine, copy._points) == (None, {})
    copy.on_trial_result(2, [trial], trial, step(2))
    copy.on_experiment_end([trial])
    assert [p.step for p in stored(engine, sweep_id, 7)[1]] == [2]


@dataclass
class FakeDecision:
    """What DecisionWriter reads of a pruner Decision."""

    trial_id: str
    stop: bool
    rung_time: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"trial_id": self.trial_id, "action": "stop" if self.stop else "continue",
                "rung_time": self.rung_time, "reason": self.reason}


def test_decisions_are_events_and_a_stop_marks_the_trial(engine, sqlite_url, sweep_id):
    write = DecisionWriter(sqlite_url, sweep_id)
    write(FakeDecision("8", False, 32.0, "trial 8 continues: rank 1 of 3 at rung 0"))
    write(FakeDecision("8", True, 64.0, "trial 8 stops: rank 3 of 3 at rung 1"))
    trial, _ = stored(engine, sweep_id, 8)
    assert (trial.stopped_at, trial.reason) == (64.0, "trial 8 stops: rank 3 of 3 at rung 1")
    with session_scope(engine) as s:
        events = repo.list_events(s, sweep_id, kind="decision")
    assert [(e.trial_id, e.payload["action"], e.payload["trial_number"]) for e in events] == [
        (trial.id, "continue", 8), (trial.id, "stop", 8)]
