"""The last decoder layer's MLP runs on the tokens that have a target only.

Only the hidden states of tokens with a target reach the output head (`loss.py`). In the last
decoder layer everything after attention works token by token: the residual add, the
post-attention norm, the MLP. So for the other tokens that work feeds nothing. `mlp_on_loss_rows`
runs the last layer's MLP on the loss tokens only. The layer's other tokens keep an MLP output of
zero, and their hidden states are never read. The loss and every gradient stay the same
(tests/trainer/test_last_layer.py).

Why bother:
- an MLP is about 80% of a Llama layer's matmul weights;
- 40% of the benchmark data's tokens have a target;
- so this saves about half of one layer's matmuls.
On a 16-layer 1B model that is about 3% of a step; on the benchmark's 2-layer models far more.
(Attention's query and output projections could be cut the same way, but only inside the
attention function; the MLP is most of it.)

When it applies:
- the last layer's `mlp` is a dense MLP module (its class name ends in "MLP": Llama, Mistral, Qwen2/3,
  Gemma, Phi-3, Granite, ...). A mixture-of-experts block is left alone: its router sees every token;
- activation checkpointing is off. A recomputed layer must see the same tokens in the backward
  pass, after the hooks are gone;
- once per model, a probe on a few tokens of its first micro-batch finds the trimmed hidden states
  equal to the full ones at the kept tokens. Models whose last layer does something else are run
  in full.
"""

from __future__ import annotations

import contextlib
import logging
import weakref

import torch

log = logging.getLogger(__name__)

_EXACT: "weakref.WeakKeyDictionary[torch.nn.Module, bool]" = weakref.WeakKeyDictionary()
_switched_off = False


@contextlib.contextmanager
def switched_off():
    """Every MLP runs on every token meanwhile (the benchmark's ablation measures what the trim buys)."""
    global _switched_off
    before, _switched_off = _switched_off, True
    try:
        yield
    finally:
        _switched_off = before


def checkpointing_on(model: torch.nn.Module) -> bool:
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):  # transformers 5, 4
        if hasattr(type(model), name):
            return bool(getattr(model, name))
    return False


def last_mlp(model: torch.nn.Module) -> torch.nn.Module | None:
    """The last decoder layer's dense MLP, or None where the trim does not apply."""
    if _switched_off or checkpointing_on(model):
        return None
    layers = getattr(model.get_decoder(), "layers", None)
    if not layers:
        return None
    mlp = getattr(layers[-1], "mlp", None)
    if not isinstance(mlp, torch.nn.Module) or not type(mlp).__name__.endswith("MLP"):
        return None
    return mlp


@contextlib.contextmanager
def mlp_on_rows(mlp: torch.nn.Module | None, rows: torch.Tensor, tokens_shape: torch.Size):
    """While active, `mlp` called on hidden states of `tokens_shape` (+ hidden) runs on the flat
    token indices `rows` only and returns zeros elsewhere. Calls on other shapes run in full."""
    if mlp is None:
        yield
        return
    trimmed: list[torch.Size] = []

    def pre(module, args):
        x = args[0]
        if not isinstance(x, torch.Tensor) or x.shape[:-1] != tokens_shape:
            return None
        trimmed.append(x.shape)
        return (x.reshape(-1, x.size(-1)).index_select(0, rows),) + tuple(args[1:])

    def post(module, args, out):
        if not trimmed:
            return None
        shape = trimmed.pop()
        full = out.new_zeros((shape[:-1].numel(), out.size(-1)))
        return full.index_copy(0, rows, out).view(*shape[:-1], out.size(-1))

    handles = [mlp.register_forward_pre_hook(pre), mlp.register_forward_hook(post)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def trim_is_exact(model: torch.nn.Module, input_ids: torch.Tensor, position_ids: torch.Tensor) -> bool:
    """Once per model: on the first tokens given, do the last hidden states at every other token
    come out the same with the last MLP trimmed to those tokens? (Every rank probes at the same
    call, as ZeRO-3's parameter gathers need.)"""
    if model not in _EXACT:
        mlp = last_mlp(model)
        ok = False
        if mlp is not None:
            k = min(16, input_ids.size(1))
            inputs = dict(input_ids=input_ids[:1, :k], position_ids=position_ids[:1, :k], use_cache=False)
            decoder = model.get_decoder()
            full = decoder(**inputs).last_hidden_state
            rows = torch.arange(0, k, 2, device=input_ids.device)
            try:
                with mlp_on_rows(mlp, rows, inputs["input_ids"].shape):
                    mine = decoder(**inputs).last_hidden_state
                want = full.reshape(-1, full.size(-1))[rows]
                got = mine.reshape(-1, mine.size(-1))[rows]
                # a token-mixing layer is off by O(1); bf16 rounds differently per matmul shape
                tol = 1e-4 if want.dtype == torch.float32 else 2e-2
                ok = bool(((got - want).abs().max() <= tol * want.abs().max() + 1e-6).item())
            except (RuntimeError, ValueError, IndexError) as err:  # a layer that needs every token
                log.info("%s: the last MLP runs on every token (%s)", type(model).__name__, err)
        _EXACT[model] = ok
    return _EXACT[model]
