"""Measures one real CPU trial's peak memory, for tests/trainer/test_fit.py. Run in a subprocess:

    python -m tests.trainer.fit_probe '{"hidden": 256, "layers": 6, ...}'

A Llama-shaped model of the given shape (random weights, built here: no files) trains a few
steps through the trainer's own loop (DeepSpeed, fp32 on CPU) on fixed-length samples, so every
micro-batch has the same tokens. Prints one JSON line: the peak RSS minus the RSS just before the
model is built (VmHWM, reset through /proc/self/clear_refs), and the shape's config.

A warm-up trial of builtin:tiny first imports and initialises everything the loop touches
(DeepSpeed, the gloo process group, the tokenizer), so the baseline holds the libraries and only
the model, its states, the activations and the batches fall into the difference.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import sys
import tempfile
from pathlib import Path


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def llama_config(p: dict, vocab: int) -> dict:
    return {"model_type": "llama", "vocab_size": vocab, "hidden_size": p["hidden"], "intermediate_size": p["intermediate"],
            "num_hidden_layers": p["layers"], "num_attention_heads": p["heads"],
            "num_key_value_heads": p.get("kv_heads", p["heads"]), "tie_word_embeddings": p.get("tied", True),
            "max_position_embeddings": 2048, "rms_norm_eps": 1e-5}


def write_data(path: Path, n: int, length: int) -> None:
    """Samples of exactly ``length`` tokens with builtin:tiny's byte-level template (4 markers)."""
    user = length // 3
    assistant = length - 4 - user
    line = json.dumps({"messages": [{"role": "user", "content": "a" * user},
                                    {"role": "assistant", "content": "b" * assistant}]})
    path.write_text("\n".join([line] * n) + "\n")


def main(params: dict) -> dict:
    device = params.get("device", "cpu")
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if device == "cuda" else "cpu")
    import torch

    if device == "cpu":
        torch.set_num_threads(1)
    from transformers import LlamaConfig, LlamaForCausalLM

    import trainer.models as models
    from trainer.attention import ATTN_IMPLEMENTATION
    from trainer.config import parse_trial_config
    from trainer.loop import run_trial
    from trainer.reporting import InMemoryReporter

    tmp = Path(tempfile.mkdtemp(prefix="fit_probe_"))
    data = tmp / "train.jsonl"
    seq = params.get("max_seq_len", 128)
    write_data(data, 4 * params.get("batch", 16) * params.get("steps", 2), params.get("sample_tokens", seq))

    def trial(path: str, steps: int, ckpt: bool):
        return parse_trial_config({
            "model": {"path": path},
            "data": {"train": [{"path": str(data)}], "max_seq_len": seq},
            "hparams": {"effective_batch_size": params.get("batch", 16), "learning_rate": 1e-4},
            "budget": {"max_steps": steps},
            "resources": {"num_workers": 1, "zero_stage": params.get("stage", 2), "device": device,
                          "micro_batch_tokens": params.get("micro_batch_tokens", 2048),
                          "activation_checkpointing": ckpt},
        })

    run_trial(trial("builtin:tiny", 1, False), InMemoryReporter())  # warm-up: imports, process group

    original = models.build_tiny
    holder: dict = {}

    def build(seed: int):
        loaded = original(seed)
        cfg = llama_config(params, params.get("vocab", loaded.model.config.vocab_size))
        holder["config"] = cfg
        config = LlamaConfig(**cfg)
        config._attn_implementation = ATTN_IMPLEMENTATION  # as trainer/models.py builds models
        loaded.model = LlamaForCausalLM(config)  # the loop turns on checkpointing (trainer/memory.py)
        return loaded

    models.build_tiny = build
    if device == "cuda":
        return measure_cuda(params, lambda: run_trial(trial("builtin:tiny", params.get("steps", 2),
                                                            bool(params.get("checkpointing"))), InMemoryReporter()),
                            holder)
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    base = rss_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    rep = InMemoryReporter()
    run_trial(trial("builtin:tiny", params.get("steps", 2), bool(params.get("checkpointing"))), rep)
    peak = rss_kib("VmHWM")
    return {"peak_bytes": (peak - base) * 1024, "baseline_bytes": base * 1024, "config": holder["config"],
            "steps": len(rep.steps), "params": params}


def measure_cuda(params: dict, run, holder: dict) -> dict:
    """On a GPU: the peak of PyTorch's allocations (what the estimate less its fixed overhead
    counts), the peak the caching allocator reserved, and the memory the GPU lost besides
    (CUDA context, cuBLAS workspaces, NCCL), read after the warm-up trial."""
    import torch

    gc.collect()
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info()
    context = (total - free) - torch.cuda.memory_reserved()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    run()
    return {"peak_bytes": torch.cuda.max_memory_allocated() - base, "reserved_bytes": torch.cuda.max_memory_reserved(),
            "context_bytes": context, "baseline_bytes": base, "config": holder["config"], "params": params,
            "gpu": torch.cuda.get_device_name(0), "total_bytes": total}


if __name__ == "__main__":
    print("FIT_PROBE " + json.dumps(main(json.loads(sys.argv[1]))), flush=True)
