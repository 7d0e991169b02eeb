"""Recorded training runs for ``builtin:replay``: read a curve bank, find the run nearest a
trial's hyperparameters, and pick the steps a replay reports.

A bank is gzip (or plain) JSONL in the format of benchmarks/data/README.md: a ``meta`` line,
then one ``run`` line per recorded run, ``{"id", "config", "steps": {column: [...]}, "final"}``.
Two config layouts are read:

- the curve and night banks: ``config: {batch, lr, warmup, schedule, seed}``;
- the AlgoPerf banks: ``config: {hparams: {learning_rate, ...} | null, seed}`` with the batch in
  the ``meta`` line (``batch_size``); they record no warmup in steps and no schedule name, and a
  self-tuning run has no hyperparameters at all (it can only be replayed by its id).

Their objectives are renamed to the trainer's: ``val_loss`` -> ``eval_loss``,
``train_loss_at_budget`` -> ``train_loss``. Pure Python: no torch, no numpy.
"""

from __future__ import annotations

import difflib
import gzip
import json
import math
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from .data import DataError
from .replay_config import BUILTIN_CURVES

OBJECTIVE_KEYS = ("eval_loss", "exact_match", "mc_accuracy", "train_loss")
FINAL_ALIASES = {"val_loss": "eval_loss", "train_loss_at_budget": "train_loss"}
REQUIRED_COLUMNS = ("step", "samples", "loss")
SHOWN_IDS = 8  # run ids an error message lists


class ReplayError(DataError):
    """A problem with the recorded curves or the replay's settings, worded for the user. A
    DataError (the curves are what a replay reads), so every caller that reports the trainer's
    data errors as messages (the trainer CLI, the sweep engine's recorder) reports these too."""


@dataclass(frozen=True)
class Curve:
    id: str
    hparams: dict[str, Any]  # batch, lr, warmup, schedule, seed: None where the bank has none
    steps: dict[str, list]  # column -> one value per recorded step
    final: dict[str, float]  # the recorded objective metrics, in the trainer's names

    @property
    def n_steps(self) -> int:
        return len(self.steps["step"])

    def column(self, name: str) -> list | None:
        return self.steps.get(name)


@dataclass
class CurveBank:
    path: Path
    meta: dict
    curves: list[Curve]
    by_id: dict[str, Curve] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_id = {c.id: c for c in self.curves}

    def metrics(self) -> set[str]:
        """The objective metrics every run recorded."""
        return set.intersection(*(set(c.final) for c in self.curves)) if self.curves else set()

    def run(self, run_id: str) -> Curve:
        if run_id in self.by_id:
            return self.by_id[run_id]
        close = difflib.get_close_matches(run_id, list(self.by_id), n=3)
        hint = (f"did you mean {', '.join(map(repr, close))}?" if close
                else f"known: {', '.join(list(self.by_id)[:SHOWN_IDS])}"
                     + (f" ... ({len(self.by_id)} runs)" if len(self.by_id) > SHOWN_IDS else ""))
        builtin = next((name for name, p in BUILTIN_CURVES.items() if p == self.path), self.path)
        raise ReplayError(f"model.replay.run: no run {run_id!r} in {self.path.name}; {hint}. "
                          f"List them all: python -m trainer.replay runs {builtin}")

    def nearest(self, batch: int, lr: float, warmup: int, schedule: str, seed: int = 0) -> Curve:
        """The run nearest these hyperparameters: Euclidean distance over log learning rate, log
        batch and warmup, each divided by its span in the bank, plus 1 for another schedule; a
        value the run did not record counts as a full span away. Ties: the trial's seed, then id."""
        mappable = [c for c in self.curves if c.hparams.get("lr")] or self.curves
        spans = {
            "lr": _span([math.log(c.hparams["lr"]) for c in mappable if c.hparams.get("lr")]),
            "batch": _span([math.log(c.hparams["batch"]) for c in mappable if c.hparams.get("batch")]),
            "warmup": _span([c.hparams["warmup"] for c in mappable if c.hparams.get("warmup") is not None]),
        }
        wanted = {"lr": math.log(lr), "batch": math.log(batch), "warmup": warmup}

        def distance(c: Curve) -> float:
            h = c.hparams
            have = {"lr": math.log(h["lr"]) if h.get("lr") else None,
                    "batch": math.log(h["batch"]) if h.get("batch") else None,
                    "warmup": h.get("warmup")}
            d = 0.0
            for key, span in spans.items():
                d += 1.0 if have[key] is None else ((wanted[key] - have[key]) / span) ** 2
            d += 0.0 if h.get("schedule") == schedule else 1.0
            return d

        return min(mappable, key=lambda c: (round(distance(c), 12), c.hparams.get("seed") != seed, c.id))


