"""Read the curve bank: ``load_bank()`` -> ``Bank`` with one ``Run`` per recorded fine-tuning run.

The stored file is gzip JSONL: a ``meta`` line, then one ``run`` line each::

    {"kind": "run", "id": "b32_lr4e-03_w0_constant_s0", "config_id": "b32_lr4e-03_w0_constant",
     "config": {"batch": 32, "lr": 0.004, "warmup": 0, "schedule": "constant", "seed": 0},
     "steps": {"step": [...], "samples": [...], "tokens": [...], "loss": [...],
               "grad_norm": [...], "lr": [...], "seconds": [...]},
     "final": {"eval_loss": ..., "exact_match": ..., "mc_accuracy": ..., "by_domain": {...},
               "train_seconds": ..., "wall_seconds": ..., ...}}

``seconds`` is cumulative training time at each step; ``wall_seconds`` the whole run (model
load, DeepSpeed set-up, training, final evaluation).
"""

from __future__ import annotations

import gzip
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BANK_PATH = ROOT / "benchmarks" / "data" / "curve_bank.jsonl.gz"
NIGHT_BANK_PATH = ROOT / "benchmarks" / "data" / "night_bank.jsonl.gz"  # issue 12: night 1 + night 2
ALGOPERF_DIR = ROOT / "benchmarks" / "data" / "algoperf"  # issue 12: converted AlgoPerf curves

# objective -> mode (the trainer's final metrics)
OBJECTIVES = {"eval_loss": "min", "exact_match": "max", "mc_accuracy": "max"}
MODES = {**OBJECTIVES, "val_loss": "min", "train_loss_at_budget": "min"}  # + the AlgoPerf banks'
OBJECTIVE_LABELS = {
    "eval_loss": "eval loss",
    "val_loss": "validation loss at the step budget",
    "train_loss_at_budget": "training loss at the step budget (mean of the last 1,000 steps)",
    "exact_match": "skill exact match",
    "mc_accuracy": "knowledge retention (MC accuracy)",
}


@dataclass
class Run:
    id: str
    config_id: str
    config: dict
    steps: dict[str, list]  # column -> per-step values
    final: dict
    seconds_total: float = 0.0  # how long the run held its worker, start to finish

    def __post_init__(self) -> None:
        if not self.seconds_total:
            self.seconds_total = float(self.final.get("wall_seconds") or self.steps["seconds"][-1])

    @property
    def budget(self) -> int:
        return int(self.steps["samples"][-1])

    @property
    def n_steps(self) -> int:
        return len(self.steps["step"])

    def objective(self, name: str) -> float | None:
        value = self.final.get(name)
        return None if value is None or not math.isfinite(value) else float(value)

    def step_result(self, k: int) -> dict:
        """The k-th (0-based) optimizer step as the trainer reported it."""
        return {key: col[k] for key, col in self.steps.items()}

    def signal_at(self, feature: str, samples: float, window: int = 5) -> float | None:
        """Median of ``feature`` over the last ``window`` steps reported at or before ``samples``
        (what a pruner with that smoothing window records at a rung there)."""
        seen = [i for i, s in enumerate(self.steps["samples"]) if s <= samples]
        if not seen:
            return None
        values = [self.steps[feature][i] for i in seen[-window:]]
        values = [math.inf if v is None else v for v in values]
        med = statistics.median(values)
        return med if math.isfinite(med) else None


@dataclass
class Bank:
    meta: dict
    runs: list[Run]
    by_id: dict[str, Run] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_id = {r.id: r for r in self.runs}

    def grid(self, seed: int = 0) -> list[Run]:
        """One run per config: the given seed's."""
        return [r for r in self.runs if r.config.get("seed", 0) == seed]

    def night(self, night: int) -> list[Run]:
        """The night bank's runs of one night (1 or 2), one per config."""
        return [r for r in self.runs if r.config.get("night") == night]

    def pairs(self) -> list[tuple[Run, Run]]:
        """(seed 0, seed 1) runs of every config recorded twice."""
        first = {r.config_id: r for r in self.grid(0)}
        return [(first[r.config_id], r) for r in self.grid(1) if r.config_id in first]


def run_from_dict(d: dict) -> Run:
    return Run(id=d["id"], config_id=d.get("config_id", d["id"]), config=d["config"],
               steps=d["steps"], final=d["final"])


def load_bank(path: str | Path = BANK_PATH) -> Bank:
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    meta: dict = {}
    runs: list[Run] = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            d = json.loads(line)
            if d.get("kind") == "meta":
                meta = d
            else:
                runs.append(run_from_dict(d))
    return Bank(meta=meta, runs=runs)
