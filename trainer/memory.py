"""What a trial does to fit in GPU memory: activation checkpointing, ZeRO offload, its optimizer.

(The loss that never holds the whole micro-batch's fp32 logits is in `loss.py`; whether a trial
fits, and so what `activation_checkpointing: auto` means, is `fit.py`'s.)
"""

from __future__ import annotations

import logging

import torch

from .config import TrialConfig
from .fit import checkpointing_wanted

log = logging.getLogger(__name__)


class MemorySetupError(Exception):
    """A memory setting the model cannot honour (the loop reports it as a TrialError)."""


def device_memory_gb(cfg: TrialConfig, device: torch.device) -> float | None:
    """resources.gpu_memory_gb, else the GPU's own; None on CPU."""
    if cfg.resources.gpu_memory_gb is not None:
        return cfg.resources.gpu_memory_gb
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory / 2**30
    return None


def apply_activation_checkpointing(model, cfg: TrialConfig, device: torch.device) -> bool:
    """Recompute each decoder layer's activations in the backward pass when `fit` says so.

    Non-reentrant checkpointing (`use_reentrant: False`): it works with ZeRO 0-3 (ZeRO-3 gathers a
    layer's parameters again in its recomputed forward) and needs no input that requires grad."""
    if not checkpointing_wanted(cfg, model.config.to_dict(), device_memory_gb(cfg, device)):
        return False
    if not getattr(model, "supports_gradient_checkpointing", False):
        problem = f"{type(model).__name__} does not support activation checkpointing"
        if cfg.resources.activation_checkpointing is True:
            raise MemorySetupError(f"resources.activation_checkpointing: {problem}")
        log.warning("%s; the trial runs without it", problem)
        return False
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return True


def offload_config(offload: str, on_gpu: bool) -> dict:
    """The `zero_optimization` keys for resources.offload (its ZeRO stage is checked in config.py).

    Pinned host memory speeds the copies to and from a GPU; on a CPU-only trial there is no device
    to copy to (the offload code path still runs), so nothing is pinned."""
    target = {"device": "cpu", "pin_memory": on_gpu}
    out: dict = {}
    if offload in ("optimizer", "optimizer+params"):
        out["offload_optimizer"] = dict(target)
    if offload == "optimizer+params":
        out["offload_param"] = dict(target)
    return out


def make_optimizer(model, cfg: TrialConfig, on_gpu: bool) -> torch.optim.Optimizer:
    """AdamW. With optimizer offload on a GPU: DeepSpeed's CPU Adam when its C++ op loads.

    Offloaded, the optimizer steps the fp32 master weights in host memory: DeepSpeedCPUAdam does
    that with SIMD C++ several times faster than torch.optim.AdamW (for a 7B model that is seconds
    per step). DeepSpeed is installed without prebuilt ops (DS_BUILD_OPS=0), so the op is compiled
    on first use (gcc + ninja; under a minute on an H100 node and on a 2-core CPU box, then cached
    under ~/.cache/torch_extensions); where that fails, torch's AdamW runs instead, which DeepSpeed
    accepts with `zero_force_ds_cpu_optimizer: false` (see `deepspeed_config`). On a CPU-only trial
    offload moves nothing and the models are small, so the compile would cost more than it saves:
    torch's AdamW there. (Both give the same steps: tests/trainer/test_memory.py on CPU, and on an
    H100 the same loss and grad norm, to bf16 precision, with and without offload.)"""
    opt = cfg.optimizer
    kwargs = dict(lr=cfg.hparams.learning_rate, betas=tuple(opt.betas), eps=opt.eps,
                  weight_decay=opt.weight_decay)
    if cfg.resources.offload != "none" and on_gpu:
        try:
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            return DeepSpeedCPUAdam(model.parameters(), adamw_mode=True, **kwargs)
        except Exception as err:  # the op's compile failed: no compiler, headers or CUDA libraries
            log.warning("DeepSpeed's CPU Adam is not available (%s); offloading with torch.optim.AdamW",
                        str(err).splitlines()[0] if str(err) else type(err).__name__)
    return torch.optim.AdamW(model.parameters(), **kwargs)
