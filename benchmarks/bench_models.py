"""The models `trainer_throughput.py` can compare the trainers on (`--model`).

- ``tiny``: `builtin:tiny` (hidden 64, 2 layers, a 320-token vocabulary): what the tests use. Its
  output head is 18% of its matmul weights, and attention with 16-dim heads is a third of its
  step: the proportions of no model sweepd is built for.
- ``llama1b-mix``: Llama-3.2-1B's proportions, scaled down until it trains on 2 CPU cores: 64-dim
  heads, 4 query heads per key/value head, an MLP 4x the hidden size, and the output head the same
  share of the matmul weights (21.6% here, 21.3% in Llama-3.2-1B: 263M of 1,236M). Hidden 256, 2
  layers, a 2,048-token vocabulary (the byte-level tokenizer uses its first 262 ids; the head
  computes all 2,048 logits all the same), random weights from the seed. It is written to a folder
  and loaded from there by every trainer, as a user's model would be. Qwen2.5-1.5B's head share
  is 15%, Gemma-2-2B's 23%, Qwen2.5-0.5B's 28%.

The head share matters because sweepd runs the output head and the cross-entropy on the tokens
that have a target only (40% of the benchmark data's tokens), and the peers on every token.

What neither model matches is depth. sweepd also runs the last layer's MLP on those tokens only
(`trainer/last_layer.py`). With 2 layers the last layer is half the model, so that trim counts for
far more here than on a 16-layer Llama-3.2-1B (about 3% of a step) or a 32-layer 8B (under 2%).
`trainer_throughput.py --ablation` measures it beside the rest.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from trainer.models import build_tiny_tokenizer

MODELS = ("tiny", "llama1b-mix")

LLAMA1B_MIX = dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=1, head_dim=64, vocab_size=2048, max_position_embeddings=4096,
                   rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False)


def head_share(model: torch.nn.Module) -> float:
    """The output head's share of the weights that are multiplied per token (the input embedding
    is a lookup, not a matmul)."""
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    total = sum(p.numel() for p in model.parameters() if p is not emb) + (head.numel() if head is emb else 0)
    return head.numel() / total


def model_path(name: str, folder: Path, seed: int) -> str:
    """What `model.path` the trainers get for `--model name` (a folder written under `folder`)."""
    if name == "tiny":
        return "builtin:tiny"
    if name != "llama1b-mix":
        raise ValueError(f"unknown model {name!r}; one of {MODELS}")
    tok = build_tiny_tokenizer()
    cfg = LlamaConfig(**LLAMA1B_MIX, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      bos_token_id=None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    out = folder / name
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)
