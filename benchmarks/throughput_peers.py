"""The peers of `trainer_throughput.py`: Hugging Face trainers set up as a careful user would.

Each peer trains the same model (`builtin:tiny`, a fresh copy from the same seed, fp32, CPU) on the
same samples with the same loss masking (assistant turns' content and end marker, `pretraining`
content in full: exactly sweepd's `trainer.data.load_samples`), the same optimizer, clipping,
DeepSpeed ZeRO stage and number of optimizer steps, through the HF DeepSpeed integration:

- ``hf``: `transformers.Trainer` with ``train_sampling_strategy="group_by_length"`` (the
  `group_by_length=True` of transformers 4.x) and `DataCollatorForSeq2Seq`, which pads each
  micro-batch to its own longest sample; ``micro`` samples per micro-batch x ``32 / micro``
  accumulation steps.
- ``trl_pf``: TRL's `SFTTrainer`, ``padding_free=True`` (each micro-batch of ``micro`` samples
  flattened into one row, no padding, ``position_ids`` restarting per sample), ``max_length=None``
  (every sample already fits 512 tokens), ``assistant_only_loss=True``.
- ``trl_pack``: TRL's `SFTTrainer`, ``packing=True, packing_strategy="bfd"`` (best-fit-decreasing
  rows of ``max_length=512`` tokens, padding-free: rows flattened, ``position_ids`` per sample),
  ``assistant_only_loss=True``; ``rows`` packed rows per micro-batch x ``accum`` steps.

TRL's assistant-only loss needs a chat template with ``{% generation %}`` markers: TRL_TEMPLATE is
builtin:tiny's own template with them around the assistant content and its end marker, and a
``pretraining`` turn rendered as sweepd renders it (content + EOS, all trained). `build_trl`
checks that TRL's tokenized samples (input_ids and labels) are identical to sweepd's, sample by
sample, before training, and records the result.

The peers' model is `builtin:tiny` with transformers' default attention, SDPA (`PEER_ATTENTION`;
sweepd's own models load with its packed attention, `trainer.attention`, which is sweepd's to
claim). Packed / padding-free batches are correct on the CPU with SDPA: with
``position_ids`` and no ``attention_mask`` transformers' `create_causal_mask` detects the packed
sequences (`find_packed_sequence_indices`) and builds a block-diagonal causal mask, so samples
never attend to each other (checked by `packed_attention_is_isolated`).
"""

from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path

import torch

TRL_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'pretraining' %}{% generation %}{{ m['content'] }}<|end|>{% endgeneration %}"
    "{% elif m['role'] == 'assistant' %}<|assistant|>{% generation %}{{ m['content'] }}<|end|>{% endgeneration %}"
    "{% else %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
IGNORE = -100
PEER_ATTENTION = "sdpa"  # transformers' default on the CPU

PEERS = ("hf", "trl_grouped", "trl_pf", "trl_pack")
# What `make bench` runs: TRL's padding-free mode (trl_pf) measured no faster than its bfd packing
# here (both flatten micro-batches into one row; SDPA on the CPU then attends over the whole row
# with a dense block-diagonal mask), so the default keeps packing only, to stay within ~5 minutes.
DEFAULT_PEERS = ("hf", "trl_grouped", "trl_pack")


def describe_peer(name: str, s: dict) -> str:
    """One line: which trainer, which setting."""
    if name == "hf":
        return f"transformers.Trainer, group_by_length, pad per batch, {s['hf_micro']} x {s['hf_accum']}"
    if name == "trl_grouped":
        return f"TRL SFTTrainer, group_by_length, pad per batch, {s['trlg_micro']} x {s['trlg_accum']}"
    if name == "trl_pf":
        return f"TRL SFTTrainer, padding_free, {s['trl_micro']} x {s['trl_accum']}"
    if name == "trl_pack":
        return (f"TRL SFTTrainer, packing bfd {s['max_seq_len']}, "
                f"{s['pack_rows']} rows x {s['pack_accum']}")
    return name


def deepspeed_config(grad_clip: float, zero_stage: int) -> dict:
    """What a user hands the HF DeepSpeed integration; "auto" is filled from TrainingArguments."""
    return {
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "train_batch_size": "auto",
        "gradient_clipping": grad_clip,
        "zero_optimization": {"stage": zero_stage},
        "bf16": {"enabled": False},
        "fp16": {"enabled": False},
        "zero_allow_untested_optimizer": True,  # the Trainer's own torch AdamW, as sweepd uses
        "steps_per_print": 10**12,
        "wall_clock_breakdown": False,
    }


