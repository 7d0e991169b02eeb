"""Model and tokenizer loading: `builtin:tiny`, or any causal LM directory transformers loads.

Nothing is ever downloaded: directories load with local_files_only, and builtin:tiny is built here
(a byte-level tokenizer and a small Llama, weights from the trial's seed). A Hugging Face Hub name
(``Qwen/Qwen2.5-1.5B``) that is no folder here resolves to its snapshot in the local Hugging Face
cache (HF_HUB_CACHE, else HF_HOME/hub), offline; one not in the cache is a ModelLoadError that says
how to put it there.

Chat template: the tokenizer's own when it has one. Otherwise FALLBACK_CHAT_TEMPLATE:
    <|system|>\\n{content}\\n<|user|>\\n{content}\\n<|assistant|>\\n{content}{eos}\\n
(markers are plain text for models whose vocabulary lacks them; builtin:tiny has them as tokens).

Attention: every model loads with `trainer.attention`'s ``sweepd_packed`` implementation, so packed
micro-batches need no dense mask (``attention_mask=None`` plus per-sample ``position_ids``); padded
inputs (generation) still take transformers' SDPA path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from .attention import ATTN_IMPLEMENTATION
from .config import model_dir_problem
from .hub import ModelNotCached, is_hub_name, resolve_hub_model

FALLBACK_CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}<|assistant|>\n{{ m['content'] }}{{ eos_token }}\n"
    "{% else %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

TINY_SPECIAL_TOKENS = ["<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "<|{{ m['role'] }}|>{{ m['content'] }}<|end|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


class ModelLoadError(Exception):
    """The model path is not something we can load; the message says why."""


def resolve_model_path(path: str) -> str:
    """builtin:… and existing folders as they are; a Hub name: its snapshot in the local cache."""
    if path.startswith("builtin:") or Path(path).exists() or not is_hub_name(path):
        return path
    try:
        return resolve_hub_model(path)
    except ModelNotCached as err:
        raise ModelLoadError(str(err)) from None


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerFast


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level tokenizer: 256 byte tokens + special tokens, no merges, fully deterministic."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(TINY_SPECIAL_TOKENS)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|end|>", bos_token=None
    )
    fast.chat_template = TINY_CHAT_TEMPLATE
    return fast


def tiny_config(vocab_size: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
    )


def build_tiny(seed: int) -> LoadedModel:
    tokenizer = build_tiny_tokenizer()
    vocab = len(tokenizer)
    vocab = (vocab + 63) // 64 * 64  # round up: friendlier matmul shapes
    cfg = tiny_config(vocab)
    cfg.pad_token_id = tokenizer.pad_token_id
    cfg.eos_token_id = tokenizer.eos_token_id
    cfg._attn_implementation = ATTN_IMPLEMENTATION
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    return LoadedModel(model=model, tokenizer=tokenizer)


def load_pretrained(path: str, dtype: torch.dtype = torch.float32) -> LoadedModel:
    path = resolve_model_path(path)
    p = Path(path)
    if problem := model_dir_problem(path):
        raise ModelLoadError(problem)
    if not (p / "config.json").exists():
        raise ModelLoadError(f"model.path: {path!r} has no config.json; not a Hugging Face model folder")
    try:
        tokenizer = AutoTokenizer.from_pretrained(p, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(p, local_files_only=True, dtype=dtype,
                                                     attn_implementation=ATTN_IMPLEMENTATION)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"model.path: cannot load {path!r}: {err}") from None
    if not type(model).is_backend_compatible():
        # Its layers do not call the attention interface: let transformers build the block-diagonal
        # mask from the packed position_ids itself (dense, but correct).
        model.set_attn_implementation("sdpa")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    return LoadedModel(model=model, tokenizer=tokenizer)


def load_model(path: str, seed: int = 0, dtype: torch.dtype = torch.float32) -> LoadedModel:
    if path == "builtin:tiny":
        loaded = build_tiny(seed)
        loaded.model.to(dtype)
        return loaded
    return load_pretrained(path, dtype)
