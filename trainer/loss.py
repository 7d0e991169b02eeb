"""The training loss, without ever holding the whole micro-batch's fp32 logits.

`summed_loss(engine, batch)`: the sum of the token cross-entropies of a micro-batch (the loop divides
by the step's loss tokens). At 16k tokens and a 128k vocabulary, full fp32 logits are 8.4 GB, and
cross-entropy's backward holds two or three such tensors; so instead:

1. the base model runs to its last hidden states (the model's decoder, `get_decoder()`);
2. the rows whose target is not IGNORE are picked (prompt tokens never reach the head; the last
   layer's MLP runs on those rows only, `last_layer.py`);
3. per chunk of those rows: the output head (`get_output_embeddings()`, called as a module), fp32
   cross-entropy, summed; each chunk under `torch.utils.checkpoint`, so its logits are freed as
   soon as its loss is known and recomputed, one chunk at a time, in the backward pass. A loss that
   fits in one chunk skips the checkpoint: holding that chunk is the bound anyway, and the head is
   not run twice.

Autograd holds one chunk of logits at a time (`chunk_tokens_for`: at most LOGITS_CHUNK_BYTES of
fp32 logits, at most MAX_CHUNK_TOKENS rows).

Some models do more to the head's output in their forward: Granite divides it by `logits_scaling`,
Cohere multiplies it by `logit_scale`, Gemma soft-caps it; `logits_transform` does the same to each
chunk. Once per model, on a few tokens of its first micro-batch, the chunked path's logits are
compared with the model's own; a model whose differ trains on the full logits (with a warning).

DeepSpeed: the whole loss runs inside one call of the engine (the model's `forward` is swapped for
the call), so the engine's output is the loss itself. That matters: DeepSpeed hooks the engine's
outputs to run its backward prologue (ZeRO's "backward has started" state, the accumulation
boundary) before any parameter gradient arrives; a head run outside the engine call would hand
the head's weight gradient to ZeRO before that. ZeRO-3 gathers a module's parameters in that
module's forward hooks, so the head is always called as a module, never through `.weight`; the
number of head calls must then be the same on every rank (each is an all-gather), so at ZeRO-3
the ranks agree on the number of chunks first.

Fused linear + cross-entropy libraries (Liger Kernel's, Apple's cut-cross-entropy) install here
(with Triton) but run their fused kernels on CUDA only, take the head's weight tensor directly
(not gathered at ZeRO-3 outside the head's own call) and compute the weight gradient during the
forward pass (before DeepSpeed's backward prologue); so they are not used. The chunked path does
the same job within a chunk of logits of memory, on any device and ZeRO stage.
"""

from __future__ import annotations

import contextlib
import logging
import weakref

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .batching import Batch
from .data import IGNORE
from .last_layer import last_mlp, mlp_on_rows, trim_is_exact

log = logging.getLogger(__name__)

LOGITS_CHUNK_BYTES = 256 * 2**20  # fp32 logits of one chunk: at most this much
MAX_CHUNK_TOKENS = 4096
MIN_CHUNK_TOKENS = 64