def common_args(s: dict, out_dir: Path, micro: int, accum: int) -> dict:
    """TrainingArguments shared by every peer (SFTConfig takes the same)."""
    return dict(
        output_dir=str(out_dir),
        max_steps=s["steps"],
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=accum,
        learning_rate=s["learning_rate"],
        adam_beta1=s["betas"][0],
        adam_beta2=s["betas"][1],
        weight_decay=s["weight_decay"],
        max_grad_norm=s["grad_clip"],
        lr_scheduler_type="constant",
        warmup_steps=0,
        optim="adamw_torch",
        deepspeed=deepspeed_config(s["grad_clip"], s["zero_stage"]),
        use_cpu=False,  # use_cpu=True makes accelerate drop DeepSpeed; DS_ACCELERATOR=cpu keeps it on the CPU
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,  # SFTConfig turns it on by default; sweepd does not checkpoint here either
        seed=s["seed"],
        data_seed=s["seed"],
        report_to=[],
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def chat_records(train_path: Path) -> list[list[dict]]:
    from trainer.data import read_jsonl

    return [[{"role": m["role"], "content": m["content"]} for m in obj["messages"]]
            for obj, _ in read_jsonl(train_path)]


def packed_attention_is_isolated(model, pad_id: int) -> bool:
    """Two samples flattened into one row (position_ids restarting, no attention_mask) give the
    second sample the same logits as alone: the block-diagonal mask is there."""
    model.eval()
    a = torch.tensor([[5, 6, 7, 8, 9]])
    b = torch.tensor([[10, 11, 12]])
    with torch.no_grad():
        alone = model(input_ids=b).logits[0]
        flat = model(input_ids=torch.cat([a, b], 1),
                     position_ids=torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2]])).logits[0, 5:]
    model.train()
    return bool(torch.allclose(alone, flat, atol=1e-5))


