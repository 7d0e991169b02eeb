"""The one narrow interface between a trial and whoever runs it (Determined's habit).

The runner calls `step(metrics)` after every optimizer step, `final(result)` once at the end, and
asks `should_stop()` between steps. Implementations: in memory (tests, scripted use), JSONL file
(the trainer CLI); the sweep engine adds a Ray Tune one.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Protocol

STEP_KEYS = ("step", "samples", "tokens", "loss", "grad_norm", "lr", "seconds")


class Reporter(Protocol):
    def step(self, metrics: dict) -> None: ...

    def final(self, result: dict) -> None: ...

    def should_stop(self) -> bool: ...


class StopFlag:
    """A stop request that can be set from a signal handler or another thread."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def request(self, *_args) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


class InMemoryReporter:
    """Keeps everything; `stop_after_steps` requests a stop once that many steps are reported."""

    def __init__(self, stop_after_steps: int | None = None) -> None:
        self.steps: list[dict] = []
        self.result: dict | None = None
        self.stop_after_steps = stop_after_steps
        self.stop = StopFlag()

    def step(self, metrics: dict) -> None:
        self.steps.append(dict(metrics))
        if self.stop_after_steps is not None and len(self.steps) >= self.stop_after_steps:
            self.stop.request()

    def final(self, result: dict) -> None:
        self.result = dict(result)

    def should_stop(self) -> bool:
        return self.stop.is_set()


class JsonlReporter:
    """One JSON object per line, flushed every line so a reader can follow along."""

    def __init__(self, path: str | Path, stop: StopFlag | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("w", encoding="utf-8")
        self.stop = stop or StopFlag()

    def _write(self, obj: dict) -> None:
        self._fh.write(json.dumps(obj) + "\n")
        self._fh.flush()

    def step(self, metrics: dict) -> None:
        self._write(metrics)

    def final(self, result: dict) -> None:
        self._write({"event": "final", **result})
        self._fh.close()

    def should_stop(self) -> bool:
        return self.stop.is_set()


class NullReporter:
    """For non-zero ranks: they train but do not report."""

    def step(self, metrics: dict) -> None:
        pass

    def final(self, result: dict) -> None:
        pass

    def should_stop(self) -> bool:
        return False
