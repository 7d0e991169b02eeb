"""Exact effective batches, split across workers and packed into micro-batches.

Every optimizer step consumes exactly `effective_batch_size` samples. The sample order is a pure
function of (data, seed, strategy), so every worker computes the whole step plan on its own: the
number of micro-steps (which must match across workers for ZeRO's collectives) and the global count
of loss tokens (the denominator of the step loss) need no communication.

Packing: a micro-batch holds rows of at most `max_seq_len` tokens; samples are spread over rows
longest-first onto the emptiest row (LPT), so rows come out nearly equal and padding is small.
Packed samples never attend to each other: position ids restart at every sample (padding tokens get
position 0 each), and the model's attention (`trainer.attention`, ``sweepd_packed``) cuts each row
into its samples from them, so `collate` builds no mask (``attention_mask=None``): memory grows with
the tokens, not with their square. ``collate(..., dense_mask=True)`` also builds the old dense
block-diagonal causal mask, (rows, 1, L, L): the reference the tests compare against.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch

from .data import IGNORE, Sample

DEFAULT_MICRO_BATCH_TOKENS = 4096


@dataclass
class Batch:
    input_ids: torch.Tensor  # (rows, L)
    targets: torch.Tensor  # (rows, L): next-token labels, IGNORE across sample boundaries and padding
    position_ids: torch.Tensor  # (rows, L)
    # None: the model's packed attention reads position_ids. (rows, 1, L, L) bool, True = may attend,
    # only from collate(..., dense_mask=True)
    attention_mask: torch.Tensor | None
    real_tokens: int  # non-padding tokens
    loss_tokens: int

    def to(self, device) -> "Batch":
        mask = self.attention_mask.to(device) if self.attention_mask is not None else None
        return Batch(self.input_ids.to(device), self.targets.to(device), self.position_ids.to(device),
                     mask, self.real_tokens, self.loss_tokens)


def loss_tokens(sample: Sample) -> int:
    return sum(1 for x in sample.labels[1:] if x != IGNORE)


# ---- sample order -------------------------------------------------------------------------------

def steps_for_budget(budget, n_samples: int, batch: int) -> int:
    if budget.max_steps is not None:
        return budget.max_steps
    total = budget.max_samples if budget.max_samples is not None else budget.epochs * n_samples
    return max(1, int(total // batch))


def _cycle(indices: list[int], count: int, rng: random.Random) -> list[int]:
    """`count` indices: shuffled passes over `indices`, a fresh shuffle each epoch."""
    out: list[int] = []
    while len(out) < count:
        epoch = list(indices)
        rng.shuffle(epoch)
        out.extend(epoch)
    return out[:count]


def sample_order(phase_sizes: list[int], steps: int, batch: int, seed: int, strategy: str) -> list[int]:
    """Global sample indices for the whole run, `steps * batch` long.

    stacked: all phases mixed into one pool. phased: phases in order, each given a share of the
    steps proportional to its size (at least one step each).
    """
    rng = random.Random(seed)
    offsets = [sum(phase_sizes[:i]) for i in range(len(phase_sizes))]
    if strategy == "stacked" or len(phase_sizes) == 1:
        return _cycle(list(range(sum(phase_sizes))), steps * batch, rng)
    total = sum(phase_sizes)
    shares = [max(1, round(steps * n / total)) for n in phase_sizes]
    shares[-1] = max(1, steps - sum(shares[:-1]))
    order: list[int] = []
    for off, n, s in zip(offsets, phase_sizes, shares):
        order.extend(_cycle(list(range(off, off + n)), s * batch, rng))
    return order[: steps * batch] if len(order) >= steps * batch else _cycle(order, steps * batch, rng)


# ---- packing ------------------------------------------------------------------------------------

def split_for_workers(indices: list[int], world: int) -> list[list[int]]:
    """Contiguous shares, sizes differing by at most one."""
    q, r = divmod(len(indices), world)
    out, start = [], 0
    for w in range(world):
        n = q + (1 if w < r else 0)
        out.append(indices[start:start + n])
        start += n
    return out


def _lpt(lengths: dict[int, int], items: list[int], bins: int) -> list[list[int]]:
    """Longest processing time first: each item onto the currently lightest bin."""
    loads = [0] * bins
    out: list[list[int]] = [[] for _ in range(bins)]
    for i in sorted(items, key=lambda i: (-lengths[i], i)):
        b = min(range(bins), key=lambda k: (loads[k], k))
        out[b].append(i)
        loads[b] += lengths[i]
    return [b for b in out if b]


def pack_rows(lengths: dict[int, int], items: list[int], max_seq_len: int) -> list[list[int]]:
    """Rows of at most max_seq_len tokens, as few and as even as LPT finds. A sample longer than
    max_seq_len (an eval item: training samples are dropped or truncated first) gets a row alone."""
    if not items:
        return []
    alone = sorted(i for i in items if lengths[i] > max_seq_len)
    if alone:
        return [[i] for i in alone] + pack_rows(lengths, [i for i in items if lengths[i] <= max_seq_len], max_seq_len)
    rows = max(1, math.ceil(sum(lengths[i] for i in items) / max_seq_len))
    while True:
        packed = _lpt(lengths, items, rows)
        if all(sum(lengths[i] for i in r) <= max_seq_len for r in packed):
            return packed
        rows += 1


def micro_batches(lengths: dict[int, int], items: list[int], *, max_seq_len: int,
                  micro_batch_tokens: int | None, micro_batch_size: int | None) -> list[list[list[int]]]:
    """A worker's step samples -> micro-batches -> rows of sample indices."""
    if not items:
        return []
    if micro_batch_size:
        groups = [items[i:i + micro_batch_size] for i in range(0, len(items), micro_batch_size)]
    else:
        cap = micro_batch_tokens or DEFAULT_MICRO_BATCH_TOKENS
        n = max(1, math.ceil(sum(lengths[i] for i in items) / cap))
        groups = _lpt(lengths, items, n)
        groups.sort(key=lambda g: min(g))  # deterministic order
    return [pack_rows(lengths, g, max_seq_len) for g in groups]


