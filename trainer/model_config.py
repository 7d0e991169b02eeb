"""A model's config.json, without its weights: for builtin models the config trainer/models.py
builds, for a folder or a Hub name in the local cache its config.json, else trainer/known_shapes.py's
table by name; and the model's `Shape` (parameter count, layers, widths) read from that config, which
the fit estimate (trainer/fit.py) is built on."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

# Families whose MLP is fc1 -> activation -> fc2 (two matrices); the rest are gated (three).
UNGATED_MLP = frozenset({"gpt2", "gpt_neox", "opt", "gptj", "bloom", "falcon", "gpt_bigcode", "phi", "starcoder2"})
QKV_BIAS = frozenset({"qwen2", "qwen2_moe"})


# ---- the model's shape ------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    gated: bool
    qkv_bias: bool
    experts: int = 1  # mixture-of-experts: every expert's weights count; activations as one

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def layer_params(self) -> int:
        h, f = self.hidden, self.intermediate
        attn = h * self.q_dim + 2 * h * self.kv_dim + self.q_dim * h
        if self.qkv_bias:
            attn += self.q_dim + 2 * self.kv_dim
        mlp = (3 if self.gated else 2) * h * f * self.experts
        return attn + mlp + 2 * h  # two norms

    @property
    def params(self) -> int:
        """Unique parameters (tied embeddings once), as DeepSpeed's model_to_params counts them."""
        emb = self.vocab * self.hidden
        return emb * (1 if self.tied else 2) + self.layers * self.layer_params() + self.hidden

    @property
    def largest_layer_params(self) -> int:
        """The largest single module's own parameters (DeepSpeed's ZeRO-3 estimator's
        ``largest_layer_params``): the embedding, or the largest linear."""
        h, f = self.hidden, self.intermediate
        return max(self.vocab * h, h * f * self.experts, h * self.q_dim)


def _get(cfg: dict, *names, default=None):
    for n in names:
        if cfg.get(n) is not None:
            return cfg[n]
    return default


def shape_of(config: dict) -> Shape:
    """The shape from a Hugging Face config.json's fields (Llama/Mistral/Qwen names, GPT-2 names as
    a fallback; a multimodal config's ``text_config``). KeyError/ValueError when it has none."""
    if "hidden_size" not in config and "n_embd" not in config and isinstance(config.get("text_config"), dict):
        config = {**config["text_config"], "model_type": config["text_config"].get("model_type", config.get("model_type"))}
    h = int(_get(config, "hidden_size", "n_embd", "d_model"))
    heads = int(_get(config, "num_attention_heads", "n_head"))
    kv = int(_get(config, "num_key_value_heads", "num_kv_heads", default=heads))
    head_dim = int(_get(config, "head_dim", default=h // heads))
    model_type = str(config.get("model_type") or "")
    f = int(_get(config, "intermediate_size", "n_inner", "ffn_dim", default=4 * h))
    if h <= 0 or heads <= 0:
        raise ValueError(f"hidden size {h} and heads {heads} must be positive")
    return Shape(
        hidden=h, intermediate=f, layers=int(_get(config, "num_hidden_layers", "n_layer")),
        heads=heads, kv_heads=kv, head_dim=head_dim, vocab=int(config["vocab_size"]),
        tied=bool(config.get("tie_word_embeddings", model_type in ("gpt2",))),
        gated=model_type not in UNGATED_MLP,
        qkv_bias=bool(config.get("attention_bias", False)) or model_type in QKV_BIAS,
        experts=int(_get(config, "num_local_experts", "num_experts", default=1)),
    )


# ---- the model's config.json ------------------------------------------------------------------


@lru_cache(maxsize=4)
def builtin_config(name: str) -> dict:
    """A builtin model's config as trainer/models.py builds it (vocabulary rounded up to 64)."""
    from trainer.models import build_tiny_tokenizer, tiny_config

    if name != "builtin:tiny":
        raise ValueError(f"unknown builtin model {name!r}")
    vocab = (len(build_tiny_tokenizer()) + 63) // 64 * 64
    cfg = tiny_config(vocab).to_dict()
    cfg["model_type"] = "llama"
    return cfg


def model_config_of(path: str, *, known_shapes: bool = True) -> tuple[dict | None, str]:
    """(config dict, where it came from) for a model path: a builtin's built config, a folder's
    config.json, a Hub name's config.json in the local cache (offline), else (with
    ``known_shapes``) trainer/known_shapes.py's table by name. (None, why) when none of them."""
    if path.startswith("builtin:"):
        return builtin_config(path), f"{path}'s built config"
    p = Path(path).expanduser()
    if (p / "config.json").is_file():
        return _read_json(p / "config.json")
    from trainer.hub import ModelNotCached, is_hub_name, resolve_hub_model

    if not p.exists() and is_hub_name(path):
        try:
            snap = Path(resolve_hub_model(path))
            if (snap / "config.json").is_file():
                return _read_json(snap / "config.json")
        except ModelNotCached:
            pass
    if known_shapes:
        from trainer.known_shapes import lookup

        found = lookup(path)
        if found:
            name, shape = found
            return shape, f"sweepd's table of known shapes ({name}; trainer/known_shapes.py), no config.json here"
    return None, f"no config.json for {path!r} here, and not a model in sweepd's table of known shapes"


def _read_json(path: Path) -> tuple[dict | None, str]:
    try:
        return json.loads(path.read_text(encoding="utf-8")), str(path)
    except (OSError, ValueError) as err:
        return None, f"cannot read {path}: {err}"
