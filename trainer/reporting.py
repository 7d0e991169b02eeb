"""The one narrow interface between a trial and whoever runs it (Determined's habit).

The runner calls `step(metrics)` after every optimizer step, `final(result)` once at the end, and
asks `should_stop()` between steps. A reporter may also have `checkpoint(path)`: the next `step()`
carries the resumable checkpoint written in folder `path` (trainer/checkpoint.py); one that stores
it elsewhere (Ray Tune) may remove the folder once that report is sent. Implementations: in memory (tests, scripted use), JSONL file
(the trainer CLI); the sweep engine adds a Ray Tune one.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Protocol

# One line per optimizer step; the last three are the step's throughput and memory (trainer/throughput.py:
# real tokens per second over all workers, model FLOPs utilisation or None on CPU and unknown GPUs,
# peak memory in GiB: GPU allocations, or the process's peak RSS on CPU).
STEP_KEYS = ("step", "samples", "tokens", "loss", "grad_norm", "lr", "seconds",
             "tokens_per_second", "mfu", "peak_memory_gb")


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
        self.checkpoints: list[tuple[int, str]] = []  # (step, folder) of each checkpoint handed over
        self._checkpoint: str | None = None

    def checkpoint(self, path: str) -> None:
        self._checkpoint = path

    def step(self, metrics: dict) -> None:
        self.steps.append(dict(metrics))
        if self._checkpoint is not None:
            self.checkpoints.append((int(metrics["step"]), self._checkpoint))
            self._checkpoint = None
        if self.stop_after_steps is not None and len(self.steps) >= self.stop_after_steps:
            self.stop.request()

    def final(self, result: dict) -> None:
        self.result = dict(result)

    def should_stop(self) -> bool:
        return self.stop.is_set()


class JsonlReporter:
    """One JSON object per line, flushed every line so a reader can follow along.

    `keep_through_step` (a resumed run): the file's lines up to and including that step are
    kept and the new ones follow, so the file has every step once."""

    def __init__(self, path: str | Path, stop: StopFlag | None = None, keep_through_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = _lines_through(self.path, keep_through_step) if keep_through_step is not None else []
        self._fh = self.path.open("w", encoding="utf-8")
        self._fh.writelines(kept)
        self._fh.flush()
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


def _lines_through(path: Path, step: int) -> list[str]:
    """The lines of an earlier run's metrics file up to `step` (no final line, no torn last line)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    kept = []
    for line in lines:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and obj.get("event") != "final" and isinstance(obj.get("step"), int) \
                and obj["step"] <= step:
            kept.append(line + "\n")
    return kept


class NullReporter:
    """For non-zero ranks: they train but do not report."""

    def step(self, metrics: dict) -> None:
        pass

    def final(self, result: dict) -> None:
        pass

    def should_stop(self) -> bool:
        return False
