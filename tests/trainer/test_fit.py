"""The fit estimate (trainer/fit.py): parameter counts from config.json shapes, model states
against DeepSpeed's own estimators, activations against the tensors torch really saves for the
backward pass, and (slow) the whole estimate against the measured peak memory of real CPU trials.

DeepSpeed's estimators and ours, where they differ (bf16 on GPU; P params, N GPUs, L the largest
layer's parameters):
- ZeRO-2: both 2P + 18P/N (bf16 weights, + bf16 grads 2, fp32 grads 4, master 4, Adam 8 per
  partition); offloading the optimizer: both 2P.
- ZeRO-3: DeepSpeed says 4L + 18P/N; we count 4L + 20P/N: each GPU also keeps its bf16
  parameter shard (2P/N), which DeepSpeed's comment (18 = 2 grads + 4 fp32 grads + 4 params +
  8 optimizer states) leaves out. Offloading the optimizer: both 4L + 2P/N; the parameters too: 4L.
- ZeRO-1 has no DeepSpeed estimator of its own (the ZeRO-2 one is meant for stages 1-2): stage 1
  keeps the full bf16 gradients until the boundary, 2P(1 - 1/N) more than ZeRO-2.
- Neither counts activations; DeepSpeed leaves its buckets out too (we add them apart).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainer import fit
from trainer.config import parse_trial_config
from trainer.known_shapes import KNOWN_SHAPES, PUBLISHED_PARAMS, lookup

REPO = Path(__file__).resolve().parents[2]
GB = 2**30


def llama(h: int, f: int, layers: int, heads: int, kv: int | None = None, vocab: int = 320, tied: bool = True) -> dict:
    return {"model_type": "llama", "vocab_size": vocab, "hidden_size": h, "intermediate_size": f,
            "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv or heads,
            "tie_word_embeddings": tied, "max_position_embeddings": 2048}


# ---- shapes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(KNOWN_SHAPES))
def test_known_shapes_give_the_published_parameter_counts(name):
    assert fit.shape_of(KNOWN_SHAPES[name]).params == pytest.approx(PUBLISHED_PARAMS[name], rel=0.01)


def test_a_folder_named_like_a_known_model_finds_its_shape():
    assert lookup("/models/Mistral-7B-v0.3")[0] == "mistralai/Mistral-7B-v0.3"
    assert lookup("Qwen/Qwen2.5-7B")[0] == "Qwen/Qwen2.5-7B"
    assert lookup("/models/my-own-model") is None


@pytest.mark.parametrize("config", [
    llama(64, 176, 2, 4, 2),  # builtin:tiny's shape, tied
    llama(96, 256, 3, 6, 2, vocab=500, tied=False),
    {"model_type": "qwen2", "vocab_size": 400, "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2,
     "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": False},  # q/k/v biases
], ids=["llama-tied-gqa", "llama-untied", "qwen2-bias"])
def test_the_parameter_count_is_the_built_model_s(config):
    from transformers import AutoConfig, AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config))
    shape = fit.shape_of(config)
    from deepspeed.runtime.zero.stage3 import model_to_params

    total, largest = model_to_params(model)
    assert shape.params == total
    assert shape.largest_layer_params == largest


def test_builtin_tiny_is_read_from_its_built_config():
    from trainer.models import build_tiny

    config, source = fit.model_config_of("builtin:tiny")
    assert "built config" in source
    model = build_tiny(0).model
    assert fit.shape_of(config).params == sum(p.numel() for p in model.parameters())


def test_a_hub_name_resolves_offline_to_its_cached_config(tmp_path, monkeypatch):
    snap = tmp_path / "hub" / "models--acme--tiny-llm" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps(llama(128, 344, 4, 4)))
    (tmp_path / "hub" / "models--acme--tiny-llm" / "refs").mkdir()
    (tmp_path / "hub" / "models--acme--tiny-llm" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config, source = fit.model_config_of("acme/tiny-llm")
    assert config["hidden_size"] == 128 and source.endswith("abc123/config.json")
    assert fit.model_config_of("acme/not-cached")[0] is None


# ---- model states against DeepSpeed's estimators ------------------------------------------------------

SIZES = ["meta-llama/Llama-3.2-1B", "Qwen/Qwen2.5-1.5B", "mistralai/Mistral-7B-v0.3", "meta-llama/Meta-Llama-3-8B"]


def states(name: str, stage: int, world: int, offload: str) -> int:
    s = fit.shape_of(KNOWN_SHAPES[name])
    parts = fit.model_states(s.params, stage, world, offload, fit.BF16, s.largest_layer_params)
    return sum(parts.values())


@pytest.mark.parametrize("name", SIZES)
@pytest.mark.parametrize("world", [1, 8])
@pytest.mark.parametrize("offload", ["none", "optimizer"])
def test_zero2_model_states_are_deepspeed_s(name, world, offload):
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    P = fit.shape_of(KNOWN_SHAPES[name]).params
    _, ds_gpu = estimate_zero2_model_states_mem_needs(P, num_gpus_per_node=world, cpu_offload=offload != "none")
    assert states(name, 2, world, offload) == pytest.approx(ds_gpu, abs=8)


@pytest.mark.parametrize("name", SIZES)
@pytest.mark.parametrize("world", [1, 8])
@pytest.mark.parametrize("offload", ["none", "optimizer", "optimizer+params"])
def test_zero3_model_states_are_deepspeed_s_plus_the_bf16_shard(name, world, offload):
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    s = fit.shape_of(KNOWN_SHAPES[name])
    _, ds_gpu, largest = estimate_zero3_model_states_mem_needs(
        s.params, s.largest_layer_params, num_gpus_per_node=world, cpu_offload=offload != "none",
        cpu_offload_params=offload == "optimizer+params")
    assert largest == 4 * s.largest_layer_params
    shard = 2 * s.params // world if offload == "none" else 0  # the bf16 parameter shard DeepSpeed leaves out
    assert states(name, 3, world, offload) == pytest.approx(ds_gpu + shard, abs=8)


@pytest.mark.parametrize("world", [1, 8])
def test_zero1_keeps_the_full_gradients(world):
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    P = fit.shape_of(KNOWN_SHAPES["mistralai/Mistral-7B-v0.3"]).params
    _, ds_gpu = estimate_zero2_model_states_mem_needs(P, num_gpus_per_node=world, cpu_offload=False)
    assert states("mistralai/Mistral-7B-v0.3", 1, world, "none") == pytest.approx(ds_gpu + 2 * P - 2 * P // world, abs=8)
    assert states("mistralai/Mistral-7B-v0.3", 0, world, "none") == 20 * P  # no partitioning at all


def test_the_all_live_estimators_agree_on_a_built_model(capsys):
    """DeepSpeed's ``_all_live`` estimators read a built model, ours its config: with our P and L
    the ``_all_cold`` ones print the very same table."""
    from deepspeed.runtime.zero.stage3 import (
        estimate_zero3_model_states_mem_needs_all_cold,
        estimate_zero3_model_states_mem_needs_all_live,
    )
    from transformers import LlamaConfig, LlamaForCausalLM

    config = llama(256, 688, 4, 4, 2, vocab=4000, tied=False)
    estimate_zero3_model_states_mem_needs_all_live(LlamaForCausalLM(LlamaConfig(**config)), num_gpus_per_node=4)
    live = capsys.readouterr().out
    s = fit.shape_of(config)
    estimate_zero3_model_states_mem_needs_all_cold(s.params, s.largest_layer_params, num_gpus_per_node=4)
    assert capsys.readouterr().out == live and "offload_param" in live


# ---- activations against what torch saves --------------------------------------------------------


def saved_bytes(config: dict, rows: int, length: int, dtype: torch.dtype, checkpointing: bool = False) -> int:
    """Bytes of the distinct tensors a real forward pass of the decoder saves for backward
    (weights left out; rows of several packed samples, as the trainer forms them)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from trainer.attention import ATTN_IMPLEMENTATION

    torch.manual_seed(0)
    cfg = LlamaConfig(**config)
    cfg._attn_implementation = ATTN_IMPLEMENTATION  # the trainer's packed attention (trainer/models.py)
    model = LlamaForCausalLM(cfg).to(dtype)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in weights:
            seen[st.data_ptr()] = st.nbytes()
        return t

    ids = torch.randint(0, config["vocab_size"], (rows, length))
    pos = torch.cat([torch.arange(length // 2), torch.arange(length - length // 2)]).expand(rows, length)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.model(input_ids=ids, position_ids=pos, use_cache=False)
    return sum(seen.values())


@pytest.mark.parametrize("precision,dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_the_saved_activations_are_what_torch_saves(precision, dtype):
    config = llama(128, 344, 3, 4)
    measured = saved_bytes(config, 8, 64, dtype)
    prec = fit.PRECISIONS[precision]
    head_input = prec.act * 128 * 8 * 64  # the final norm's output: saved by the loss's head, not the decoder
    ours = fit.activation_bytes(fit.shape_of(config), 8 * 64, False, prec) - head_input
    assert ours == pytest.approx(measured, rel=0.05)


def test_checkpointing_keeps_only_each_layer_s_input():
    config = llama(128, 344, 3, 4)
    s = fit.shape_of(config)
    measured = saved_bytes(config, 8, 64, torch.float32, checkpointing=True)
    layer = fit.layer_activation_bytes_per_token(s, fit.FP32) * 8 * 64
    head_input = 4 * 128 * 8 * 64  # the final norm's output: saved by the loss's head, not the decoder
    ours = fit.activation_bytes(s, 8 * 64, True, fit.FP32) - layer - head_input  # the layer is recomputed in backward
    assert ours == pytest.approx(measured, rel=0.05)


# ---- micro-batches and the checkpointing decision --------------------------------------------------


def test_micro_batch_tokens_follow_the_trainer_s_batching():
    from trainer.batching import DEFAULT_MICRO_BATCH_TOKENS

    assert fit.micro_batch_tokens("auto", None, 512, 3840, 8) == DEFAULT_MICRO_BATCH_TOKENS
    assert fit.micro_batch_tokens(16384, None, 4096, 3840, 8) == 16384
    assert fit.micro_batch_tokens(16384, None, 512, 16, 1) == 16 * 512  # a worker's share of the step
    assert fit.micro_batch_tokens(256, None, 1024, 64, 1) == 1024  # at least one whole sample
    assert fit.micro_batch_tokens(4096, 4, 512, 64, 1) == 4 * 512  # micro_batch_size replaces the budget


def trial(max_seq_len: int = 4096, batch: int = 3840, **resources):
    return parse_trial_config({
        "model": {"path": "builtin:tiny"}, "data": {"train": [{"path": "x.jsonl"}], "max_seq_len": max_seq_len},
        "hparams": {"effective_batch_size": batch}, "resources": resources})


def test_checkpointing_as_set_or_when_it_would_not_fit():
    assert fit.checkpointing_wanted(trial(activation_checkpointing=True)) is True
    assert fit.checkpointing_wanted(trial(activation_checkpointing=False), gpu_memory_gb=0.001) is False
    assert fit.checkpointing_wanted(trial(device="cpu")) is False  # CPU, no memory figure: off
    big = KNOWN_SHAPES["mistralai/Mistral-7B-v0.3"]
    gpu = trial(device="cuda", micro_batch_tokens=16384, num_workers=8)
    assert fit.checkpointing_wanted(gpu, big, gpu_memory_gb=80) is True  # ~128 GiB without it
    assert fit.checkpointing_wanted(gpu, big, gpu_memory_gb=141) is False
    assert fit.checkpointing_wanted(trial(device="cuda", gpu_memory_gb=80, micro_batch_tokens=16384,
                                          num_workers=8), big) is True


def test_the_7b_recipe_needs_checkpointing_on_80_gb():
    big = KNOWN_SHAPES["mistralai/Mistral-7B-v0.3"]
    without = fit.estimate(big, tokens=16384, zero_stage=2, world=8)
    with_ckpt = fit.estimate(big, tokens=16384, zero_stage=2, world=8, checkpointing=True)
    assert without.gib > 80 > with_ckpt.gib
    assert 28 < without.model_states / GB < 29.5  # 2P + 18P/8 for P = 7.25e9


# ---- the whole estimate against real CPU trials (slow) -------------------------------------------

# (shape, ZeRO stage, micro-batch tokens, activation checkpointing): ~5M, ~20M and ~60M parameters
MEASURED = {
    "5M-zero2": (dict(hidden=256, intermediate=688, layers=6, heads=4), 2, 2048, False),
    "20M-zero2": (dict(hidden=512, intermediate=1376, layers=6, heads=8), 2, 2048, False),
    "20M-zero2-ckpt": (dict(hidden=512, intermediate=1376, layers=6, heads=8), 2, 2048, True),
    "20M-zero3": (dict(hidden=512, intermediate=1376, layers=6, heads=8), 3, 2048, False),
    "60M-zero2": (dict(hidden=768, intermediate=2048, layers=8, heads=12), 2, 1024, False),
}


def measure(shape: dict, stage: int, tokens: int, checkpointing: bool) -> dict:
    """A real trial in a fresh process (tests/trainer/fit_probe.py): two optimizer steps of two
    micro-batches of ``tokens`` tokens each (128-token samples), fp32 on one CPU thread. glibc is
    told to map every large block apart and give it back when freed, so resident memory follows
    the live tensors (what the estimate counts) rather than the heap's history."""
    params = {**shape, "stage": stage, "micro_batch_tokens": tokens, "batch": 2 * tokens // 128,
              "max_seq_len": 128, "steps": 2, "checkpointing": checkpointing}
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072",
           "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "tests.trainer.fit_probe", json.dumps(params)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=900)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("FIT_PROBE ")]
    assert out.returncode == 0 and lines, out.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("FIT_PROBE "))


@pytest.mark.slow
@pytest.mark.parametrize("case", list(MEASURED))
def test_the_estimate_is_within_25_percent_of_a_real_trial_s_peak(case):
    shape, stage, tokens, ckpt = MEASURED[case]
    got = measure(shape, stage, tokens, ckpt)
    est = fit.estimate(got["config"], tokens=tokens, zero_stage=stage, world=1, checkpointing=ckpt, precision="fp32")
    ratio = est.total / got["peak_bytes"]
    print(f"{case}: {est.params / 1e6:.1f}M params, estimate {est.total / 2**20:.0f} MiB, "
          f"measured {got['peak_bytes'] / 2**20:.0f} MiB, ratio {ratio:.3f}")
    assert 0.75 <= ratio <= 1.25
