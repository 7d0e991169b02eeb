"""The training loop: one trial, top to bottom.

setup -> load model and data -> plan the sample order -> DeepSpeed engine -> for each step: run its
micro-batches, one optimizer step, report -> evaluate -> save -> final report.

Loss of a step = sum of token losses over the whole effective batch / number of loss tokens in it.
Each micro-batch backpropagates its summed loss times world/N; DeepSpeed averages gradients over
the world, which leaves exactly d(sum)/N. The accumulation boundary is set explicitly because the
number of micro-batches per step depends on packing.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch
import torch.distributed as dist

from . import distributed, throughput
from .batching import (
    collate,
    one_row,
    plan_step,
    sample_order,
    steps_for_budget,
)
from .checkpoint import CheckpointError, setup_checkpoints
from .config import TrialConfig
from .data import ChatTokenizer, DataError, SkipReport, load_eval_items, load_samples
from .evaluation import evaluate
from .loss import summed_loss  # chunked head + cross-entropy: never the micro-batch's full fp32 logits
from .memory import MemorySetupError, apply_activation_checkpointing, make_optimizer, offload_config
from .models import load_model
from .replay_config import REPLAY_MODEL
from .reporting import NullReporter, Reporter
from .schedules import make_scheduler


class TrialError(Exception):
    """A problem with the trial's inputs, reported to the user without a traceback."""


def deepspeed_config(cfg: TrialConfig, world: int, on_gpu: bool) -> dict:
    return {
        "train_micro_batch_size_per_gpu": 1,  # nominal: we form micro-batches ourselves
        "gradient_accumulation_steps": 1,  # and set the accumulation boundary explicitly
        "train_batch_size": world,
        "gradient_clipping": cfg.optimizer.grad_clip,
        "zero_optimization": {"stage": cfg.resources.zero_stage,
                              "stage3_gather_16bit_weights_on_model_save": True,
                              **offload_config(cfg.resources.offload, on_gpu)},
        "bf16": {"enabled": on_gpu},
        "zero_allow_untested_optimizer": True,
        # offload with torch's AdamW where DeepSpeed's CPU Adam op is not built (memory.make_optimizer)
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 10**12,
        "wall_clock_breakdown": False,
    }


def grad_norm_stage0(model) -> float:
    """DeepSpeed reports no norm at stage 0; after the boundary backward, grads are all-reduced."""
    sq = torch.zeros((), dtype=torch.float64)
    for p in model.parameters():
        if p.grad is not None:
            sq += p.grad.detach().double().pow(2).sum().cpu()
    return math.sqrt(sq.item())


def _any_rank(flag: bool, world: int, device: torch.device | None = None) -> bool:
    if world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)  # NCCL reduces only CUDA tensors
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.item() > 0


def _finite(x: float) -> bool:
    return not (math.isnan(x) or math.isinf(x))


def _load_data(cfg: TrialConfig, chat: ChatTokenizer, skips: SkipReport):
    phases = sorted({f.phase for f in cfg.data.train}) if cfg.data.strategy == "phased" else [None]
    samples, sizes = [], []
    for ph in phases:
        files = [f.path for f in cfg.data.train if ph is None or f.phase == ph]
        part = load_samples(files, chat, cfg.data.max_seq_len, lenient=cfg.data.lenient, skips=skips,
                            overlong=cfg.data.overlong)
        if not part:
            raise TrialError(f"data.train: no usable samples in {', '.join(files)}")
        samples.extend(part)
        sizes.append(len(part))
    eval_items = load_eval_items([f.path for f in cfg.data.eval], lenient=cfg.data.lenient, skips=skips)
    return samples, sizes, eval_items


