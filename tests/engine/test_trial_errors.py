"""Trial errors in the trainer's own words: the message a failed trial stores (no Ray wrapper, no
traceback, no ANSI codes), the traceback kept apart for other crashes, no retry for a trainer
error, and the sweep that stops once its first max_concurrent trials failed the same way. Fast:
no Ray cluster, Tune's callbacks called by hand against a real SQLite store."""

from __future__ import annotations

import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest
from ray.exceptions import RayTaskError

from sweepd.engine import trainable
from sweepd.engine.finalize import finalize_sweep, uniform_failure
from sweepd.engine.recorder import (
    TRACEBACK_LINES,
    SameFailureStopper,
    StoreRecorder,
    failure_of,
    strip_ansi,
    trial_failure,
)
from sweepd.protocol import FINAL_MARKER
from sweepd.spec import load_spec
from sweepd.store import repo, session_scope
from tests.engine.test_recorder import FakeTrial, step, stored
from trainer.data import DataError
from trainer.loop import TrialError
from trainer.models import ModelLoadError

REPO = Path(__file__).resolve().parents[2]
DATA_MESSAGE = "train.jsonl:39: over-long sample: 290 tokens > data.max_seq_len=256"
WRAPPER = "\x1b[36mray::ImplicitFunc.train()\x1b[39m (pid=4242, ip=10.0.0.1, actor_id=abc, repr=run_trial_in_tune)"


def traceback_text(last: str, frames: int = 30) -> str:
    lines = [WRAPPER, "Traceback (most recent call last):"]
    for i in range(frames):
        lines += [f'  File "/srv/trainer/loop.py", line {100 + i}, in frame_{i}', f"    call_{i}()"]
    return "\n".join(lines + [last])


def ray_error(cause: BaseException, last: str) -> RayTaskError:
    """What Tune pickles for a failed function trainable."""
    return RayTaskError("ImplicitFunc.train", traceback_text(last), cause)


# ---- the message and the detail -----------------------------------------------------------------


def test_ansi_codes_are_stripped():
    assert strip_ansi(WRAPPER).startswith("ray::ImplicitFunc.train() (pid=4242")
    assert strip_ansi("\x1b[1m\x1b[31mred\x1b[0m plain\x1b[2K") == "red plain"


@pytest.mark.parametrize("error", [TrialError(DATA_MESSAGE), DataError(DATA_MESSAGE),
                                   ModelLoadError("model.path: '/m' has no config.json")])
def test_a_trainer_error_is_its_own_message_without_detail(error):
    message, detail = failure_of(ray_error(error, f"{type(error).__name__}: {error}"), "unused")
    assert (message, detail) == (str(error), None)


def test_a_trainer_error_survives_the_pickle_round_trip_and_ray_s_dual_class():
    exc = pickle.loads(pickle.dumps(ray_error(DataError(DATA_MESSAGE), f"DataError: {DATA_MESSAGE}")))
    assert failure_of(exc, "")[0] == DATA_MESSAGE
    dual = ray_error(DataError(DATA_MESSAGE), "x").as_instanceof_cause()  # what ray.get raises
    assert failure_of(dual, "") == (DATA_MESSAGE, None)


def test_another_crash_is_its_type_and_message_with_the_last_traceback_lines():
    message, detail = failure_of(ray_error(RuntimeError("CUDA error: device-side assert"),
                                           "RuntimeError: CUDA error: device-side assert"), "")
    assert message == "RuntimeError: CUDA error: device-side assert"
    lines = detail.splitlines()
    assert len(lines) == TRACEBACK_LINES and lines[-1] == "RuntimeError: CUDA error: device-side assert"
    assert "\x1b" not in detail and "[36m" not in detail


def test_without_a_pickled_error_the_text_file_is_read():
    last = f"trainer.data.DataError: {DATA_MESSAGE}"
    text = f"Failure # 1 (occurred at 2026-11-26_14-00-00)\n{traceback_text(last)}\n"
    assert failure_of(None, text) == (DATA_MESSAGE, None)
    message, detail = failure_of(None, traceback_text("ValueError: bad shape (3, 4)"))
    assert message == "ValueError: bad shape (3, 4)" and detail.endswith(message) and "\x1b" not in detail
    assert failure_of(None, "") == ("trial failed (no error text recorded)", None)


