"""Will the trial fit in GPU memory? A per-GPU peak-memory estimate from the model's config.json.

(Stub: the estimator is being written; until then `checkpointing_wanted` honours only an explicit
``resources.activation_checkpointing: true``.)
"""

from __future__ import annotations


def checkpointing_wanted(cfg, model_config: dict | None = None, gpu_memory_gb: float | None = None) -> bool:
    """Whether the trial runs with activation checkpointing: true/false as set; auto: when the
    estimate says the trial would not fit in ``gpu_memory_gb`` without it."""
    setting = cfg.resources.activation_checkpointing
    return setting is True