def run_trial(cfg: TrialConfig, reporter: Reporter, *, checkpoint_dir: str | Path | None = None,
              resume_from: str | Path | None = None) -> dict:
    """One trial. `checkpoint_dir`: where `resources.checkpoint_every` writes checkpoints (none
    without it); `resume_from`: a checkpoint (trainer/checkpoint.py) to continue from."""
    if cfg.model.path == REPLAY_MODEL:  # recorded curves, no training (trainer/replay.py)
        from .replay import replay_trial

        return replay_trial(cfg, reporter)
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    info = distributed.setup(cfg.resources.device)
    import deepspeed

    is_main = info.rank == 0
    # Most reporters listen to rank 0 only; one that sets `all_ranks` (Ray Train) hears every rank.
    rep = reporter if is_main or getattr(reporter, "all_ranks", False) else NullReporter()
    on_gpu = info.device.type == "cuda"
    dtype = torch.bfloat16 if on_gpu else torch.float32

    torch.manual_seed(cfg.seed)
    loaded = load_model(cfg.model.path, seed=cfg.seed, dtype=dtype)
    tok = loaded.tokenizer
    chat = ChatTokenizer(tok)
    skips = SkipReport()
    try:
        samples, sizes, eval_items = _load_data(cfg, chat, skips)
    except DataError as err:
        raise TrialError(str(err)) from None

    batch = cfg.hparams.effective_batch_size
    steps = steps_for_budget(cfg.budget, len(samples), batch)
    order = sample_order(sizes, steps, batch, cfg.seed, cfg.data.strategy)
    mbt = None if cfg.resources.micro_batch_tokens == "auto" else cfg.resources.micro_batch_tokens

    model = loaded.model
    try:
        apply_activation_checkpointing(model, cfg, info.device)
    except MemorySetupError as err:
        raise TrialError(str(err)) from None
    optimizer = make_optimizer(model, cfg, on_gpu)
    scheduler = make_scheduler(optimizer, cfg.hparams.lr_scheduler, cfg.hparams.warmup_steps, steps)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=deepspeed_config(cfg, info.world, on_gpu))
    engine.train()
    meter = throughput.StepMeter(engine.module, info.device, info.world)

    status, reason, done_steps = "completed", None, 0
    seen_samples = seen_tokens = 0
    t_start = time.perf_counter()
    last_loss = float("nan")
    try:  # a checkpoint to continue from (its step, counts and clock), and the one that writes them
        resumed, checkpointer = setup_checkpoints(
            engine, optimizer, cfg, order=order, steps=steps, rank=info.rank, world=info.world,
            checkpoint_dir=checkpoint_dir, resume_from=resume_from,
            agree=lambda flag: _any_rank(flag, info.world, info.device))
    except CheckpointError as err:
        raise TrialError(str(err)) from None
    if resumed is not None:
        done_steps, seen_samples, seen_tokens = resumed.step, resumed.samples, resumed.tokens
        t_start -= resumed.seconds
    for step in range(done_steps, steps):
        meter.start()
        plan = plan_step(order, step, batch, samples, rank=info.rank, world=info.world,
                         max_seq_len=cfg.data.max_seq_len, micro_batch_tokens=mbt,
                         micro_batch_size=cfg.resources.micro_batch_size)
        scale = info.world / max(1, plan.global_loss_tokens)
        local_sum, local_tokens = 0.0, 0
        lr = optimizer.param_groups[0]["lr"]
        gnorm = None
        for m in range(plan.num_micro_steps):
            last = m == plan.num_micro_steps - 1
            engine.set_gradient_accumulation_boundary(last)
            if m < len(plan.micro):
                rows = plan.micro[m]
                b = collate([[samples[i] for i in row] for row in one_row(rows)], tok.pad_token_id).to(info.device)
                loss_sum = summed_loss(engine, b)
                engine.backward(loss_sum * scale)
                local_sum += loss_sum.item()
                local_tokens += b.real_tokens
            else:  # this worker ran out of micro-batches: a zero-weight pass keeps collectives in step
                first = plan.micro[0][0][0] if plan.micro else order[step * batch]
                b = collate([[samples[first]]], tok.pad_token_id).to(info.device)
                engine.backward(summed_loss(engine, b) * 0.0)
            if last and cfg.resources.zero_stage == 0:
                gnorm = grad_norm_stage0(engine.module)
            engine.step()
        if gnorm is None:
            g = engine.get_global_grad_norm()
            gnorm = float(g) if g is not None else float("nan")

        totals = torch.tensor([local_sum, float(local_tokens)], dtype=torch.float64, device=info.device)
        if info.world > 1:
            dist.all_reduce(totals)
        loss = totals[0].item() / max(1, plan.global_loss_tokens)
        seen_samples += plan.global_samples
        seen_tokens += int(totals[1].item())
        perf = meter.measure(int(totals[1].item()))  # tokens_per_second, mfu, peak_memory_gb
        done_steps = step + 1
        last_loss = loss
        saving = (checkpointer is not None and done_steps < steps and _finite(loss) and _finite(gnorm)
                  and checkpointer.due(seen_samples))
        if saving:  # handed to the reporter with this step's report; renamed into place after it
            checkpointer.write(engine, rep, step=done_steps, samples=seen_samples, tokens=seen_tokens,
                               seconds=time.perf_counter() - t_start)
        rep.step({"step": done_steps, "samples": seen_samples, "tokens": seen_tokens,
                  "loss": loss if _finite(loss) else None, "grad_norm": gnorm if _finite(gnorm) else None,
                  "lr": lr, "seconds": round(time.perf_counter() - t_start, 4), **perf})
        if saving:
            checkpointer.commit()
        if not (_finite(loss) and _finite(gnorm)):
            status, reason = "diverged", f"non-finite {'loss' if not _finite(loss) else 'grad norm'} at step {done_steps}"
            break
        if _any_rank(rep.should_stop(), info.world, info.device):
            status, reason = "stopped", f"stop requested after step {done_steps}"
            break
        if cfg.eval.every_steps and done_steps % cfg.eval.every_steps == 0 and done_steps < steps:
            rep.step({"step": done_steps, "samples": seen_samples, "event": "eval",
                      **evaluate(engine, chat, eval_items, cfg, info.device)})

    train_seconds = time.perf_counter() - t_start
    result: dict = {"status": status, "steps": done_steps, "samples": seen_samples, "tokens": seen_tokens,
                    "seconds": round(train_seconds, 3), "train_loss": last_loss if _finite(last_loss) else None,
                    "planned_steps": steps}
    if reason:
        result["reason"] = reason
    if resumed is not None:
        result["resumed_from_step"] = resumed.step
    if skips.total:
        result["data_skipped"] = skips.as_dict()
    if status != "diverged":
        result.update(evaluate(engine, chat, eval_items, cfg, info.device))
        if cfg.output_dir:
            result["model_dir"] = save_model(engine, tok, cfg, info.rank, cfg.resources.zero_stage)
    rep.final(result)
    return result


def save_model(engine, tokenizer, cfg: TrialConfig, rank: int, stage: int) -> str:
    """Hugging Face format, written to a temp folder and renamed into place."""
    out = Path(cfg.output_dir)
    state = engine._zero3_consolidated_16bit_state_dict() if stage == 3 else None
    if rank == 0:
        tmp = out.with_name(out.name + ".tmp")
        engine.module.save_pretrained(tmp, state_dict=state)
        tokenizer.save_pretrained(tmp)
        if out.exists():
            import shutil

            shutil.rmtree(out)
        tmp.rename(out)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
    return str(out)