def test_the_last_failure_of_a_retried_trial_is_the_one_read(tmp_path):
    error = tmp_path / "error.txt"
    error.write_text(f"Failure # 1 (occurred at x)\n{traceback_text('OSError: first')}\n"
                     f"Failure # 2 (occurred at y)\n{traceback_text('OSError: second')}\n")
    message, detail = trial_failure(FakeTrial(1, error_file=str(error)))
    assert message == "OSError: second" and "OSError: first" not in detail


# ---- the recorder -------------------------------------------------------------------------------


@pytest.fixture
def sweep_id(engine) -> str:
    with session_scope(engine) as s:
        sweep = repo.create_sweep(s, name="errors", spec={})
        repo.set_sweep_state(s, sweep.id, "running")
        return sweep.id


class ErroredTrial(FakeTrial):
    """A trial with the pickled exception Tune writes next to error.txt."""

    def __init__(self, number: int, error_file: str, pickled_error_file: str | None) -> None:
        super().__init__(number, error_file=error_file)
        self.pickled_error_file = pickled_error_file


def test_an_errored_trial_stores_the_message_and_the_folded_traceback(engine, sqlite_url, sweep_id, tmp_path):
    rec = StoreRecorder(sqlite_url, sweep_id, "eval_loss")
    text = tmp_path / "error.txt"
    text.write_text("Failure # 1 (occurred at x)\n" + str(ray_error(RuntimeError("boom"), "RuntimeError: boom")))
    pickled = tmp_path / "error.pkl"
    pickled.write_bytes(pickle.dumps(ray_error(RuntimeError("boom"), "RuntimeError: boom")))
    trial = ErroredTrial(1, str(text), str(pickled))
    rec.on_trial_start(0, [trial], trial)
    rec.on_trial_result(1, [trial], trial, step(1))
    rec.on_trial_error(1, [trial], trial)
    failed, _ = stored(engine, sweep_id, 1)
    assert (failed.state, failed.error) == ("failed", "RuntimeError: boom")
    assert failed.error_detail.endswith("RuntimeError: boom") and "\x1b" not in failed.error_detail


def test_a_failed_final_result_is_a_failed_trial_with_the_trainer_s_message(engine, sqlite_url, sweep_id):
    rec = StoreRecorder(sqlite_url, sweep_id, "eval_loss")
    trial = FakeTrial(2)
    rec.on_trial_start(0, [trial], trial)
    trial.last_result = {FINAL_MARKER: "failed", "status": "failed", "reason": DATA_MESSAGE}
    rec.on_trial_complete(1, [trial], trial)
    failed, _ = stored(engine, sweep_id, 2)
    assert (failed.state, failed.error, failed.error_detail, failed.objective) == ("failed", DATA_MESSAGE, None, None)
    assert failed.attempts == 1


# ---- the trainable: a trainer error is a final result, not an exception -------------------------


@pytest.mark.parametrize("error", [DataError(DATA_MESSAGE), ModelLoadError("model.path: nope"),
                                   TrialError("data.train: no usable samples in a.jsonl")])
def test_the_trainable_reports_a_trainer_error_as_a_failed_final_result(monkeypatch, error):
    import trainer.loop

    reported: list[dict] = []
    monkeypatch.setattr(trainable.tune, "report", reported.append)

    def fail(cfg, reporter, **_checkpoints):
        reporter.step({"step": 1, "samples": 8, "loss": 2.0})
        raise error

    monkeypatch.setattr(trainer.loop, "run_trial", fail)
    doc = load_spec(REPO / "examples" / "demo.yaml", check_paths=False).to_stored()
    trainable.run_trial_in_tune({"learning_rate": 1e-3}, spec_doc=doc, db_url="sqlite://", sweep_id="x")
    assert reported[-1] == {"status": "failed", "reason": str(error), FINAL_MARKER: "failed"}


def test_the_trainable_lets_other_crashes_raise(monkeypatch):
    import trainer.loop

    monkeypatch.setattr(trainable.tune, "report", lambda m: None)
    monkeypatch.setattr(trainer.loop, "run_trial", lambda cfg, rep, **_: (_ for _ in ()).throw(RuntimeError("oom")))
    doc = load_spec(REPO / "examples" / "demo.yaml", check_paths=False).to_stored()
    with pytest.raises(RuntimeError, match="oom"):
        trainable.run_trial_in_tune({"learning_rate": 1e-3}, spec_doc=doc, db_url="sqlite://", sweep_id="x")


