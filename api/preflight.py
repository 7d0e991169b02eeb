"""The data preflight of submitted sweeps, off the request: POST /sweeps stores a sweep in state
``validating`` and hands it here; a worker thread reads every train and eval file with the model's
tokenizer (trainer/preflight.py, cached under ``SWEEPD_HOME/preflight``) and then

- moves the sweep to ``queued`` with the preflight's summary as its "data" event (the supervisor
  starts only queued sweeps, so no trial runs before this), or
- marks it ``failed`` with the preflight's first ``file:line: reason`` as its error (every error
  line in an "error" event), and no trial is ever launched.

Both transitions are compare-and-set from ``validating``: a sweep cancelled meanwhile stays
cancelled. ``cancel(sweep_id)`` also stops its preflight at the next sample, and ``close()`` (the
app shutting down) stops them all, leaving their sweeps ``validating``: ``resume()``, run at every
startup, validates the sweeps it finds in that state again (a restarted server picks up where a
crashed one left off; a cached report makes that instant).

One worker owns a small thread pool (``MAX_WORKERS`` preflights at once; more wait their turn,
still ``validating``). ``run`` is the preflight itself, ``(spec, cache_dir, chat) -> report``
(``chat`` the tokenizer; ``chat.stopped()`` says whether to give up: raise PreflightStopped): a
seam tests replace to make it slow or to watch it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from sweepd.protocol import SweepState
from sweepd.spec import SweepSpec
from sweepd.store import repo
from sweepd.store.db import session_scope

log = logging.getLogger("sweepd.api.preflight")

MAX_WORKERS = 2
MAX_ERROR_EVENTS = 20  # error lines kept in the failure's event payload
KEEP_FUTURES = 256  # finished preflights' futures kept (for tests and callers to wait on)


class PreflightStopped(Exception):
    """The sweep was cancelled, or the server is shutting down: the scan ends where it is."""


class _Stoppable:
    """A ChatTokenizer whose ``encode`` (called once per sample) raises PreflightStopped once
    ``stopped()`` is true; everything else passes through to the real one."""

    def __init__(self, chat: Any, stopped: Callable[[], bool]) -> None:
        self._chat, self.stopped = chat, stopped

    def encode(self, messages: list[dict]) -> tuple[list[int], list[int]]:
        if self.stopped():
            raise PreflightStopped
        return self._chat.encode(messages)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._chat, name)


_imports = threading.Lock()


def import_tokenizer_code() -> None:
    """Import what loading a tokenizer needs (torch, transformers' lazy AutoTokenizer), one
    thread at a time: two threads importing these at once can see a half-initialised module
    ("cannot import name 'AutoTokenizer'"). Instant once done; call it before loading one."""
    with _imports:
        import transformers

        import trainer.models  # noqa: F401  (the builtin tokenizer)
        import trainer.preflight  # noqa: F401

        transformers.AutoTokenizer  # noqa: B018  (resolves the lazy attribute now)


def run_preflight(spec: SweepSpec, cache_dir: Path, chat: Any) -> dict[str, Any]:
    """The real data preflight (trainer/preflight.py) of a spec's data."""
    from trainer.preflight import preflight

    return preflight(spec.data, spec.model.path, cache_dir=cache_dir, chat=chat)


def error_text(errors: list[str]) -> str:
    """The sweep's error: the first error line, and how many more there are."""
    more = len(errors) - 1
    return errors[0] + (f" (and {more} more data error{'s' if more > 1 else ''})" if more > 0 else "")


class PreflightWorker:
    """Runs data preflights of ``validating`` sweeps in worker threads (see the module docstring)."""

    def __init__(self, sessions: sessionmaker[Session], home: str | Path, *, max_workers: int = MAX_WORKERS,
                 run: Callable[[SweepSpec, Path, Any], dict[str, Any]] = run_preflight) -> None:
        self.sessions = sessions
        self.cache_dir = Path(home) / "preflight"
        self.run = run
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="sweepd-preflight")
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._stops: dict[str, threading.Event] = {}
        self.futures: dict[str, Future] = {}  # the latest preflight of each sweep (tests wait on them)

    # ---- what the app calls ----------------------------------------------------------------

    @staticmethod
    def warm_up() -> threading.Thread:
        """Import the tokenizer code (transformers, torch: seconds) in a daemon thread, so that
        the first POST /sweeps after a start does not wait for it."""

        def imports() -> None:
            try:
                import_tokenizer_code()
            except Exception:  # noqa: BLE001 - the first preflight will say what is wrong
                log.debug("warming up the preflight imports failed", exc_info=True)

        thread = threading.Thread(target=imports, name="sweepd-preflight-imports", daemon=True)
        thread.start()
        return thread

    def submit(self, sweep_id: str, spec: SweepSpec, chat: Any = None) -> Future | None:
        """Validate the sweep's data in a worker thread; ``chat``: its tokenizer, when already
        loaded (else loaded there). None when the worker is closed."""
        stop = threading.Event()
        with self._lock:
            if self._closing.is_set():
                return None
            self._stops[sweep_id] = stop
            future = self._pool.submit(self._job, sweep_id, spec, chat, stop)
            if len(self.futures) >= KEEP_FUTURES:  # forget finished ones: a long-running server
                for done in [k for k, f in self.futures.items() if f.done()]:
                    del self.futures[done]
            self.futures[sweep_id] = future
        return future

    def cancel(self, sweep_id: str) -> None:
        """Stop the sweep's preflight, if one runs (the sweep was cancelled)."""
        with self._lock:
            stop = self._stops.get(sweep_id)
        if stop is not None:
            stop.set()

    def resume(self) -> list[str]:
        """Validate again every sweep left ``validating`` (a server stopped or crashed during its
        preflight); their ids. A stored spec that cannot be read fails its sweep."""
        with session_scope(self.sessions) as s:
            left = repo.list_sweeps(s, state=SweepState.validating, limit=10_000).items
            todo = [(sw.id, sw.spec) for sw in sorted(left, key=lambda sw: sw.created_at)]
        ids = []
        for sweep_id, stored in todo:
            try:
                spec = SweepSpec.from_stored(stored)
            except Exception as err:  # noqa: BLE001 - an unreadable spec fails its sweep, not the startup
                self._fail(sweep_id, f"cannot read the stored spec: {type(err).__name__}: {err}", [])
                continue
            with session_scope(self.sessions) as s:
                repo.add_event(s, sweep_id, "info", "server restarted during the data preflight; validating again")
            self.submit(sweep_id, spec)
            ids.append(sweep_id)
        if ids:
            log.info("validating the data of %d sweep(s) again: %s", len(ids), ", ".join(ids))
        return ids

    @property
    def closed(self) -> bool:
        return self._closing.is_set()

    def close(self, wait: bool = True) -> None:
        """Stop every preflight at its next sample and wait for the threads; their sweeps stay
        ``validating`` (the next startup resumes them)."""
        with self._lock:
            self._closing.set()
        self._pool.shutdown(wait=wait, cancel_futures=True)

    # ---- one preflight ---------------------------------------------------------------------

    def _job(self, sweep_id: str, spec: SweepSpec, chat: Any, stop: threading.Event) -> str | None:
        """Run the preflight and move the sweep on; returns the state it moved to (None: it did not)."""
        from trainer.data import DataError

        def stopped() -> bool:
            return stop.is_set() or self._closing.is_set()

        t0 = time.perf_counter()
        try:
            if stopped():
                return None
            if chat is None:
                import_tokenizer_code()
                from trainer.preflight import load_chat_tokenizer

                chat = load_chat_tokenizer(spec.model.path)
            report = self.run(spec, self.cache_dir, _Stoppable(chat, stopped))
        except PreflightStopped:
            log.info("data preflight of sweep %s stopped after %.1f s", sweep_id, time.perf_counter() - t0)
            return None
        except DataError as err:  # the tokenizer no longer loads (a resumed sweep)
            return self._fail(sweep_id, str(err), [str(err)])
        except Exception as err:  # noqa: BLE001 - never leave a sweep validating for ever
            log.exception("data preflight of sweep %s crashed", sweep_id)
            return self._fail(sweep_id, f"data preflight crashed: {type(err).__name__}: {err}", [])
        finally:
            with self._lock:
                if self._stops.get(sweep_id) is stop:
                    del self._stops[sweep_id]
        seconds = time.perf_counter() - t0
        if report.get("errors"):
            log.info("data preflight of sweep %s: %d error(s) in %.1f s", sweep_id, len(report["errors"]), seconds)
            return self._fail(sweep_id, error_text(report["errors"]), report["errors"])
        try:
            return self._queue(sweep_id, report, seconds)
        except Exception:  # a database error: the sweep stays validating and the next start resumes it
            log.exception("cannot queue sweep %s after its data preflight", sweep_id)
            return None

    def _queue(self, sweep_id: str, report: dict[str, Any], seconds: float) -> str | None:
        from trainer.preflight import summary

        took = "cached" if report.get("cached") else f"{seconds:.1f} s"
        with session_scope(self.sessions) as s:
            done = repo.set_sweep_state(s, sweep_id, SweepState.queued, only_from=[SweepState.validating],
                                        message=f"data preflight passed ({took}): sweep queued")
            if done is None:  # cancelled meanwhile: it stays so
                return None
            repo.add_preflight_event(s, sweep_id, summary(report))
        log.info("data preflight of sweep %s passed in %s: queued", sweep_id, took)
        return SweepState.queued.value

    def _fail(self, sweep_id: str, error: str, errors: list[str]) -> str | None:
        try:
            return self._record_failure(sweep_id, error, errors)
        except Exception:  # a database error: the sweep stays validating and the next start resumes it
            log.exception("cannot mark sweep %s failed after its data preflight", sweep_id)
            return None

    def _record_failure(self, sweep_id: str, error: str, errors: list[str]) -> str | None:
        with session_scope(self.sessions) as s:
            done = repo.set_sweep_state(s, sweep_id, SweepState.failed, error=error,
                                        only_from=[SweepState.validating],
                                        message=f"data preflight failed: {error}")
            if done is None:
                return None
            if errors:
                n = len(errors)
                repo.add_event(s, sweep_id, "error",
                               f"data preflight: {n} data error{'s' if n != 1 else ''}; no trial was started",
                               payload={"errors": errors[:MAX_ERROR_EVENTS], "count": n})
        return SweepState.failed.value
