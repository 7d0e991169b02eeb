"""A trial that runs out of memory: its own trial state, ``oom``, not a crash to retry.

The same config would run out of memory again, so the trainable (engine/trainable.py) ends the
trial with a final result of status ``oom`` (no objective; Optuna records it as FAIL, see
engine/search.py) and a reason that names the step, the config that decides memory and what to
change, e.g.

    out of memory at step 3 with micro_batch_tokens 16384, max_seq_len 4096, zero_stage 2, offload
    none, activation checkpointing off, 8 workers (estimated ~128.1 GiB per GPU): CUDA out of
    memory. Tried to allocate 2.00 GiB ...; try resources.activation_checkpointing: true, a smaller
    resources.micro_batch_tokens, resources.zero_stage: 3, resources.offload: optimizer

Caught: ``torch.OutOfMemoryError`` (``torch.cuda.OutOfMemoryError`` is the same class; the CPU
allocator raises it too) and Python's ``MemoryError``.
"""

from __future__ import annotations

MAX_ERROR_CHARS = 300


def oom_errors() -> tuple[type[BaseException], ...]:
    import torch

    return (torch.OutOfMemoryError, MemoryError)


def _checkpointing(cfg) -> bool | None:
    try:
        from trainer.fit import checkpointing_wanted

        return checkpointing_wanted(cfg)
    except Exception:  # noqa: BLE001 - the reason is still worth writing without it
        return None


def _estimate(cfg, checkpointing: bool | None) -> str:
    try:
        from trainer.fit import estimate_trial

        est = estimate_trial(cfg, checkpointing=bool(checkpointing))
    except Exception:  # noqa: BLE001 - no config.json, an odd shape: no estimate to quote
        return ""
    where = "per GPU" if est.precision == "bf16" else "on CPU"
    return f" (estimated ~{est.gib:.1f} GiB {where})"


def oom_reason(err: BaseException, cfg, done_steps: int) -> str:
    """The sentence an ``oom`` trial stores: where (the step after the ``done_steps`` reported),
    with which memory settings, the error's first line, and the changes that lower memory (those
    not already made)."""
    r = cfg.resources
    ckpt = _checkpointing(cfg)
    size = f"micro_batch_size {r.micro_batch_size}" if r.micro_batch_size else f"micro_batch_tokens {r.micro_batch_tokens}"
    ckpt_text = {True: "on", False: "off", None: str(r.activation_checkpointing)}[ckpt]
    setting = (f"{size}, max_seq_len {cfg.data.max_seq_len}, zero_stage {r.zero_stage}, offload {r.offload}, "
               f"activation checkpointing {ckpt_text}, {r.num_workers} worker{'s' if r.num_workers != 1 else ''}")
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    first = (lines[0].rstrip(".") if lines else type(err).__name__)[:MAX_ERROR_CHARS]
    tries = []
    if ckpt is not True:
        tries.append("resources.activation_checkpointing: true")
    tries.append("a smaller " + ("resources.micro_batch_size" if r.micro_batch_size else "resources.micro_batch_tokens"))
    if r.zero_stage < 3:
        tries.append("resources.zero_stage: 3")
    if r.offload == "none":
        tries.append("resources.offload: optimizer")
    elif r.offload == "optimizer" and r.zero_stage == 3:
        tries.append("resources.offload: optimizer+params")
    tries.append("more resources.workers_per_trial")
    where = f"at step {done_steps + 1}" if done_steps > 0 else "in step 1 (or while setting up)"
    return f"out of memory {where} with {setting}{_estimate(cfg, ckpt)}: {first}; try {', '.join(tries)}"


def report_oom(reporter, err: BaseException, cfg) -> None:
    """End the trial with a final result of status oom (no objective, no retry)."""
    done = int(getattr(reporter, "last_step", 0) or 0)  # TuneReporter keeps the last step it reported
    reason = oom_reason(err, cfg, done)
    release_memory()
    reporter.final({"status": "oom", "reason": reason, "steps": done})


def release_memory() -> None:
    """Give the cached GPU memory back, so the process that reports is not the next to fail."""
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - best effort
        pass