@dataclass
class StepPlan:
    """One optimizer step as seen by one worker."""

    micro: list[list[list[int]]]  # this worker's micro-batches (rows of sample indices)
    num_micro_steps: int  # the max over workers; shorter workers pad with empty micro-steps
    global_loss_tokens: int
    global_samples: int


def plan_step(order: list[int], step: int, batch: int, samples: list[Sample], *, rank: int, world: int,
              max_seq_len: int, micro_batch_tokens: int | None, micro_batch_size: int | None) -> StepPlan:
    idx = order[step * batch:(step + 1) * batch]
    lengths = {i: len(samples[i]) for i in set(idx)}
    shares = split_for_workers(idx, world)
    per_worker = [micro_batches(lengths, s, max_seq_len=max_seq_len, micro_batch_tokens=micro_batch_tokens,
                                micro_batch_size=micro_batch_size) for s in shares]
    return StepPlan(
        micro=per_worker[rank],
        num_micro_steps=max(len(m) for m in per_worker),
        global_loss_tokens=sum(loss_tokens(samples[i]) for i in idx),
        global_samples=len(idx),
    )


def one_row(rows: list[list[int]]) -> list[list[int]]:
    """A micro-batch's rows as one row, samples back to back: what training feeds the model. The
    packed attention cuts a row into its samples by position_ids, so splitting a micro-batch into
    rows buys nothing but padding (about 5% of the tokens on the benchmark's data, plus one SDPA
    call for the one-token padding segments). Rows stay for evaluation's per-sample slicing and the
    dense-mask reference, whose memory grows with the square of a row."""
    return [[i for row in rows for i in row]]


def collate(rows: list[list[Sample]], pad_id: int, *, dense_mask: bool = False) -> Batch:
    """Rows of samples -> padded tensors with per-sample positions (padding: 0 each).

    attention_mask is None: the model's packed attention isolates the samples from position_ids.
    dense_mask=True builds the block-diagonal causal mask instead (padding attends to itself only),
    the reference implementation; it costs rows * L * L bytes."""
    L = max(sum(len(s) for s in row) for row in rows)
    n = len(rows)
    input_ids = torch.full((n, L), pad_id, dtype=torch.long)
    targets = torch.full((n, L), IGNORE, dtype=torch.long)
    position_ids = torch.zeros((n, L), dtype=torch.long)
    segments = torch.full((n, L), -1, dtype=torch.long) if dense_mask else None
    real = loss = 0
    for r, row in enumerate(rows):
        pos = 0
        for seg, s in enumerate(row):
            k = len(s)
            input_ids[r, pos:pos + k] = torch.tensor(s.input_ids)
            # targets[t] = label of token t+1 within the same sample; the last token predicts nothing
            if k > 1:
                targets[r, pos:pos + k - 1] = torch.tensor(s.labels[1:])
            position_ids[r, pos:pos + k] = torch.arange(k)
            if segments is not None:
                segments[r, pos:pos + k] = seg
            pos += k
            real += k
            loss += sum(1 for x in s.labels[1:] if x != IGNORE)
    if segments is None:
        return Batch(input_ids, targets, position_ids, None, real, loss)
    same = segments[:, :, None] == segments[:, None, :]
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    mask = (same & causal) | torch.eye(L, dtype=torch.bool)  # padding attends to itself: no NaN rows
    return Batch(input_ids, targets, position_ids, mask[:, None], real, loss)


def padding_waste(rows_per_micro: list[list[list[int]]], lengths: dict[int, int]) -> tuple[int, int]:
    """(padding tokens, total tokens) of a step's micro-batches."""
    pad = total = 0
    for rows in rows_per_micro:
        L = max(sum(lengths[i] for i in r) for r in rows)
        total += L * len(rows)
        pad += sum(L - sum(lengths[i] for i in r) for r in rows)
    return pad, total
