"""Resumable trial checkpoints: everything a trial needs to continue as if it had not stopped.

A checkpoint holds the DeepSpeed engine's state (weights, the optimizer's moments and step counts,
the LR scheduler: ``engine.save_checkpoint``) and the trainer's own (steps done, samples and tokens
seen, training seconds so far, the position in the sample order with a digest of the whole order,
and every rank's RNG states: torch CPU and CUDA, Python, NumPy). Resuming from it continues the
same sample order, LR schedule and random streams, so the steps after a resume match an
uninterrupted run's (tests/trainer/test_checkpoint_resume.py).

One checkpoint is one folder, written under a temporary name and renamed into place once complete
(nanoGPT's habit), so a process killed while writing leaves nothing that looks resumable:

    <root>/step-00000012/
        trainer_state.json      TrainerState: what the loop continues from (written last)
        rng/rank-0.pt           the RNG states of each rank
        deepspeed/...           engine.save_checkpoint(<folder>, tag="deepspeed")
        latest                  DeepSpeed's pointer to that tag

The loop writes a checkpoint when `resources.checkpoint_every` says so ({samples: N}: each time
the samples seen reach the next multiple of N; {minutes: M}: M minutes after the last one or the
start), never after the last step, and only before the step is reported: the reporter is handed
the folder with the step (``reporter.checkpoint(path)``; Ray Tune persists it with that result),
and the folder is renamed into place only after the report, so a checkpoint on disk always has its
step line before it. Ranks may share the root (a local multi-process launch: one rank renames) or
each have their own (Ray Train: every worker hands in its own files, Ray merges them).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

FORMAT = 1
STATE_FILE = "trainer_state.json"
DS_TAG = "deepspeed"
PREFIX = "step-"
TMP_SUFFIX = ".tmp"


class CheckpointError(Exception):
    """A checkpoint that cannot be resumed from here: missing, incomplete, or of another plan."""


@dataclass
class TrainerState:
    """The loop's own state after `step` optimizer steps."""

    step: int  # optimizer steps done; the next one is step + 1
    samples: int  # samples seen (all workers)
    tokens: int  # real tokens seen (all workers)
    seconds: float  # training seconds so far: the step lines' cumulative clock goes on from here
    order_position: int  # index in the sample order of the next step's first sample
    order_digest: str  # of the whole sample order: a checkpoint of another plan is refused
    planned_steps: int
    effective_batch_size: int
    world: int  # ZeRO partitions are per rank: resume with as many ranks
    format: int = FORMAT

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict) -> "TrainerState":
        names = {f.name for f in fields(cls)}
        missing = names - set(doc) - {"format"}
        if missing:
            raise CheckpointError(f"{STATE_FILE}: missing {', '.join(sorted(missing))}")
        return cls(**{k: v for k, v in doc.items() if k in names})


def order_digest(order: list[int]) -> str:
    return hashlib.sha256(",".join(map(str, order)).encode()).hexdigest()[:16]


# ---- finding and reading checkpoints (no torch) ----------------------------------------------

def is_checkpoint(path: str | Path) -> bool:
    return (Path(path) / STATE_FILE).is_file()


