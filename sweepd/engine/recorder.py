"""Writes what Ray Tune sees into the store: trial states, metric points, pruner decisions.

Both classes are pickled by Ray into the experiment (tuner.pkl) and brought back on resume, so
they hold only the database URL and open their engine lazily. Metric points are buffered and
written in batches; the store's inserts are idempotent, so a resumed sweep that replays results
writes no duplicate rows. Each point carries its trial's attempt (counted at each start): a retry
resumed from a checkpoint writes from the checkpoint's step on and supersedes the earlier attempt's
points from there (sweepd/store/metric_points.py), so the curve has every step once.

Every store call goes through ``_StoreClient.transact``: one transaction, run again through a
transient database outage (sweepd/store/retry.py), so each is written to be safe to repeat; past
the retry bound it raises StoreUnavailable, which ends the driver without failing the sweep.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from sqlalchemy import select

from sweepd.protocol import FINAL_MARKER, FINISHED_TRIAL_STATES, METRIC_KEYS, NUMBER_KEY, TrialState
from sweepd.store import repo
from sweepd.store.db import make_engine, session_scope
from sweepd.store.models import Trial, utcnow
from sweepd.store.retry import StoreUnavailable, call_with_retry

FLUSH_EVERY_POINTS = 200
FLUSH_EVERY_SECONDS = 2.0
TRACEBACK_LINES = 20  # of a crash's traceback, kept in the trial's error_detail
DETAIL_CHARS = 4000  # and at most this much of them
# The trainer's own errors (trainer.loop.TrialError, trainer.data.DataError,
# trainer.models.ModelLoadError): their message is the whole story, worded for the user.
TRAINER_ERRORS = frozenset({"TrialError", "DataError", "ModelLoadError"})
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
NO_ERROR_TEXT = "trial failed (no error text recorded)"


def trial_number(trial) -> int:
    """The searcher numbers trials 1, 2, 3 ... in its suggestions; stable across a resume."""
    return int(trial.config[NUMBER_KEY])


def trial_key(trial) -> str:
    """The scheduler names trials by number, so decisions carry it."""
    return str(trial_number(trial))


class _StoreClient:
    def __init__(self, db_url: str, sweep_id: str) -> None:
        self.db_url, self.sweep_id = db_url, sweep_id
        self._engine = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_engine"] = None
        return state

    def session(self):
        if self._engine is None:
            self._engine = make_engine(self.db_url)
        return session_scope(self._engine)

    def transact(self, fn, what: str):
        """``fn(session)`` in one transaction, retried through a transient outage."""
        def once():
            with self.session() as s:
                return fn(s)
        return call_with_retry(once, what=f"sweep {self.sweep_id}: {what}")


class DecisionWriter(_StoreClient):
    """The scheduler's on_decision: every decision is an event, with its inputs as payload."""

    def __call__(self, decision) -> None:
        number = int(decision.trial_id)
        payload = {**decision.to_dict(), "trial_number": number}

        def write(s):
            repo.upsert_trial(s, self.sweep_id, number)
            repo.add_event(s, self.sweep_id, "decision", decision.reason,
                           trial_id=repo.trial_id_for(self.sweep_id, number), payload=payload)
            if decision.stop:
                repo.upsert_trial(s, self.sweep_id, number, stopped_at=float(decision.rung_time),
                                  reason=decision.reason)

        self.transact(write, f"decision on trial {number}")


def _final_state(result: dict | None) -> str:
    """A final result's status (completed, diverged, stopped, failed, oom; anything else:
    completed); no final result at all: the trial was stopped."""
    if not result or result.get(FINAL_MARKER) is None:
        return TrialState.stopped.value
    ends = (TrialState.completed, TrialState.diverged, TrialState.stopped, TrialState.failed, TrialState.oom)
    status = result[FINAL_MARKER]
    return status if status in ends else TrialState.completed.value


def strip_ansi(text: str) -> str:
    """Terminal colour codes out (Ray colours its ``ray::ImplicitFunc.train()`` wrapper)."""
    return _ANSI.sub("", text)


