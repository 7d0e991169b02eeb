"""LR schedules: transformers' own, with linear warmup. `constant` here means constant after warmup."""

from __future__ import annotations

from transformers import get_scheduler

_NAMES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}


def make_scheduler(optimizer, name: str, warmup_steps: int, total_steps: int):
    if name not in _NAMES:
        raise ValueError(f"hparams.lr_scheduler: unknown schedule {name!r} (known: {', '.join(_NAMES)})")
    return get_scheduler(_NAMES[name], optimizer, num_warmup_steps=warmup_steps,
                         num_training_steps=total_steps)