def _span(values: list[float]) -> float:
    """A dimension's spread in the bank (1 when it has one value, so it adds nothing)."""
    if not values or max(values) == min(values):
        return 1.0
    return max(values) - min(values)


# ---- reading a bank ---------------------------------------------------------------------------


def load_curves(path: str | Path) -> CurveBank:
    """The bank at ``path`` (read once per process while the file is unchanged)."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as err:
        raise ReplayError(f"model.replay.curves: cannot read {path} ({err.strerror})") from None
    if not path.is_file():
        raise ReplayError(f"model.replay.curves: {path} is not a file")
    return _load(str(path), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=8)
def _load(path: str, _mtime_ns: int, _size: int) -> CurveBank:
    p = Path(path)
    opener = gzip.open if _is_gzip(p) else open
    meta: dict = {}
    curves: list[Curve] = []
    try:
        with opener(p, "rt", encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    d = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ReplayError(f"{p}:{n}: not valid JSON ({err.msg})") from None
                if not isinstance(d, dict):
                    raise ReplayError(f"{p}:{n}: expected a JSON object, got {type(d).__name__}")
                if d.get("kind") == "meta":
                    meta = d
                else:
                    curves.append(_curve(d, meta, f"{p}:{n}"))
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as err:
        raise ReplayError(f"model.replay.curves: cannot read {p}: {err}") from None
    if not curves:
        raise ReplayError(f"model.replay.curves: {p} holds no recorded runs (see benchmarks/data/README.md)")
    return CurveBank(path=p, meta=meta, curves=curves)


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _curve(d: dict, meta: dict, where: str) -> Curve:
    steps = d.get("steps")
    if not isinstance(d.get("id"), str) or not isinstance(steps, dict):
        raise ReplayError(f"{where}: a run needs an 'id' and a 'steps' mapping of columns")
    missing = [c for c in REQUIRED_COLUMNS if not isinstance(steps.get(c), list) or not steps[c]]
    if missing:
        raise ReplayError(f"{where}: run {d['id']!r} has no steps.{', steps.'.join(missing)}")
    lengths = {k: len(v) for k, v in steps.items() if isinstance(v, list)}
    if len(set(lengths.values())) != 1:
        raise ReplayError(f"{where}: run {d['id']!r} has columns of different lengths {lengths}")
    final = {}
    for key, value in (d.get("final") or {}).items():
        name = FINAL_ALIASES.get(key, key)
        if name in OBJECTIVE_KEYS and isinstance(value, (int, float)) and math.isfinite(value):
            final[name] = float(value)
    return Curve(id=d["id"], hparams=_hparams(d.get("config") or {}, meta), steps=steps, final=final)


def _hparams(config: dict, meta: dict) -> dict[str, Any]:
    if "lr" in config or "batch" in config:  # the curve and night banks
        return {"batch": config.get("batch"), "lr": config.get("lr"), "warmup": config.get("warmup"),
                "schedule": config.get("schedule"), "seed": config.get("seed", 0)}
    hp = config.get("hparams") or {}  # AlgoPerf: one batch per workload; no warmup steps, no schedule name
    return {"batch": meta.get("batch_size"), "lr": hp.get("learning_rate"), "warmup": None, "schedule": None,
            "seed": config.get("seed", 0)}


# ---- which steps a replay reports -------------------------------------------------------------


def budget_end(curve: Curve, max_steps: int | None, max_samples: int | None) -> int:
    """How many recorded steps fit the trial's budget (at least one): steps up to ``max_steps``,
    or up to ``max_samples`` samples (as the trainer does: whole steps within the budget)."""
    if max_steps is not None:
        col, limit = curve.steps["step"], max_steps
    elif max_samples is not None:
        col, limit = curve.steps["samples"], max_samples
    else:
        return curve.n_steps
    return max(1, sum(1 for v in col if v <= limit))


def resample(n: int, max_reports: int | None) -> list[int]:
    """Indices of at most ``max_reports`` of ``n`` steps, evenly spaced, the last one kept."""
    if max_reports is None or max_reports >= n:
        return list(range(n))
    return [math.ceil((k + 1) * n / max_reports) - 1 for k in range(max_reports)]