def _error_text(trial) -> str:
    path = getattr(trial, "error_file", None)
    if path and Path(path).exists():
        text = strip_ansi(Path(path).read_text(errors="replace")).strip()
        return text[-4000:]
    return NO_ERROR_TEXT


def _pickled_error(trial) -> BaseException | None:
    """The exception Tune pickled for the trial's last failure (a RayTaskError), if any."""
    path = getattr(trial, "pickled_error_file", None)
    if not path or not Path(path).exists():
        return None
    try:
        import ray.cloudpickle as cloudpickle

        with open(path, "rb") as f:
            return cloudpickle.load(f)
    except Exception:  # noqa: BLE001 - unreadable: fall back to the text file
        return None


def root_cause(exc: BaseException) -> BaseException:
    """The user's exception under Ray's wrappers (RayTaskError, TuneError ... via ``.cause``)."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException):
            exc = cause
            continue
        break
    return exc


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def failure_of(exc: BaseException | None, text: str) -> tuple[str, str | None]:
    """(message, detail) of a failed trial, from Ray's pickled exception and/or its error text.

    A trainer error: its own message, no detail. Anything else: "Type: message", and the last
    TRACEBACK_LINES lines of the traceback as the detail. No ANSI codes in either."""
    tb = strip_ansi(text or "").strip()
    if exc is not None:
        cause = root_cause(exc)
        message = strip_ansi(str(cause)).strip()
        name = type(cause).__name__
        if name.startswith("RayTaskError(") and name.endswith(")"):  # Ray's dual class: the cause's name
            name = name[len("RayTaskError("):-1]
        if name in TRAINER_ERRORS or any(c.__name__ in TRAINER_ERRORS for c in type(cause).__mro__):
            return message or NO_ERROR_TEXT, None
        if getattr(exc, "traceback_str", None):
            tb = strip_ansi(exc.traceback_str).strip() or tb
        # a RayTaskError's own str is the wrapper text with the traceback: keep only its last line
        if "Traceback (most recent call last)" in message or message.startswith("ray::"):
            message = _last_line(message)
            if ": " in message:
                return message, _tail(tb)
        return (f"{name}: {message}" if message else name), _tail(tb)
    if not tb:
        return NO_ERROR_TEXT, None
    last = _last_line(tb)
    trainer = re.match(r"^(?:[\w.]*\.)?(%s): (.*)$" % "|".join(sorted(TRAINER_ERRORS)), last)
    if trainer:  # "trainer.data.DataError: train.jsonl:3: ..." -> the trainer's message
        return trainer.group(2).strip() or NO_ERROR_TEXT, None
    return last, _tail(tb)


def _tail(text: str) -> str | None:
    lines = [ln for ln in text.splitlines() if not ln.startswith("Failure # ")]
    tail = "\n".join(lines[-TRACEBACK_LINES:]).strip()
    return tail[-DETAIL_CHARS:] or None


def trial_failure(trial) -> tuple[str, str | None]:
    """(message, detail) for a trial Tune reports as errored."""
    path = getattr(trial, "error_file", None)
    text = Path(path).read_text(errors="replace") if path and Path(path).exists() else ""
    if "Failure # " in text:  # the file accumulates every attempt: keep the last one
        text = "Failure # " + text.rsplit("Failure # ", 1)[1]
    return failure_of(_pickled_error(trial), text)


try:
    from ray.tune import Callback
except ImportError:  # pragma: no cover - ray is a hard dependency
    Callback = object


class StoreRecorder(Callback, _StoreClient):
    def __init__(self, db_url: str, sweep_id: str, objective_metric: str) -> None:
        _StoreClient.__init__(self, db_url, sweep_id)
        self.objective_metric = objective_metric
        self._points: dict[int, list[dict]] = {}
        self._attempts: dict[int, int] = {}  # trial number -> its running attempt (1, 2, ...)
        self._last_flush = time.monotonic()

    def __getstate__(self) -> dict:
        state = _StoreClient.__getstate__(self)
        state["_points"], state["_attempts"] = {}, {}
        return state

    # -- helpers -------------------------------------------------------------------------------

    def _flush(self) -> None:
        if not any(self._points.values()):
            return

        def write(s):  # safe to repeat: points go in ON CONFLICT DO NOTHING, the totals are the last point's
            for number, points in self._points.items():
                if points:
                    trial_id = repo.trial_id_for(self.sweep_id, number)
                    last = points[-1]
                    totals = {"samples": int(last.get("samples") or 0), "tokens": int(last.get("tokens") or 0),
                              "seconds": float(last.get("seconds") or 0)}
                    # one UPDATE for a trial on_trial_start stored (upsert_trial's four statements were a
                    # tenth of the driver's time at 1,000 trials); created here only if it is missing
                    if not repo.set_trial_totals(s, trial_id, **totals):
                        repo.upsert_trial(s, self.sweep_id, number, **totals)
                    repo.add_metric_points(s, trial_id, points)

        self.transact(write, "metric points")  # the buffer is kept until they are stored
        self._points = {}
        self._last_flush = time.monotonic()

    def _attempt(self, number: int) -> int:
        """The attempt a trial's results come from: counted at its start (on_trial_start), else
        (a recorder restored mid-trial) the store's count."""
        if number not in self._attempts:
            def read(s):
                trial = repo.get_trial_by_number(s, self.sweep_id, number)
                return max(1, trial.attempts if trial else 1)

            self._attempts[number] = self.transact(read, f"attempt of trial {number}")
        return self._attempts[number]

    # -- Ray Tune callback hooks ---------------------------------------------------------------

    def on_trial_start(self, iteration, trials, trial, **info):
        number = trial_number(trial)
        config = {k: v for k, v in trial.config.items() if k != NUMBER_KEY}
        decided: dict = {}  # the first try's count: a retry after a commit whose reply was lost must not add one

        def write(s):
            previous = repo.get_trial_by_number(s, self.sweep_id, number)
            if previous is not None and previous.state in FINISHED_TRIAL_STATES:
                return None  # a replay after a resume (see trainable.replay_if_finished)
            if not decided:
                # a resume re-suggested this number with other params: the old curve is not its own
                decided["reset"] = bool(previous is not None and previous.config and previous.config != config)
                decided["attempts"] = 1 if decided["reset"] else (previous.attempts if previous else 0) + 1
            if decided["reset"]:
                repo.delete_metric_points(s, repo.trial_id_for(self.sweep_id, number))
            repo.upsert_trial(s, self.sweep_id, number, config=config, state=TrialState.running,
                              attempts=decided["attempts"], started_at=utcnow())
            return decided["attempts"]

        attempts = self.transact(write, f"start of trial {number}")
        if attempts is None:
            return
        # each attempt's points are kept apart; a retry's steps supersede the earlier attempt's
        # from its first step on (a resumed retry starts after its checkpoint's step)
        self._attempts[number] = attempts

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get(FINAL_MARKER) is not None or "loss" not in result:
            return  # the final result is recorded on completion; interim evals are not curve points
        number = trial_number(trial)
        point = {k: result.get(k) for k in METRIC_KEYS}
        point["attempt"] = self._attempt(number)
        self._points.setdefault(number, []).append(point)
        if (sum(len(p) for p in self._points.values()) >= FLUSH_EVERY_POINTS
                or time.monotonic() - self._last_flush > FLUSH_EVERY_SECONDS):
            self._flush()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._flush()
        result = trial.last_result or {}
        state = _final_state(result)
        fields = {"state": state, "finished_at": utcnow()}
        if state != TrialState.stopped:
            final = {k: v for k, v in result.items() if k not in ("config",) and not isinstance(v, dict)}
            fields.update(metrics_final=final, objective=result.get(self.objective_metric),
                          samples=int(result.get("samples") or 0), tokens=int(result.get("tokens") or 0),
                          seconds=float(result.get("seconds") or 0))
            if state == TrialState.diverged:
                fields["reason"] = result.get("reason")
            if state == TrialState.oom:  # out of memory (engine/oom.py): the reason names the config
                fields.update(objective=None, reason=strip_ansi(str(result.get("reason") or "out of memory")))
            if state == TrialState.failed:  # a trainer error, reported by the trainable (no retry)
                fields.update(objective=None, error=strip_ansi(str(result.get("reason") or NO_ERROR_TEXT)),
                              error_detail=None)

        def write(s):  # safe to repeat: a second try finds the trial finished and leaves it
            previous = repo.get_trial_by_number(s, self.sweep_id, trial_number(trial))
            if previous is not None and previous.state in FINISHED_TRIAL_STATES:
                return  # a replay: the stored outcome stands
            repo.upsert_trial(s, self.sweep_id, trial_number(trial), **fields)

        self.transact(write, f"end of trial {trial_number(trial)}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._flush()
        message, detail = trial_failure(trial)
        finished_at = utcnow()
        self.transact(lambda s: repo.upsert_trial(s, self.sweep_id, trial_number(trial), state=TrialState.failed,
                                                  error=message, error_detail=detail, finished_at=finished_at),
                      f"failure of trial {trial_number(trial)}")

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        """Tune registers a trial's checkpoint after its step's result: the points up to it go to
        the store now, so a resume from it (a retry, or the sweep after a driver crash) leaves no gap."""
        self._flush()

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._flush()
        number = trial_number(trial)
        payload = {"error": _error_text(trial)[-1000:], "message": trial_failure(trial)[0]}
        self.transact(lambda s: repo.add_event(s, self.sweep_id, "state", f"trial {number} crashed; retrying",
                                               trial_id=repo.trial_id_for(self.sweep_id, number), payload=payload),
                      f"retry of trial {number}")

    def on_experiment_end(self, trials, **info):
        self._flush()


try:
    from ray.tune import Stopper
except ImportError:  # pragma: no cover - ray is a hard dependency
    Stopper = object


class SameFailureStopper(Stopper, _StoreClient):
    """Stops the sweep once its first ``k`` finished trials (k = search.max_concurrent) all failed
    with the same message: the next ones would fail the same way (bad data, a bad model path).
    finalize_sweep then fails the sweep with "all k trials failed: <message>". Reads the store,
    at most once a CHECK_EVERY_SECONDS; trials numbered below ``first_number`` (an extension's
    earlier segments) do not count."""

    CHECK_EVERY_SECONDS = 0.25  # a trainer error ends a trial in seconds: look soon

    def __init__(self, db_url: str, sweep_id: str, k: int, first_number: int = 1) -> None:
        _StoreClient.__init__(self, db_url, sweep_id)
        self.k, self.first_number = max(1, int(k)), int(first_number)
        self._last_check = 0.0
        self._stop = False

    def __getstate__(self) -> dict:
        state = _StoreClient.__getstate__(self)
        state["_last_check"], state["_stop"] = 0.0, False
        return state

    def __call__(self, trial_id: str, result: dict) -> bool:
        return self.stop_all()

    def stop_all(self) -> bool:
        now = time.monotonic()
        if not self._stop and now - self._last_check >= self.CHECK_EVERY_SECONDS:
            self._last_check = now
            try:
                self._stop = self.verdict() is not None
            except StoreUnavailable:  # down past the retry bound: the driver steps aside
                raise
            except Exception:  # noqa: BLE001 - anything else: look again next time
                pass
        return self._stop

    def finished(self) -> bool:
        """Looked up now (the searcher asks before each suggestion): launch no more trials?"""
        if not self._stop:
            try:
                self._stop = self.verdict() is not None
            except StoreUnavailable:
                raise
            except Exception:  # noqa: BLE001 - anything else: launch; the stopper looks again
                pass
        return self._stop

    def verdict(self) -> tuple[int, str] | None:
        from types import SimpleNamespace

        from sweepd.engine.finalize import uniform_failure

        rows = self.transact(lambda s: s.execute(
            select(Trial.number, Trial.state, Trial.error, Trial.reason)
            .where(Trial.sweep_id == self.sweep_id, Trial.number >= self.first_number)).all(), "same-failure check")
        trials = [SimpleNamespace(number=n, state=st, error=err, reason=why) for n, st, err, why in rows]
        return uniform_failure(trials, self.k)
