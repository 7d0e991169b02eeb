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


# ---- the night bank (issue 12): "last night's sweep" and tonight's -----------------------------
#
# The same base model, a fine learning-rate range x a few batch sizes, recorded twice: night 1
# and night 2 fine-tune on two disjoint halves of one larger draw of the synthetic data (the
# same made-up people the base model was pretrained on, the same kinds of skill task) and are
# judged on the same eval set. That is what a nightly sweep sees: fresh data from the same
# source, the same model and the same objective.

NIGHT_BATCH_SIZES = (8, 16, 32, 64)  # 8x span
# 10 rates log-spaced over two decades, 3e-4 ... 3e-2 (factor 10**(2/9) ~ 1.67 apart): the old
# grid's 2e-4 was too low and 2e-2 too high for every batch size, its best near 1e-3 ... 4e-3
NIGHT_LEARNING_RATES = tuple(float(f"{3e-4 * 10 ** (2 * k / 9):.3g}") for k in range(10))
NIGHTS = (1, 2)
NIGHT_BUDGET_SAMPLES = 2048  # a multiple of every batch size


def night_config_id(batch: int, lr: float) -> str:
    """b16_lr1.39e-03 (the same config on both nights)."""
    return f"b{batch}_lr{lr:.2e}"


def night_run_id(night: int, batch: int, lr: float) -> str:
    """n1_b16_lr1.39e-03"""
    return f"n{night}_{night_config_id(batch, lr)}"


def night_runs() -> list[dict]:
    """Night 1's 40 configs, then night 2's; no warmup, a constant schedule, trainer seed 0."""
    return [
        {"night": n, "batch": b, "lr": lr, "warmup": 0, "schedule": "constant", "seed": 0}
        for n in NIGHTS for b in NIGHT_BATCH_SIZES for lr in NIGHT_LEARNING_RATES
    ]


def ids_of(run: dict) -> tuple[str, str]:
    """(run id, config id) of a run of either bank."""
    if "night" in run:
        return (night_run_id(run["night"], run["batch"], run["lr"]),
                night_config_id(run["batch"], run["lr"]))
    return (run_id(run["batch"], run["lr"], run["warmup"], run["schedule"], run["seed"]),
            config_id(run["batch"], run["lr"], run["warmup"], run["schedule"]))
