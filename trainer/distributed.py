"""Process-group set-up for one trial, and a local launcher for `num_workers > 1`.

A trial runs either in-process (1 worker), under a launcher that sets RANK/WORLD_SIZE/MASTER_* (our
own `launch_local`, torchrun, or Ray Train, which also creates the process group itself).
Backend: gloo on CPU, NCCL on GPU.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass

import torch


@dataclass
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pick_device(requested: str, local_rank: int) -> torch.device:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def setup(requested_device: str = "auto") -> DistInfo:
    """Join (or create) the process group; a lone process becomes a world of one."""
    import torch.distributed as dist

    defaults = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": os.environ.get("RANK", "0"),
                "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    added = [k for k in defaults if k not in os.environ]
    for k in added:
        os.environ[k] = defaults[k]
    local_rank = int(os.environ["LOCAL_RANK"])
    device = pick_device(requested_device, local_rank)
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed

    try:
        if not dist.is_initialized():
            deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo",
                                       verbose=False)
    finally:
        # A lone process made up its rendezvous port; a child process must not inherit it.
        for k in ("MASTER_ADDR", "MASTER_PORT"):
            if k in added:
                os.environ.pop(k, None)
    return DistInfo(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank, device=device)


def launch_local(num_workers: int, argv: list[str]) -> int:
    """Run `python -m trainer <argv>` as `num_workers` processes on this machine; worst exit code wins."""
    port = str(free_port())
    procs = []
    for rank in range(num_workers):
        env = dict(os.environ, SWEEPD_TRAINER_WORKER="1", RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(num_workers),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        procs.append(subprocess.Popen([sys.executable, "-m", "trainer", *argv], env=env))
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        codes = [p.wait() for p in procs]
    return max(codes, key=abs)