class Counter:
    """Forward pre-hook on the model: the tokens (real and padded) and samples of every training
    micro-batch it actually consumed."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id
        self.real = self.total = self.micro = self.samples = self.loss_tokens = 0

    def __call__(self, module, args, kwargs) -> None:
        if not module.training:
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        pos = kwargs.get("position_ids")
        labels = kwargs.get("labels")
        self.total += ids.numel()
        if mask is not None:
            self.real += int(mask.sum())
            self.samples += ids.shape[0]
        else:  # padding-free: one flattened row; real = every token that is not padding
            self.real += int((ids != self.pad_id).sum())
            self.samples += int((pos == 0).sum()) if pos is not None else ids.shape[0]
        if labels is not None:
            self.loss_tokens += int((labels != IGNORE).sum())
        self.micro += 1


def build_hf(s: dict, data_dir: Path, out_dir: Path, lm):
    import datasets
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from trainer.data import ChatTokenizer, load_samples

    tok = lm.tokenizer
    samples = load_samples([str(data_dir / "train.jsonl")], ChatTokenizer(tok), s["max_seq_len"])
    ds = datasets.Dataset.from_dict({
        "input_ids": [x.input_ids for x in samples],
        "labels": [x.labels for x in samples],
    })
    args = TrainingArguments(**common_args(s, out_dir, s["hf_micro"], s["hf_accum"]),
                             train_sampling_strategy="group_by_length")
    trainer = Trainer(model=lm.model, args=args, train_dataset=ds, processing_class=tok,
                      data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=IGNORE))
    return trainer, {"masking": "sweepd's own samples (trainer.data.load_samples)", "samples": len(samples)}


def build_trl(s: dict, data_dir: Path, out_dir: Path, lm, mode: str):
    import datasets
    from trl import SFTConfig, SFTTrainer

    from trainer.data import ChatTokenizer, load_samples

    tok = lm.tokenizer
    ref = load_samples([str(data_dir / "train.jsonl")], ChatTokenizer(tok), s["max_seq_len"])
    ds = datasets.Dataset.from_list([{"messages": m} for m in chat_records(data_dir / "train.jsonl")])
    tok.chat_template = TRL_TEMPLATE
    packing = mode == "trl_pack"
    if packing:
        micro, accum = s["pack_rows"], s["pack_accum"]
        extra = dict(packing=True, packing_strategy="bfd", max_length=s["max_seq_len"])
    elif mode == "trl_grouped":  # TRL's collator pads each micro-batch; the sampler groups by length
        micro, accum = s["trlg_micro"], s["trlg_accum"]
        extra = dict(max_length=s["max_seq_len"], train_sampling_strategy="group_by_length")
    else:
        micro, accum = s["trl_micro"], s["trl_accum"]
        extra = dict(padding_free=True, max_length=None)  # TRL: padding-free without packing needs max_length=None
    args = SFTConfig(**common_args(s, out_dir, micro, accum), assistant_only_loss=True,
                     dataset_num_proc=None, **extra)
    trainer = SFTTrainer(model=lm.model, args=args, train_dataset=ds, processing_class=tok)

    # Same tokens and the same loss mask as sweepd's samples?
    td = trainer.train_dataset
    ids_col, lab_col = td["input_ids"], td["labels"]
    if packing:  # rows of several samples: compare the totals (bfd only regroups; nothing over 512 to cut)
        same = (len(ref) == sum(len(x) for x in td["seq_lengths"])
                and sum(len(x) for x in ids_col) == sum(len(x) for x in ref)
                and sum(sum(1 for v in lab if v != IGNORE) for lab in lab_col)
                == sum(sum(1 for v in x.labels if v != IGNORE) for x in ref))
        what = "same samples, tokens and loss tokens in total as sweepd's (packed rows)"
        rows = len(td)
        info = {"packed_rows": rows, "tokens_per_row": round(sum(len(x) for x in ids_col) / rows, 1)}
    else:
        same = len(td) == len(ref) and all(a == r.input_ids and b == r.labels for a, b, r in zip(ids_col, lab_col, ref))
        what = "input_ids and labels identical to sweepd's, sample by sample"
        info = {}
    if not same:
        raise RuntimeError(f"TRL's tokenized data differs from sweepd's ({what}): not a like-for-like run")
    return trainer, {"masking": f"assistant_only_loss=True with TRL_TEMPLATE: {what}", "samples": len(ref),
                     "packed_attention_isolated": packed_attention_is_isolated(lm.model, tok.pad_token_id), **info}


def run_peer(name: str, s: dict, data_dir: Path, out_dir: Path, helpers: dict) -> dict:
    """Train one peer for s["steps"] optimizer steps; tokens/s over steps warmup+1..steps."""
    from transformers import TrainerCallback
    from transformers.utils import logging as hf_logging

    from trainer.models import load_model

    cpu_snapshot, others_cores, rate, median_step_rate = (
        helpers[k] for k in ("cpu_snapshot", "others_cores", "rate", "median_step_rate"))
    hf_logging.set_verbosity_error()
    lm = load_model(s["model_path"], seed=s["seed"])  # settings() gives builtin:tiny; --model another
    # The stock attention a user of these trainers gets: sweepd's models load with its own packed
    # attention (trainer.attention); the peers run transformers' default, SDPA.
    lm.model.set_attn_implementation(PEER_ATTENTION)
    t_build = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):  # datasets' map progress bars
        if name == "hf":
            trainer, info = build_hf(s, data_dir, out_dir, lm)
        else:
            trainer, info = build_trl(s, data_dir, out_dir, lm, name)
    build_s = time.perf_counter() - t_build

    counts = Counter(lm.tokenizer.pad_token_id)
    lm.model.register_forward_pre_hook(counts, with_kwargs=True)
    points: list[tuple[int, int, float]] = []
    totals: dict[int, tuple[int, int, int]] = {}
    cpu: dict[int, tuple | None] = {}
    warmup, steps = s["warmup"], s["steps"]

    class StepClock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            points.append((0, 0, time.perf_counter()))
            totals[0] = (0, 0, 0)
            cpu[0] = cpu_snapshot()

        def on_step_end(self, args, state, control, **kw):
            points.append((state.global_step, counts.real, time.perf_counter()))
            totals[state.global_step] = (counts.total, counts.samples, counts.loss_tokens)
            cpu[state.global_step] = cpu_snapshot()

    trainer.add_callback(StepClock())
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the Trainer prints its own metrics dict at the end
        out = trainer.train()
    wall = time.perf_counter() - t0

    engine = trainer.model_wrapped
    rel = [(st, tk, t - points[0][2]) for st, tk, t in points]
    win_real = rel[steps][1] - rel[warmup][1]
    win_total = totals[steps][0] - totals[warmup][0]
    return {
        "tokens_per_s": rate(rel, warmup, steps),
        "tokens_per_s_median_step": median_step_rate(rel, warmup, steps),
        "others_cpu_cores": others_cores(cpu.get(warmup), cpu.get(steps)),
        "own_cpu_seconds": helpers["own_cpu_seconds"](cpu.get(warmup), cpu.get(steps)),
        "padding_fraction": 1 - win_real / win_total,
        "real_tokens_window": win_real,
        "micro_batches_per_step": counts.micro / steps,
        "samples_per_step": (totals[steps][1] - totals[warmup][1]) / (steps - warmup),
        "loss_tokens_per_step": (totals[steps][2] - totals[warmup][2]) / (steps - warmup),
        "window_seconds": rel[steps][2] - rel[warmup][2],
        "build_seconds": round(build_s, 2),
        "train_wall_seconds": round(wall, 2),
        "final_train_loss": out.training_loss,
        "attn_implementation": getattr(lm.model.config, "_attn_implementation", None),
        "deepspeed_engine": type(engine).__name__,
        "zero_stage": engine.zero_optimization_stage() if hasattr(engine, "zero_optimization_stage") else None,
        "optimizer": type(getattr(engine, "optimizer", None)).__name__,
        "accelerate_distributed_type": str(trainer.accelerator.state.distributed_type),
        **info,
    }