def checkpoints_in(root: str | Path) -> list[Path]:
    """The complete checkpoints in a root folder, oldest first (by the step in their names).
    Temporary folders of an interrupted write, and folders without a state file, never count."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        number = p.name[len(PREFIX):]
        if p.name.startswith(PREFIX) and number.isdigit() and is_checkpoint(p):
            found.append((int(number), p))
    return [p for _, p in sorted(found)]


def find_latest(path: str | Path) -> Path | None:
    """``path`` itself when it is a checkpoint, else the newest complete checkpoint in it (a
    checkpoint root), else None."""
    path = Path(path)
    if is_checkpoint(path):
        return path
    done = checkpoints_in(path)
    return done[-1] if done else None


def read_state(path: str | Path) -> TrainerState:
    file = Path(path) / STATE_FILE
    try:
        doc = json.loads(file.read_text())
    except OSError as err:
        raise CheckpointError(f"{path}: not a trial checkpoint ({file.name}: {err.strerror})") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{file}: not valid JSON ({err.msg})") from None
    if not isinstance(doc, dict):
        raise CheckpointError(f"{file}: expected an object")
    if doc.get("format", FORMAT) != FORMAT:
        raise CheckpointError(f"{file}: checkpoint format {doc.get('format')}, this trainer reads {FORMAT}")
    return TrainerState.from_json(doc)


def check_compatible(state: TrainerState, expected: TrainerState, where: str | Path) -> None:
    """The checkpoint continues this very plan: same order, batch, steps and number of ranks."""
    for name, what in (("order_digest", "sample order (data, seed or strategy differ)"),
                       ("effective_batch_size", "effective batch size"), ("planned_steps", "planned steps"),
                       ("world", "number of workers")):
        got, want = getattr(state, name), getattr(expected, name)
        if got != want:
            raise CheckpointError(f"{where}: written for another {what}: {got!r} there, {want!r} here")
    if not 0 <= state.step <= expected.planned_steps or state.order_position != state.step * state.effective_batch_size:
        raise CheckpointError(f"{where}: step {state.step} does not fit this plan of {expected.planned_steps} steps")


# ---- when to write -----------------------------------------------------------------------------

class Schedule:
    """`resources.checkpoint_every`: {samples: N} or {minutes: M} (an object with those attributes)."""

    def __init__(self, every: Any, *, samples: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_samples = getattr(every, "samples", None)
        self.every_minutes = getattr(every, "minutes", None)
        if (self.every_samples is None) == (self.every_minutes is None):
            raise ValueError("checkpoint_every: give exactly one of minutes, samples")
        self.clock = clock
        self.mark(samples)

    @property
    def timed(self) -> bool:
        return self.every_minutes is not None

    def mark(self, samples: int) -> None:
        """A checkpoint was written (or the run started, or resumed) at `samples`."""
        self.last_samples, self.last_time = samples, self.clock()

    def due(self, samples: int) -> bool:
        if self.every_samples is not None:
            return samples // self.every_samples > self.last_samples // self.every_samples
        return self.clock() - self.last_time >= self.every_minutes * 60.0


# ---- RNG states ----------------------------------------------------------------------------------

def rng_state() -> dict:
    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---- writing -------------------------------------------------------------------------------------

def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


class Checkpointer:
    """Writes a trial's checkpoints into `root` on the schedule of `every`.

    Every rank calls `due`, `write` and `commit` in step (ZeRO saves collectively). Ranks that
    share a folder (same host, same path) elect one of them to rename and prune it."""

    def __init__(self, root: str | Path, every: Any, *, plan: TrainerState, rank: int, world: int,
                 keep: int = 1, agree: Callable[[bool], bool] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.root = Path(root).resolve()
        self.plan, self.rank, self.world, self.keep = plan, rank, world, max(0, keep)
        self.schedule = Schedule(every, samples=plan.samples, clock=clock)
        self.agree = agree or (lambda flag: flag)
        self.owner = self._elect_owner()
        self._pending: Path | None = None
        self._pending_step = 0
        if self.owner:
            self.root.mkdir(parents=True, exist_ok=True)
            for stale in self.root.glob(f"{PREFIX}*{TMP_SUFFIX}"):  # an interrupted write
                shutil.rmtree(stale, ignore_errors=True)

    def _elect_owner(self) -> bool:
        key = (socket.gethostname(), str(self.root))
        if self.world == 1:
            return True
        import torch.distributed as dist

        keys: list = [None] * self.world
        dist.all_gather_object(keys, key)
        return keys.index(key) == self.rank

    def due(self, samples: int) -> bool:
        flag = self.schedule.due(samples)
        # clocks differ between ranks: when any rank's says so, every rank writes (a collective save)
        return self.agree(flag) if self.schedule.timed and self.world > 1 else flag

    def write(self, engine, reporter, *, step: int, samples: int, tokens: int, seconds: float) -> Path:
        """The engine's and the loop's state after `step`, into a temporary folder handed to the
        reporter (``reporter.checkpoint(path)``, if it has that method) with the step's report."""
        import torch

        state = TrainerState(**{**self.plan.to_json(), "step": step, "samples": samples, "tokens": tokens,
                                "seconds": round(seconds, 6), "order_position": step * self.plan.effective_batch_size})
        tmp = self.root / f"{PREFIX}{step:08d}{TMP_SUFFIX}"
        if self.owner and tmp.exists():
            shutil.rmtree(tmp)
        _barrier(self.world)
        (tmp / DS_TAG).mkdir(parents=True, exist_ok=True)
        engine.save_checkpoint(str(tmp), tag=DS_TAG, client_state={"sweepd_trainer_state": state.to_json()})
        (tmp / "rng").mkdir(exist_ok=True)
        torch.save(rng_state(), tmp / "rng" / f"rank-{self.rank}.pt")
        _barrier(self.world)
        if self.owner:  # last: its presence marks the folder complete
            part = tmp / (STATE_FILE + ".part")
            part.write_text(json.dumps(state.to_json(), indent=1))
            os.replace(part, tmp / STATE_FILE)
        _barrier(self.world)
        self._pending, self._pending_step = tmp, step
        self.schedule.mark(samples)
        handoff = getattr(reporter, "checkpoint", None)
        if handoff is not None:
            handoff(str(tmp))
        return tmp

    def commit(self) -> Path | None:
        """After the step's report: rename the checkpoint into place and keep the newest `keep`.
        A reporter that stored the files elsewhere (Ray) may have removed the folder already."""
        tmp, step = self._pending, self._pending_step
        self._pending = None
        if tmp is None:
            return None
        _barrier(self.world)
        final = self.root / f"{PREFIX}{step:08d}"
        if self.owner and tmp.exists():
            if self.keep == 0:
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                if final.exists():
                    shutil.rmtree(final)
                tmp.rename(final)
                self._prune()
        _barrier(self.world)
        return final if final.exists() else None

    def _prune(self) -> None:
        done = checkpoints_in(self.root)
        for old in done[: max(0, len(done) - self.keep)]:
            shutil.rmtree(old, ignore_errors=True)


