"""What a spec is checked against: the cluster's ``Capacity`` and the ``Context`` of one
validation (check the filesystem or not, the data roots, the directory relative paths start in).

The context travels in pydantic's validation context as ``{"sweepd": Context(...)}``;
``context_of(info)`` reads it back in a validator (a fresh default one when there is none).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationInfo


@dataclass(frozen=True)
class Capacity:
    """What the cluster has; a trial needing more than this could never be scheduled."""

    cpus: float
    gpus: float
    gpu_memory_gb: float | None = None  # GiB per GPU, for the fit check; None: unknown

    @classmethod
    def detect(cls) -> "Capacity":
        """This machine: os.cpu_count() CPUs, torch.cuda.device_count() GPUs and the first one's
        memory."""
        memory = None
        try:
            import torch

            gpus = torch.cuda.device_count()
            if gpus:
                memory = torch.cuda.get_device_properties(0).total_memory / 2**30
        except Exception:  # no torch, or a broken CUDA install: no GPUs
            gpus = 0
        return cls(cpus=os.cpu_count() or 1, gpus=gpus, gpu_memory_gb=memory)

    @classmethod
    def unlimited(cls) -> "Capacity":
        return cls(cpus=math.inf, gpus=math.inf)


@dataclass
class Context:
    """How one validation judges a spec.

    ``stored``: the document is a spec validated before (``SweepSpec.from_stored``): rebuild it
    as it is; no check across sections runs and no path is resolved again (on a worker node the
    paths, roots and capacity can legitimately differ from where it was validated)."""

    check_paths: bool = True
    capacity: Capacity | None = None
    base_dir: Path | None = None
    data_roots: list[Path] | None = None
    stored: bool = False

    def roots(self) -> list[Path]:
        if self.data_roots is None:
            from sweepd.settings import get_settings

            self.data_roots = list(get_settings().resolved_data_roots)
        return [Path(r).expanduser().resolve() for r in self.data_roots]

    def cap(self) -> Capacity:
        if self.capacity is None:
            self.capacity = Capacity.detect()
        return self.capacity

    def base(self) -> Path:
        return Path(self.base_dir) if self.base_dir is not None else Path.cwd()


def context_of(info: ValidationInfo | None) -> Context:
    ctx = info.context if info is not None and isinstance(info.context, dict) else {}
    found = ctx.get("sweepd")
    return found if isinstance(found, Context) else Context()
