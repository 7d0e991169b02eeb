"""Throughput and memory of a training step: tokens per second, MFU and peak memory.

Every step line the trainer reports carries three keys from here:

- ``tokens_per_second``: the step's real (non-pad) tokens, summed over all workers, divided by the
  step's wall-clock seconds (the slowest worker's: a step ends when every worker has finished it).
  The whole step counts: planning and collating its micro-batches, forward, backward and the
  optimizer step.
- ``mfu`` (model FLOPs utilisation): ``6 * params * tokens_per_second / (peak * workers)``, where
  ``6 * params`` FLOPs per token is the usual dense-transformer estimate for a forward and backward
  pass (attention's own FLOPs and activation recomputation are not counted, so MFU at long
  sequence lengths reads a little low) and ``peak`` is the device's dense bf16 peak in FLOP/s from
  ``PEAK_BF16_FLOPS`` (vendor datasheets, without sparsity). ``None`` on CPU and on a GPU whose name
  matches no entry of the table (``SWEEPD_PEAK_FLOPS``, a number of FLOP/s in the environment, sets
  the peak for such a device, or overrides the table).
- ``peak_memory_gb``: on GPU ``torch.cuda.max_memory_allocated`` (tensors allocated by PyTorch, the
  peak since the process started; the allocator's cache and the CUDA context are not included); on
  CPU the process's peak resident set size (``ru_maxrss``), which includes the Python interpreter and
  every library loaded. The largest over all workers. GB here are 2**30 bytes (GiB, as PyTorch and
  ``nvidia-smi`` count them).
"""

from __future__ import annotations

import os
import re
import sys
import time

import torch

GIB = float(2**30)

# Dense bf16 tensor-core peak per device, FLOP/s, from the vendors' datasheets (no sparsity).
# Matched in order against the lower-cased ``torch.cuda.get_device_name``: the first pattern found
# wins, so more specific names (H100 PCIe, H100 NVL) come before the generic one.
PEAK_BF16_FLOPS: tuple[tuple[str, str, float], ...] = (
    # (regex, what it is, peak FLOP/s)
    (r"\bh100\b.*\bpcie\b", "H100 PCIe", 756e12),
    (r"\bh100\b.*\bnvl\b", "H100 NVL", 835e12),
    (r"\bh100\b", "H100 SXM", 989e12),  # "NVIDIA H100 80GB HBM3"
    (r"\bh200\b.*\bnvl\b", "H200 NVL", 835e12),
    (r"\bg?h200\b", "H200 / GH200", 989e12),
    (r"\bh800\b.*\bpcie\b", "H800 PCIe", 756e12),
    (r"\bh800\b", "H800 SXM", 989e12),
    (r"\bh20\b", "H20", 148e12),
    (r"\bb200\b", "B200", 2250e12),
    (r"\ba100\b", "A100", 312e12),  # SXM and PCIe alike
    (r"\ba800\b", "A800", 312e12),
    (r"\ba10g\b", "A10G", 125e12),
    (r"\ba10\b", "A10", 125e12),
    (r"\ba30\b", "A30", 165e12),
    (r"\ba40\b", "A40", 149.7e12),
    (r"\bl40s\b", "L40S", 362e12),
    (r"\bl40\b", "L40", 181e12),
    (r"\bl4\b", "L4", 121e12),
    (r"\brtx 4090\b", "GeForce RTX 4090", 165e12),
    (r"\brtx 3090\b", "GeForce RTX 3090", 71e12),
    (r"\bmi300x\b", "AMD MI300X", 1307e12),
    (r"\bmi250x?\b", "AMD MI250X", 383e12),
)
# Not in the table on purpose: V100 and T4 have no bf16 tensor cores (their MFU would mislead).


def peak_flops(device_name: str | None) -> float | None:
    """The dense bf16 peak FLOP/s of a device from its name, or None when the name is unknown.

    ``SWEEPD_PEAK_FLOPS`` (FLOP/s) overrides the table for any GPU name (not for ``None``: CPU)."""
    if device_name is None:
        return None
    override = os.environ.get("SWEEPD_PEAK_FLOPS")
    if override:
        try:
            value = float(override)
        except ValueError:
            value = 0.0
        if value > 0:
            return value
    name = device_name.lower()
    for pattern, _, flops in PEAK_BF16_FLOPS:
        if re.search(pattern, name):
            return flops
    return None


def device_peak_flops(device: torch.device) -> float | None:
    """The peak of the device a worker trains on: None on CPU."""
    if device.type != "cuda":
        return None
    return peak_flops(torch.cuda.get_device_name(device))


def mfu(params: int, tokens_per_second: float, peak: float | None, workers: int = 1) -> float | None:
    """Model FLOPs utilisation: 6 * params * tokens/s over the peak of all workers together."""
    if peak is None or peak <= 0 or workers < 1:
        return None
    return 6.0 * params * tokens_per_second / (peak * workers)


def count_params(model: torch.nn.Module) -> int:
    """All parameters (shared ones once), also after ZeRO-3 partitioned them (``ds_numel``)."""
    return sum(int(getattr(p, "ds_numel", p.numel())) for p in model.parameters())


def peak_rss_gb() -> float:
    """This process's peak resident set size in GiB (Linux reports KiB, macOS bytes)."""
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / GIB if sys.platform == "darwin" else rss * 1024 / GIB


def peak_memory_gb(device: torch.device) -> float:
    """GPU: the peak of PyTorch's allocations on the device; CPU: the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / GIB
    return peak_rss_gb()


class StepMeter:
    """Times steps and turns (tokens, seconds) into the three step-line keys.

    ``start()`` at the top of a step, ``measure(tokens)`` once the step's tokens are summed over the
    workers. With several workers the step's seconds and peak memory are the largest over them
    (one small all-reduce per step, on the device the process group works on)."""

    def __init__(self, model: torch.nn.Module, device: torch.device, world: int = 1) -> None:
        self.device = device
        self.world = world
        self.params = count_params(model)
        self.peak = device_peak_flops(device)
        self._t0 = time.perf_counter()

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def measure(self, tokens: int) -> dict:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the optimizer step's kernels are in the step too
        seconds = time.perf_counter() - self._t0
        memory = peak_memory_gb(self.device)
        if self.world > 1:
            import torch.distributed as dist

            t = torch.tensor([seconds, memory], dtype=torch.float64, device=self.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            seconds, memory = float(t[0].item()), float(t[1].item())
        tps = tokens / seconds if seconds > 0 else 0.0
        util = mfu(self.params, tps, self.peak, self.world)
        return {"tokens_per_second": round(tps, 2),
                "mfu": None if util is None else round(util, 5),
                "peak_memory_gb": round(memory, 4)}