# ---- loading -------------------------------------------------------------------------------------

def load(engine, path: str | Path, *, expected: TrainerState, rank: int) -> TrainerState:
    """Restore the engine (weights, optimizer, LR scheduler) and this rank's RNGs from the
    checkpoint at `path`; returns the loop state to continue from. Raises CheckpointError."""
    import torch

    path = Path(path)
    state = read_state(path)
    check_compatible(state, expected, path)
    load_path, _ = engine.load_checkpoint(str(path), tag=DS_TAG, load_optimizer_states=True,
                                          load_lr_scheduler_states=True)
    if load_path is None:
        raise CheckpointError(f"{path}: DeepSpeed found no checkpoint under tag {DS_TAG!r}")
    rng = path / "rng" / f"rank-{rank}.pt"
    if not rng.is_file():
        rng = path / "rng" / "rank-0.pt"
    if rng.is_file():
        set_rng_state(torch.load(rng, weights_only=False))
    return state


# ---- the loop's entry point ------------------------------------------------------------------------

def setup_checkpoints(engine, optimizer, cfg, *, order: list[int], steps: int, rank: int, world: int,
                      checkpoint_dir: str | Path | None, resume_from: str | Path | None,
                      agree: Callable[[bool], bool] | None = None) -> tuple[TrainerState | None, Checkpointer | None]:
    """For run_trial, once the engine exists: resume from `resume_from` (a checkpoint, or a root
    holding some: the newest; a root with none: a fresh start), and make the Checkpointer that
    writes into `checkpoint_dir` on `cfg.resources.checkpoint_every` (None without both)."""
    batch = cfg.hparams.effective_batch_size
    plan = TrainerState(step=0, samples=0, tokens=0, seconds=0.0, order_position=0, order_digest=order_digest(order),
                        planned_steps=steps, effective_batch_size=batch, world=world)
    resumed = None
    if resume_from is not None:
        if not Path(resume_from).exists():
            raise CheckpointError(f"{resume_from}: no such checkpoint or folder")
        found = find_latest(resume_from)
        if found is not None:
            resumed = load(engine, found, expected=plan, rank=rank)
            # the optimizer's groups carry the LR of the step that comes next (a ZeRO optimizer's
            # state may not restore it): the scheduler, restored, knows it
            sched = getattr(engine, "lr_scheduler", None)
            if sched is not None:
                for group, lr in zip(optimizer.param_groups, sched.get_last_lr()):
                    group["lr"] = lr
            plan = TrainerState(**{**plan.to_json(), "step": resumed.step, "samples": resumed.samples,
                                   "tokens": resumed.tokens, "seconds": resumed.seconds,
                                   "order_position": resumed.order_position})
    every = cfg.resources.checkpoint_every
    checkpointer = None
    if checkpoint_dir is not None and every is not None:
        checkpointer = Checkpointer(checkpoint_dir, every, plan=plan, rank=rank, world=world, agree=agree)
    return resumed, checkpointer