def chunk_tokens_for(vocab_size: int) -> int:
    """Rows per chunk: 4096 for small vocabularies, 523 for a 128k one (256 MB of fp32 logits)."""
    return max(MIN_CHUNK_TOKENS, min(MAX_CHUNK_TOKENS, LOGITS_CHUNK_BYTES // (4 * vocab_size)))


def logits_transform(config):
    """What the model's own forward does to the head's output before its loss, if anything:
    Granite divides by `logits_scaling`, Cohere multiplies by `logit_scale`, Gemma soft-caps at
    `final_logit_softcapping`. Applied here to the fp32 logits of each chunk."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    scale = 1.0 / (getattr(text, "logits_scaling", None) or 1.0) * (getattr(text, "logit_scale", None) or 1.0)
    cap = getattr(text, "final_logit_softcapping", None)
    if scale == 1.0 and not cap:
        return None

    def transform(logits: torch.Tensor) -> torch.Tensor:
        if scale != 1.0:
            logits = logits * scale
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    return transform


def _chunk_loss(head: torch.nn.Module, transform, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = head(hidden).float()
    if transform is not None:
        logits = transform(logits)
    return F.cross_entropy(logits, targets, reduction="sum")


def loss_rows(targets: torch.Tensor) -> torch.Tensor:
    """Flat indices of the tokens that have a target."""
    return (targets.reshape(-1) != IGNORE).nonzero().squeeze(1)


def chunked_cross_entropy(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor,
                          chunk_tokens: int, agree_across_ranks: bool = False, transform=None,
                          rows: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over tokens with a target of cross_entropy(transform(head(hidden).float()), target), chunk
    by chunk.

    hidden: (..., H); targets: (...) with IGNORE where a token predicts nothing. With
    `agree_across_ranks`, every rank of the process group runs the same number of chunks (some
    possibly empty), as ZeRO-3's parameter gathers require. `rows`: the flat indices of the tokens
    with a target, where the caller has them already (`loss_rows`)."""
    h = hidden.reshape(-1, hidden.size(-1))
    t = targets.reshape(-1)
    rows = loss_rows(targets) if rows is None else rows
    h, t = h.index_select(0, rows), t.index_select(0, rows)
    n = h.size(0)
    chunks = max(1, -(-n // chunk_tokens))  # at least one call of the head, even with no loss tokens
    if agree_across_ranks:
        count = torch.tensor([chunks], dtype=torch.long, device=hidden.device)
        dist.all_reduce(count, op=dist.ReduceOp.MAX)
        chunks = int(count.item())
    total = hidden.new_zeros((), dtype=torch.float32)
    start = 0
    for i in range(chunks):
        k = n // chunks + (1 if i < n % chunks else 0)
        if chunks == 1:  # one chunk's logits held through backward is the bound anyway: no recompute
            part = _chunk_loss(head, transform, h[start:start + k], t[start:start + k])
        else:
            part = checkpoint(_chunk_loss, head, transform, h[start:start + k], t[start:start + k],
                              use_reentrant=False, preserve_rng_state=False)
        total = total + part
        start += k
    return total


def _zero3_world(engine) -> bool:
    stage = getattr(engine, "zero_optimization_stage", None)
    return (callable(stage) and stage() == 3 and dist.is_initialized() and dist.get_world_size() > 1)


@contextlib.contextmanager
def _forward_replaced(model: torch.nn.Module, forward):
    """model(...) runs `forward` instead (with all of the model's hooks, DeepSpeed's included)."""
    model.forward = forward
    try:
        yield
    finally:
        del model.forward


_HEAD_CHECKED: "weakref.WeakKeyDictionary[torch.nn.Module, bool]" = weakref.WeakKeyDictionary()


@torch.no_grad()
def _head_is_the_whole_story(engine, model, batch: Batch) -> bool:
    """Once per model: do decoder -> head -> `logits_transform` give the model's own logits? (On a
    few tokens of the first micro-batch; every rank checks at the same call, as ZeRO-3 needs.) A
    model whose forward does more to its logits trains through the full-logits path instead."""
    if model not in _HEAD_CHECKED:
        k = min(16, batch.input_ids.size(1))
        inputs = dict(input_ids=batch.input_ids[:1, :k], position_ids=batch.position_ids[:1, :k], use_cache=False)
        ref = engine(**inputs).logits.float()
        mine = model.get_output_embeddings()(model.get_decoder()(**inputs).last_hidden_state).float()
        transform = logits_transform(model.config)
        if transform is not None:
            mine = transform(mine)
        ok = bool(((mine - ref).abs().max() <= 1e-2 * ref.abs().max() + 1e-6).item())
        if not ok:
            log.warning("%s's logits are not its output head's (times a known scale or cap): the loss "
                        "runs on the full logits, which needs more memory", type(model).__name__)
        _HEAD_CHECKED[model] = ok
    return _HEAD_CHECKED[model]


def summed_loss(engine, batch: Batch, chunk_tokens: int | None = None) -> torch.Tensor:
    """Summed token loss of a micro-batch, the head and cross-entropy chunk by chunk.

    `engine`: a DeepSpeed engine (its `.module` a Hugging Face causal LM), or the bare model."""
    model = getattr(engine, "module", engine)
    if not _head_is_the_whole_story(engine, model, batch):
        return full_logits_loss(engine, batch)
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    transform = logits_transform(model.config)
    agree = _zero3_world(engine)
    chunk_tokens = chunk_tokens or chunk_tokens_for(model.config.vocab_size)
    # the last layer's MLP on the tokens with a target only (last_layer.py)
    mlp = last_mlp(model) if trim_is_exact(model, batch.input_ids, batch.position_ids) else None
    rows = loss_rows(batch.targets)  # one nonzero (a device sync on a GPU) for the MLP and the head

    def loss_forward(**inputs):
        with mlp_on_rows(mlp, rows, batch.input_ids.shape):
            hidden = decoder(**inputs, use_cache=False).last_hidden_state
        return chunked_cross_entropy(head, hidden, batch.targets, chunk_tokens, agree, transform, rows)

    with _forward_replaced(model, loss_forward):
        return engine(input_ids=batch.input_ids, position_ids=batch.position_ids,
                      attention_mask=batch.attention_mask)


def full_logits_loss(engine, batch: Batch) -> torch.Tensor:
    """The reference: the whole micro-batch's logits in fp32 (tests compare against it; unused)."""
    out = engine(input_ids=batch.input_ids, position_ids=batch.position_ids,
                 attention_mask=batch.attention_mask, use_cache=False)
    logits = out.logits.float()
    return F.cross_entropy(logits.view(-1, logits.size(-1)), batch.targets.view(-1),
                           ignore_index=IGNORE, reduction="sum")
