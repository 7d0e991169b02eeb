"""The grid the curve bank covers, and how its runs are named.

48 configs (3 batch sizes x 4 learning rates x 2 warmups x 2 schedules) at seed 0, plus a second
seed for the 12 batch x learning-rate cells at no warmup and a constant schedule (the seed noise).
"""

from __future__ import annotations

import itertools

BATCH_SIZES = (8, 32, 128)  # 16x span
LEARNING_RATES = (2e-4, 1e-3, 4e-3, 2e-2)  # two decades
WARMUPS = (0, 10)  # optimizer steps
SCHEDULES = ("constant", "cosine")
BUDGET_SAMPLES = 4096  # every config sees the same number of samples (a multiple of every batch)
SEEDS = (0, 1)


def run_id(batch: int, lr: float, warmup: int, schedule: str, seed: int = 0) -> str:
    """b32_lr4e-03_w0_constant_s0"""
    return f"b{batch}_lr{lr:.0e}_w{warmup}_{schedule}_s{seed}"


def config_id(batch: int, lr: float, warmup: int, schedule: str) -> str:
    """The config without its seed: b32_lr4e-03_w0_constant"""
    return run_id(batch, lr, warmup, schedule).rsplit("_s", 1)[0]


def grid_configs() -> list[dict]:
    """The 48 seed-0 configs, in a fixed order."""
    return [
        {"batch": b, "lr": lr, "warmup": w, "schedule": s, "seed": 0}
        for b, lr, w, s in itertools.product(BATCH_SIZES, LEARNING_RATES, WARMUPS, SCHEDULES)
    ]


def noise_configs() -> list[dict]:
    """Second-seed runs: every batch x lr at warmup 0, constant."""
    return [
        {"batch": b, "lr": lr, "warmup": 0, "schedule": "constant", "seed": 1}
        for b, lr in itertools.product(BATCH_SIZES, LEARNING_RATES)
    ]


def all_runs() -> list[dict]:
    """Everything the bank holds, seed-0 grid first (so an interrupted run has the grid)."""
    return grid_configs() + noise_configs()
