"""Attention over packed rows without a dense mask.

`trainer.batching.collate` packs several samples into one row and restarts `position_ids` at 0 for
every sample (padding tokens get position 0 each). This module registers an attention
implementation, ``sweepd_packed`` (`ATTN_IMPLEMENTATION`), with transformers' `AttentionInterface`
and `AttentionMaskInterface`; models load with it (`trainer.models`). When the model is called with
``attention_mask=None`` and packed ``position_ids``, no mask is built at all: the attention function
cuts each row into its samples where the positions do not go up by one (the rule transformers uses,
`find_packed_sequence_indices`) and runs causal attention inside each sample only. So samples never
see each other, positions are per sample, and memory grows with the tokens (and at most with the
square of the longest single sample on a backend that materialises scores), never with the square of
the micro-batch.

Backends, picked per call (`backend_for`):
- ``flash_attn``: `flash_attn.flash_attn_varlen_func` over the whole micro-batch at once (CUDA,
  fp16/bf16, where the `flash_attn` package imports);
- ``torch_varlen``: `torch.nn.attention.varlen.varlen_attn`, PyTorch's own fused varlen kernel (CUDA,
  fp16/bf16, where this torch has it and it runs on this GPU);
- ``sdpa``: `torch.nn.functional.scaled_dot_product_attention` with ``is_causal`` (any device and
  dtype; CUDA picks its flash/memory-efficient kernel, CPU its flash kernel), over groups of
  segments of similar length (`segment_groups`): each group is gathered into one padded batch,
  each segment padded at its end, which causal attention makes exact (no real query sees a later
  key), and the outputs are scattered back. One call per group, not per sample: calls and their
  gradients' bookkeeping cost more than the padding at small sizes (34 calls a layer -> about 4 on
  the benchmark's data). A padding token is a one-token segment: it attends only to itself, as in
  the dense reference.

Everything else falls through to transformers' SDPA unchanged: a 2D padding mask (generation with
left padding), a 4D mask (the dense reference, `collate(..., dense_mask=True)`), decoding with a KV
cache (fewer queries than keys). A layer with a sliding window (Mistral, Qwen2 with windows) applies
it inside each sample.

Known limits: models whose masks add overlays besides causal + sliding window (e.g. bidirectional
image tokens) are not covered.
"""

from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTN_IMPLEMENTATION = "sweepd_packed"
BACKENDS = ("flash_attn", "torch_varlen", "sdpa")

# Force one backend (tests, benchmarks); None = pick per call.
_forced_backend: str | None = None


# ---- segments from position_ids ------------------------------------------------------------------

@dataclass
class Segments:
    """The packed samples of a (rows, L) batch, found from its position_ids."""

    rows: int
    length: int
    cu_seqlens: list[int]  # over the flattened rows*L tokens, every segment (one-token ones included)
    max_len: int


def segments_from_position_ids(position_ids: torch.Tensor) -> Segments:
    """A new segment starts at every row start and wherever the position does not go up by one."""
    pos = position_ids.detach().to("cpu", torch.long)
    rows, L = pos.shape
    starts = torch.ones_like(pos, dtype=torch.bool)
    starts[:, 1:] = pos[:, 1:] != pos[:, :-1] + 1
    cu = [0]
    max_len = 0
    for r in range(rows):
        bounds = starts[r].nonzero().flatten().tolist() + [L]
        for s, e in zip(bounds[:-1], bounds[1:]):
            cu.append(r * L + e)
            max_len = max(max_len, e - s)
    return Segments(rows, L, cu, max_len)


# A group pads its segments to its longest; it takes segments while its padded attention work (the
# sum of its padded lengths squared) stays within this factor of its real work, plus the work of a
# slack-long segment (so short segments are never alone). Bounding work, not tokens: a 150-token
# segment padded to 268 costs 3.2x its attention, not 1.8x. Measured on the benchmark's data (CPU
# flash SDPA, forward + backward): 14% less attention time than bounding tokens at 1.25.
GROUP_PADDING = 1.3
GROUP_SLACK_TOKENS = 64


@dataclass
class SegmentGroups:
    """Every segment of a (B, L) batch, in groups of similar length: one SDPA call per group.

    `gather` indexes the flattened B*L tokens: group g's n_g x len_g block, row-major, each segment
    padded at its end with copies of its last token. `scatter` takes each of the B*L tokens back
    from the concatenated padded outputs. Padding at a segment's end is exact under causal
    attention: no real query sees a later key, and the padded queries' outputs are dropped."""

    gather: torch.Tensor
    sizes: list[tuple[int, int]]  # (segments, padded length) per group
    scatter: torch.Tensor


