"""Shapes of well-known models, for the fit check of a spec whose model is not on this machine.

NOT read from any model: these are copies of the public ``config.json`` fields that the memory
estimate needs (trainer/fit.py), written down here by hand so that ``sweepd validate
--no-check-paths`` can judge a spec meant for a GPU cluster (examples/recipe_7b.yaml names
``/models/Mistral-7B-v0.3``, which exists only there). A real ``config.json`` always wins: the
table is used only when the model path has none here, and what the check prints says so.

Keyed by Hugging Face Hub name; ``lookup`` also matches a path's last component (a local folder
named after the model, e.g. ``/models/Mistral-7B-v0.3``), case-insensitively.
"""

from __future__ import annotations

from pathlib import PurePosixPath

KNOWN_SHAPES: dict[str, dict] = {
    "mistralai/Mistral-7B-v0.1": {
        "model_type": "mistral", "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "tie_word_embeddings": False, "max_position_embeddings": 32768,
    },
    "mistralai/Mistral-7B-v0.3": {
        "model_type": "mistral", "vocab_size": 32768, "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "tie_word_embeddings": False, "max_position_embeddings": 32768,
    },
    "meta-llama/Meta-Llama-3-8B": {
        "model_type": "llama", "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "tie_word_embeddings": False, "max_position_embeddings": 8192,
    },
    "meta-llama/Llama-3.1-8B": {
        "model_type": "llama", "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "tie_word_embeddings": False, "max_position_embeddings": 131072,
    },
    "meta-llama/Llama-3.2-1B": {
        "model_type": "llama", "vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192,
        "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
        "tie_word_embeddings": True, "max_position_embeddings": 131072,
    },
    "meta-llama/Llama-3.2-3B": {
        "model_type": "llama", "vocab_size": 128256, "hidden_size": 3072, "intermediate_size": 8192,
        "num_hidden_layers": 28, "num_attention_heads": 24, "num_key_value_heads": 8, "head_dim": 128,
        "tie_word_embeddings": True, "max_position_embeddings": 131072,
    },
    "Qwen/Qwen2.5-1.5B": {
        "model_type": "qwen2", "vocab_size": 151936, "hidden_size": 1536, "intermediate_size": 8960,
        "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2,
        "tie_word_embeddings": True, "max_position_embeddings": 131072,
    },
    "Qwen/Qwen2.5-7B": {
        "model_type": "qwen2", "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944,
        "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
        "tie_word_embeddings": False, "max_position_embeddings": 131072,
    },
}  # fmt: skip

# Parameter counts as published on each model card, for the test that the shapes above (and the
# counting in trainer/fit.py) are right.
PUBLISHED_PARAMS: dict[str, float] = {
    "mistralai/Mistral-7B-v0.1": 7.24e9,
    "mistralai/Mistral-7B-v0.3": 7.25e9,
    "meta-llama/Meta-Llama-3-8B": 8.03e9,
    "meta-llama/Llama-3.1-8B": 8.03e9,
    "meta-llama/Llama-3.2-1B": 1.24e9,
    "meta-llama/Llama-3.2-3B": 3.21e9,
    "Qwen/Qwen2.5-1.5B": 1.54e9,
    "Qwen/Qwen2.5-7B": 7.62e9,
}


def lookup(path: str) -> tuple[str, dict] | None:
    """(the Hub name, its shape) for a Hub name or a folder named like one's last part; else None."""
    wanted = path.strip().rstrip("/").lower()
    last = PurePosixPath(wanted).name
    for name, shape in KNOWN_SHAPES.items():
        if wanted == name.lower() or last == name.lower().rsplit("/", 1)[1]:
            return name, dict(shape)
    return None