# ---- the same failure stops the sweep ---------------------------------------------------------


def T(number: int, state: str, error: str | None = None, reason: str | None = None):
    return SimpleNamespace(number=number, state=state, error=error, reason=reason)


@pytest.mark.parametrize("trials, k, verdict", [
    ([], 2, None),
    ([T(1, "failed", "x")], 2, None),  # one of the first two: wait for the second
    ([T(1, "failed", "x"), T(2, "running")], 2, None),
    ([T(1, "failed", "x"), T(2, "failed", "x")], 2, (2, "x")),
    ([T(1, "failed", "x"), T(2, "failed", "x"), T(3, "running")], 2, (2, "x")),
    ([T(1, "failed", "x"), T(2, "failed", "y")], 2, None),  # different messages
    ([T(1, "failed", "x"), T(2, "completed")], 1, None),  # a trial ran: trials can run
    ([T(1, "stopped", reason="pruned"), T(2, "failed", "x"), T(3, "failed", "x")], 2, None),
    ([T(1, "failed", "x")], 1, (1, "x")),  # max_concurrent 1
    ([T(1, "failed", ""), T(2, "failed", "")], 2, None),  # no message to give
])
def test_uniform_failure(trials, k, verdict):
    assert uniform_failure(trials, k) == verdict


def _add(engine, sweep_id, number, state, error=None, reason=None):
    with session_scope(engine) as s:
        repo.upsert_trial(s, sweep_id, number, state=state, error=error, reason=reason, config={})


def test_the_stopper_stops_once_the_first_k_trials_failed_the_same_way(engine, sqlite_url, sweep_id):
    stopper = SameFailureStopper(sqlite_url, sweep_id, k=2)
    stopper.CHECK_EVERY_SECONDS = 0.0
    _add(engine, sweep_id, 1, "failed", DATA_MESSAGE)
    _add(engine, sweep_id, 2, "running")
    assert stopper.stop_all() is False and stopper("t", {}) is False
    _add(engine, sweep_id, 2, "failed", DATA_MESSAGE)
    assert stopper.stop_all() is True
    copy = pickle.loads(pickle.dumps(stopper))  # Ray pickles it with the experiment
    assert (copy._engine, copy._stop) == (None, False)
    extension = SameFailureStopper(sqlite_url, sweep_id, k=2, first_number=3)  # earlier segments don't count
    extension.CHECK_EVERY_SECONDS = 0.0
    assert extension.stop_all() is False


def test_finalize_fails_the_sweep_with_the_one_message(engine, sweep_id):
    spec = load_spec(REPO / "examples" / "demo.yaml", check_paths=False)
    _add(engine, sweep_id, 1, "failed", DATA_MESSAGE)
    _add(engine, sweep_id, 2, "failed", DATA_MESSAGE)
    _add(engine, sweep_id, 3, "stopped")  # stopped with the sweep, not by the pruner
    _add(engine, sweep_id, 4, "running")
    with session_scope(engine) as s:
        doc = finalize_sweep(s, spec, sweep_id)
    assert doc["state"] == "failed" and doc["error"] == f"all 2 trials failed: {DATA_MESSAGE}"
    by_number = {t["number"]: t for t in doc["trials"]}
    assert by_number[1]["reason"] == DATA_MESSAGE
    assert by_number[3]["reason"].startswith("not run to the end: the sweep stopped after 2 trials failed")
    assert by_number[4]["state"] == "failed" and by_number[4]["reason"].startswith("not run to the end")
    with session_scope(engine) as s:
        assert repo.get_sweep(s, sweep_id).error == doc["error"]


def test_finalize_keeps_the_general_error_when_the_failures_differ(engine, sweep_id):
    spec = load_spec(REPO / "examples" / "demo.yaml", check_paths=False)
    _add(engine, sweep_id, 1, "failed", "RuntimeError: a")
    _add(engine, sweep_id, 2, "failed", "RuntimeError: b")
    with session_scope(engine) as s:
        doc = finalize_sweep(s, spec, sweep_id)
    assert doc["error"] == "no trial completed with an objective"