def segment_groups(cu_seqlens: list[int], device: torch.device) -> SegmentGroups:
    cu = torch.tensor(cu_seqlens, dtype=torch.long)
    starts, lengths = cu[:-1], cu[1:] - cu[:-1]
    order = torch.argsort(lengths, descending=True, stable=True).tolist()
    lens = lengths.tolist()
    groups: list[list[int]] = []
    real = 0  # the open group's real attention work, sum of length^2
    for i in order:  # longest first; a new group when padding to the group's longest costs too much
        if groups:
            width = lens[groups[-1][0]]
            if (len(groups[-1]) + 1) * width**2 <= GROUP_PADDING * (real + lens[i] ** 2) + GROUP_SLACK_TOKENS**2:
                groups[-1].append(i)
                real += lens[i] ** 2
                continue
        groups.append([i])
        real = lens[i] ** 2
    gathers, sizes = [], []
    scatter = torch.empty(int(cu[-1]), dtype=torch.long)
    offset = 0
    for members in groups:
        idx = torch.tensor(members)
        n, width = len(members), lens[members[0]]
        s, ln = starts[idx], lengths[idx]
        col = torch.arange(width)
        gathers.append((s[:, None] + torch.minimum(col[None, :], ln[:, None] - 1)).reshape(-1))
        real_tok = col[None, :] < ln[:, None]
        padded_pos = offset + torch.arange(n * width).view(n, width)
        scatter[(s[:, None] + col[None, :])[real_tok]] = padded_pos[real_tok]
        sizes.append((n, width))
        offset += n * width
    return SegmentGroups(torch.cat(gathers).to(device), sizes, scatter.to(device))


def _version(t: torch.Tensor) -> int | None:
    try:
        return t._version
    except RuntimeError:  # inference tensors keep no version counter
        return None


class _SegmentCache:
    """Every layer of one forward sees the same position_ids tensor: find its segments once (on GPU
    that is one host sync per forward, not one per layer)."""

    def __init__(self):
        self._ref = None
        self._key: tuple | None = None
        self._segments: Segments | None = None
        self._per_device: dict[tuple[str, torch.device], object] = {}  # built from the segments, per device

    def get(self, position_ids: torch.Tensor, rows: int) -> Segments:
        """Segments of `position_ids` broadcast to `rows` rows (the model's own positions are (1, L))."""
        key = (rows, _version(position_ids))  # an in-place change makes a new batch
        if self._ref is None or self._ref() is not position_ids or self._key != key:
            self._segments = segments_from_position_ids(position_ids.expand(rows, -1))
            self._key = key
            self._per_device = {}
            try:
                self._ref = weakref.ref(position_ids)
            except TypeError:  # not weak-referenceable: no caching
                self._ref = None
        return self._segments

    def groups(self, position_ids: torch.Tensor, rows: int, device: torch.device) -> SegmentGroups:
        seg = self.get(position_ids, rows)
        if ("groups", device) not in self._per_device:
            self._per_device[("groups", device)] = segment_groups(seg.cu_seqlens, device)
        return self._per_device[("groups", device)]

    def cu_seqlens(self, position_ids: torch.Tensor, rows: int, device: torch.device) -> torch.Tensor:
        seg = self.get(position_ids, rows)
        if ("cu", device) not in self._per_device:
            self._per_device[("cu", device)] = torch.tensor(seg.cu_seqlens, dtype=torch.int32, device=device)
        return self._per_device[("cu", device)]


_cache = _SegmentCache()


# ---- backends --------------------------------------------------------------------------------------

@functools.cache
def _flash_attn_varlen():
    try:
        from flash_attn import flash_attn_varlen_func
    except Exception:  # not installed, or built for another torch/CUDA
        return None
    return flash_attn_varlen_func


@functools.cache
def _torch_varlen():
    try:
        from torch.nn.attention.varlen import varlen_attn
    except Exception:
        return None
    return varlen_attn


@functools.cache
def _torch_varlen_params() -> frozenset[str]:
    """Its keyword arguments changed across torch releases (is_causal, later window_size)."""
    import inspect

    return frozenset(inspect.signature(_torch_varlen()).parameters)


_torch_varlen_broken: set[int] = set()  # CUDA device indices where torch's varlen kernel failed


def backend_for(query: torch.Tensor) -> str:
    """The backend a packed call on this tensor uses."""
    if _forced_backend is not None:
        return _forced_backend
    fused_ok = query.is_cuda and query.dtype in (torch.float16, torch.bfloat16)
    if fused_ok and _flash_attn_varlen() is not None:
        return "flash_attn"
    if fused_ok and _torch_varlen() is not None and query.device.index not in _torch_varlen_broken:
        return "torch_varlen"
    return "sdpa"


def force_backend(name: str | None) -> None:
    """Use one backend for every packed call (None: pick per call). For tests and benchmarks."""
    global _forced_backend
    if name is not None and name not in BACKENDS:
        raise ValueError(f"unknown packed attention backend {name!r}; one of {BACKENDS}")
    _forced_backend = name


def _flat(x: torch.Tensor) -> torch.Tensor:
    """(B, H, L, D) -> (B*L, H, D)."""
    b, h, L, d = x.shape
    return x.transpose(1, 2).reshape(b * L, h, d)


def _varlen(query, key, value, position_ids, scaling, dropout, sliding_window, backend):
    b, h, L, d = query.shape
    seg = _cache.get(position_ids, b)
    cu = _cache.cu_seqlens(position_ids, b, query.device)
    q, k, v = _flat(query), _flat(key), _flat(value)
    left = sliding_window - 1 if sliding_window else -1
    if backend == "flash_attn":
        out = _flash_attn_varlen()(q, k, v, cu, cu, seg.max_len, seg.max_len, dropout_p=dropout,
                                   softmax_scale=scaling, causal=True, window_size=(left, -1 if left < 0 else 0))
    else:
        params, extra = _torch_varlen_params(), {}
        if "window_size" in params:
            extra["window_size"] = (left, 0)
        elif sliding_window:
            raise NotImplementedError("this torch's varlen_attn has no sliding window")
        else:
            extra["is_causal"] = True
        if k.shape[1] != q.shape[1]:
            if "enable_gqa" in params:
                extra["enable_gqa"] = True
            else:
                rep = q.shape[1] // k.shape[1]
                k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        out = _torch_varlen()(q, k, v, cu, cu, seg.max_len, seg.max_len, scale=scaling, **extra)
    return out.reshape(b, L, h, v.shape[-1])


def _sliding_mask(n: int, window: int, device) -> torch.Tensor:
    i = torch.arange(n, device=device)
    return (i[:, None] >= i[None, :]) & (i[:, None] - i[None, :] < window)


def _sdpa_grouped(module, query, key, value, position_ids, scaling, dropout, sliding_window):
    """Causal SDPA inside each segment: segments gathered into padded groups of similar length, one
    call per group, scattered back. (B, H, L, D) in, (B, L, H, D) out."""
    b, h, L, _ = query.shape
    groups = _cache.groups(position_ids, b, query.device)
    split = [n * width for n, width in groups.sizes]

    def gathered(x: torch.Tensor):  # (B, Hx, L, D) -> per group (n*width, Hx, D)
        # one gather and one split: their backwards are one index_add and one cat (slicing every
        # segment out instead costs a zero-filled full-size gradient per segment)
        flat = x.transpose(1, 2).reshape(b * L, x.shape[1], x.shape[3])
        return flat.index_select(0, groups.gather).split(split)

    outs = []
    for (n, width), q, k, v in zip(groups.sizes, gathered(query), gathered(key), gathered(value)):
        q, k, v = (t.view(n, width, t.shape[1], t.shape[2]).transpose(1, 2) for t in (q, k, v))
        mask = None
        if sliding_window and width > sliding_window:
            mask = _sliding_mask(width, sliding_window, query.device)[None, None]
        out, _ = sdpa_attention_forward(module, q, k, v, mask, dropout=dropout, scaling=scaling, is_causal=True)
        outs.append(out.reshape(n * width, h, out.shape[-1]))
    flat = torch.cat(outs) if len(outs) > 1 else outs[0]
    return flat.index_select(0, groups.scatter).view(b, L, h, flat.shape[-1])


# ---- the registered functions -------------------------------------------------------------------

def packed_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                             scaling: float | None = None, is_causal: bool | None = None, **kwargs):
    """transformers' attention signature: (B, H, L, D) in, ((B, L, H, D), None) out."""
    position_ids = kwargs.get("position_ids")
    q_len, kv_len = query.shape[2], key.shape[2]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    if attention_mask is not None or q_len != kv_len or not causal or q_len == 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    if position_ids is None:
        raise ValueError(f"{ATTN_IMPLEMENTATION} attention needs position_ids (this model's layers do not pass them)")
    sliding_window = kwargs.get("sliding_window")
    backend = backend_for(query)
    if backend == "torch_varlen" and dropout:
        backend = "sdpa"  # torch's varlen kernel has no dropout
    if backend != "sdpa":
        try:
            return _varlen(query, key, value, position_ids, scaling, dropout, sliding_window, backend), None
        except (RuntimeError, NotImplementedError, TypeError):
            if backend != "torch_varlen" or _forced_backend is not None:
                raise
            _torch_varlen_broken.add(query.device.index)  # e.g. a GPU its kernel was not built for
    return _sdpa_grouped(module, query, key, value, position_ids, scaling, dropout, sliding_window), None


def packed_mask(batch_size: int, q_length: int, kv_length: int, q_offset: int = 0, kv_offset: int = 0,
                attention_mask: torch.Tensor | None = None, **kwargs):
    """No mask for a full forward without padding (the attention reads position_ids); otherwise
    (a 2D padding mask, a KV cache) the SDPA mask transformers would build."""
    if attention_mask is None and q_length == kv_length and not q_offset and not kv_offset:
        return None
    return sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                     kv_offset=kv_offset, attention_mask=attention_mask, **kwargs)


def register() -> str:
    """Register ``sweepd_packed`` with transformers (idempotent); returns its name."""
    AttentionInterface.register(ATTN_IMPLEMENTATION, packed_attention_forward)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, packed_mask)
    return ATTN_IMPLEMENTATION


register()
