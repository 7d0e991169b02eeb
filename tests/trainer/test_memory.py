"""Memory savers change nothing but memory: activation checkpointing, the chunked loss, ZeRO offload.

Each trial-level test runs builtin:tiny for a few steps with and without one saver, at the same
ZeRO stage, and asserts the same loss and grad norm at every step. The chunked loss runs with
tiny chunks throughout (`small_chunks`), so every micro-batch is many chunks.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from transformers import LlamaForCausalLM

import trainer.loop as loop
import trainer.loss as loss_mod
from trainer.batching import Batch
from trainer.data import IGNORE
from trainer.loop import deepspeed_config, run_trial
from trainer.loss import chunked_cross_entropy, full_logits_loss, summed_loss
from trainer.memory import apply_activation_checkpointing, make_optimizer, offload_config
from trainer.models import tiny_config
from trainer.reporting import InMemoryReporter

CHUNK = 64  # rows per chunk in these tests (the smallest chunk_tokens_for gives)
STEPS = 4


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """builtin:tiny's matrices are too small to split: two threads make these trials 2-7x slower
    on a busy 2-core machine (OpenMP waits), one keeps the file's trials at a second or two each."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(loss_mod, "MAX_CHUNK_TOKENS", CHUNK)


@pytest.fixture(autouse=True)
def zero3_partitions_everything(monkeypatch):
    """ZeRO-3 keeps parameters under 1e5 elements whole on every rank (all of builtin:tiny's); with
    the threshold at 0 every module call gathers its parameters and releases them, as at 7B."""
    make = loop.deepspeed_config

    def config(cfg, world, on_gpu):
        out = make(cfg, world, on_gpu)
        out["zero_optimization"]["stage3_param_persistence_threshold"] = 0
        return out

    monkeypatch.setattr(loop, "deepspeed_config", config)


@pytest.fixture(scope="module")
def few_samples(synth_dir, tmp_path_factory):
    """The first 64 training samples: STEPS steps of 8 need 32, and loading all 2,000 costs seconds."""
    path = tmp_path_factory.mktemp("memory") / "train.jsonl"
    path.write_text("\n".join((synth_dir / "train.jsonl").read_text().splitlines()[:64]) + "\n")
    return path


@pytest.fixture
def short_trial(trial_cfg, few_samples):
    """STEPS steps of 8 samples, several micro-batches each."""

    def make(**resources):
        return trial_cfg(hparams={"effective_batch_size": 8}, budget={"max_steps": STEPS},
                         data={"train": [{"path": str(few_samples)}], "max_seq_len": 256},
                         resources={"micro_batch_tokens": 512, **resources})

    return make


def curve(cfg) -> list[tuple[float, float]]:
    rep = InMemoryReporter()
    assert run_trial(cfg, rep)["status"] == "completed"
    return [(s["loss"], s["grad_norm"]) for s in rep.steps if "event" not in s]


@pytest.fixture(scope="module")
def baselines():
    return {}


@pytest.fixture
def baseline(short_trial, baselines):
    """The trial at a ZeRO stage without any saver but the chunked loss; run once per stage."""

    def at(stage):
        if stage not in baselines:
            baselines[stage] = curve(short_trial(zero_stage=stage, activation_checkpointing=False))
        return baselines[stage]

    return at


def assert_same(a, b):
    assert len(a) == len(b) == STEPS
    for (la, ga), (lb, gb) in zip(a, b):
        assert la == pytest.approx(lb, rel=1e-5) and ga == pytest.approx(gb, rel=1e-5), (a, b)


# ---- activation checkpointing -------------------------------------------------------------------

@pytest.mark.parametrize("stage", [0, 3])
def test_activation_checkpointing_recomputes_and_changes_no_step(short_trial, baseline, monkeypatch, stage):
    in_backward = []  # per call of layer 0's MLP with grad on: whether autograd's backward ran it

    def record(*_):
        if torch.is_grad_enabled():
            in_backward.append(torch._C._current_graph_task_id() != -1)

    def spy(model, cfg, device):
        on = apply_activation_checkpointing(model, cfg, device)
        # a pre-hook: the recompute stops early, after the layer's last saved tensor, so a forward
        # hook on the MLP would not see it
        model.model.layers[0].mlp.register_forward_pre_hook(record)
        return on

    monkeypatch.setattr(loop, "apply_activation_checkpointing", spy)
    checkpointed = curve(short_trial(zero_stage=stage, activation_checkpointing=True))
    assert in_backward.count(True) == in_backward.count(False) > 0  # each forward ran again in backward
    assert_same(checkpointed, baseline(stage))


# ---- the chunked loss ---------------------------------------------------------------------------

@pytest.mark.parametrize("stage", [0, 3])
def test_chunked_loss_gives_the_steps_of_full_logits(short_trial, baseline, monkeypatch, stage):
    monkeypatch.setattr(loop, "summed_loss", full_logits_loss)
    full = curve(short_trial(zero_stage=stage, activation_checkpointing=False))
    assert_same(baseline(stage), full)


def random_batch(vocab: int, rows: int, length: int, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (rows, length), generator=g)
    targets = torch.randint(0, vocab, (rows, length), generator=g)
    targets[:, : length // 3] = IGNORE  # a prompt
    targets[:, -1] = IGNORE
    pos = torch.arange(length).expand(rows, length).contiguous()
    mask = torch.ones(length, length, dtype=torch.bool).tril().expand(rows, 1, length, length)
    loss_tokens = int((targets != IGNORE).sum())
    return Batch(ids, targets, pos, mask, rows * length, loss_tokens)


def test_chunked_loss_and_grads_equal_full_logits_on_a_bare_model():
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config(512))  # tied embeddings: the head's weight is the embedding's
    b = random_batch(512, rows=3, length=100)
    values, grads = [], []
    for fn in (lambda: summed_loss(model, b, chunk_tokens=37), lambda: full_logits_loss(model, b)):
        model.zero_grad()
        value = fn()
        value.backward()
        values.append(value.item())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert values[0] == pytest.approx(values[1], rel=1e-6)
    # summed (not averaged) over ~200 tokens: compare each gradient to the largest one's scale
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6 * grads[1].abs().max().item())


def test_a_scaled_head_is_scaled_per_chunk_too():
    from transformers import GraniteConfig, GraniteForCausalLM

    cfg = GraniteConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=1, logits_scaling=4.0)
    model = GraniteForCausalLM(cfg)
    b = random_batch(256, rows=2, length=40)
    assert loss_mod._head_is_the_whole_story(model, model, b)
    chunked, full = summed_loss(model, b, chunk_tokens=16).item(), full_logits_loss(model, b).item()
    assert chunked == pytest.approx(full, rel=1e-5)


def test_a_model_whose_forward_changes_its_logits_unknown_to_us_trains_on_full_logits(caplog):
    class Doubled(LlamaForCausalLM):
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * 2
            return out

    model = Doubled(tiny_config(64))
    b = random_batch(64, rows=2, length=30)
    assert summed_loss(model, b, chunk_tokens=16).item() == full_logits_loss(model, b).item()
    assert "full logits" in caplog.text


class LargestLogits(TorchDispatchMode):
    """The most elements of any tensor an op returns whose last dimension is the vocabulary."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab, self.largest = vocab, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.dim() and t.shape[-1] == self.vocab:
                self.largest = max(self.largest, t.numel())
        return out


def test_the_chunked_loss_never_holds_more_than_one_chunk_of_logits():
    vocab, rows, length, chunk = 4096, 8, 256, 128  # full fp32 logits: 2048 x 4096 (32 MiB)
    model = LlamaForCausalLM(tiny_config(vocab))
    b = random_batch(vocab, rows, length)
    loss_mod._head_is_the_whole_story(model, model, b)  # the one-time check, done before counting
    head_rows = []
    model.lm_head.register_forward_hook(lambda m, args, out: head_rows.append(args[0].shape[0]))
    sizes = {}
    for name, fn in (("chunked", lambda: summed_loss(model, b, chunk_tokens=chunk)),
                     ("full", lambda: full_logits_loss(model, b))):
        with LargestLogits(vocab) as spy:
            fn().backward()
        sizes[name] = spy.largest
    assert sizes["full"] >= rows * length * vocab
    assert sizes["chunked"] <= chunk * vocab  # forward, and the recompute in backward: a chunk at a time
    chunk_calls = head_rows[:-1]  # the last call is full_logits_loss's
    assert max(chunk_calls) <= chunk and sum(chunk_calls) == 2 * b.loss_tokens  # forward + recompute


def test_chunks_split_the_loss_tokens_evenly_and_run_the_head_once_without_any():
    head = torch.nn.Linear(8, 16, bias=False)
    calls = []
    head.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    hidden = torch.randn(1, 10, 8, requires_grad=True)
    targets = torch.full((1, 10), IGNORE)
    targets[0, :7] = torch.arange(7)
    chunked_cross_entropy(head, hidden, targets, chunk_tokens=3).backward()
    assert calls[:3] == [3, 2, 2] and sorted(calls[3:]) == [2, 2, 3]  # forward, then recomputed in backward
    calls.clear()
    none = chunked_cross_entropy(head, hidden, torch.full((1, 10), IGNORE), chunk_tokens=3)
    none.backward()
    assert none.item() == 0.0 and calls == [0]  # every rank calls the head, as ZeRO-3 needs


def test_a_loss_that_fits_one_chunk_runs_the_head_once_with_the_same_loss_and_grads():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 16, bias=False)
    calls = []
    head.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    hidden = torch.randn(1, 10, 8, requires_grad=True)
    targets = torch.randint(0, 16, (1, 10))
    targets[0, 2] = IGNORE
    one = chunked_cross_entropy(head, hidden, targets, chunk_tokens=64)
    one.backward()
    assert calls == [9]  # no checkpoint recompute in backward
    got = (one.detach(), hidden.grad.clone(), head.weight.grad.clone())
    hidden.grad, head.weight.grad = None, None
    ref = torch.nn.functional.cross_entropy(head(hidden).view(-1, 16).float(), targets.view(-1),
                                            ignore_index=IGNORE, reduction="sum")
    ref.backward()
    torch.testing.assert_close(got[0], ref.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[1], hidden.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[2], head.weight.grad, rtol=1e-5, atol=1e-6)


def test_chunk_size_scales_with_the_vocabulary(monkeypatch):
    monkeypatch.setattr(loss_mod, "MAX_CHUNK_TOKENS", 4096)
    assert loss_mod.chunk_tokens_for(32_000) == 2097
    assert loss_mod.chunk_tokens_for(128_256) == 523  # 523 x 128256 fp32 logits: 256 MiB
    assert loss_mod.chunk_tokens_for(320) == 4096


# ---- ZeRO offload -------------------------------------------------------------------------------

def test_offload_maps_to_deepspeed_zero_settings(trial_cfg):
    assert offload_config("none", on_gpu=True) == {}
    assert offload_config("optimizer", on_gpu=True) == {"offload_optimizer": {"device": "cpu", "pin_memory": True}}
    both = offload_config("optimizer+params", on_gpu=False)
    assert both == {"offload_optimizer": {"device": "cpu", "pin_memory": False},
                    "offload_param": {"device": "cpu", "pin_memory": False}}
    ds = deepspeed_config(trial_cfg(resources={"zero_stage": 3, "offload": "optimizer+params"}), 1, False)
    assert ds["zero_optimization"]["stage"] == 3 and ds["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert ds["zero_force_ds_cpu_optimizer"] is False  # torch's AdamW where DeepSpeed's CPU Adam is not built


def test_offload_on_a_gpu_uses_deepspeeds_cpu_adam_when_it_builds(trial_cfg, monkeypatch):
    import deepspeed.ops.adam

    cfg = trial_cfg(resources={"zero_stage": 2, "offload": "optimizer"})
    model = LlamaForCausalLM(tiny_config(64))
    assert type(make_optimizer(model, cfg, on_gpu=False)) is torch.optim.AdamW  # CPU trial: no compile

    class CpuAdam(torch.optim.AdamW):
        def __init__(self, params, adamw_mode, **kwargs):
            assert adamw_mode
            super().__init__(params, **kwargs)

    monkeypatch.setattr(deepspeed.ops.adam, "DeepSpeedCPUAdam", CpuAdam)
    assert type(make_optimizer(model, cfg, on_gpu=True)) is CpuAdam
    assert type(make_optimizer(model, trial_cfg(), on_gpu=True)) is torch.optim.AdamW  # no offload

    class NotBuilt:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("Error building extension 'cpu_adam'")

    monkeypatch.setattr(deepspeed.ops.adam, "DeepSpeedCPUAdam", NotBuilt)
    assert type(make_optimizer(model, cfg, on_gpu=True)) is torch.optim.AdamW


@pytest.mark.parametrize("stage,offload", [(2, "optimizer"), (3, "optimizer+params")])
def test_offload_changes_no_step(short_trial, baseline, monkeypatch, stage, offload):
    import deepspeed

    engines = []
    initialize = deepspeed.initialize

    def spy(*args, **kwargs):
        out = initialize(*args, **kwargs)
        engines.append(out[0])
        return out

    monkeypatch.setattr(deepspeed, "initialize", spy)
    offloaded = curve(short_trial(zero_stage=stage, offload=offload, activation_checkpointing=False))
    assert engines[0].zero_cpu_offload()
    assert (engines[0].zero_offload_param() is not None) == (offload == "optimizer+params")
    assert_same(offloaded, baseline(stage))


# ---- ZeRO-3 across workers: the same number of head calls on every rank -------------------------

def test_at_zero3_a_rank_runs_as_many_chunks_as_the_busiest(monkeypatch):
    def another_rank_needs_five(t, op=None):
        t.fill_(max(int(t.item()), 5))

    monkeypatch.setattr(loss_mod.dist, "all_reduce", another_rank_needs_five)
    head = torch.nn.Linear(8, 16, bias=False)
    calls = []
    head.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    targets = torch.full((1, 10), IGNORE)
    targets[0, :7] = torch.arange(7)
    hidden = torch.randn(1, 10, 8)
    value = chunked_cross_entropy(head, hidden, targets, chunk_tokens=3, agree_across_ranks=True)
    assert calls == [2, 2, 1, 1, 1]  # five chunks, as on the busiest rank
    expected = torch.nn.functional.cross_entropy(head(hidden[0, :7]), targets[0, :7], reduction="sum")
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)


TWO_WORKERS = """
import os, sys, json
import torch.multiprocessing as mp

def worker(rank, port, data, out):
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), DS_ACCELERATOR="cpu")
    import trainer.loop as loop, trainer.loss as loss
    from trainer.config import parse_trial_config
    from trainer.reporting import InMemoryReporter
    loss.MAX_CHUNK_TOKENS = 64  # many chunks, and a different number on each rank
    make = loop.deepspeed_config
    def config(cfg, world, on_gpu):  # every parameter partitioned: each head call is an all-gather
        c = make(cfg, world, on_gpu)
        c["zero_optimization"]["stage3_param_persistence_threshold"] = 0
        return c
    loop.deepspeed_config = config
    cfg = parse_trial_config({"model": {"path": "builtin:tiny"}, "seed": 0,
        "data": {"train": [{"path": data}], "max_seq_len": 256}, "budget": {"max_steps": 2},
        "hparams": {"effective_batch_size": 8, "learning_rate": 1e-3, "warmup_steps": 0, "lr_scheduler": "constant"},
        "resources": {"num_workers": 2, "zero_stage": 3, "micro_batch_tokens": 512, "activation_checkpointing": True}})
    rep = InMemoryReporter()
    result = loop.run_trial(cfg, rep)
    if rank == 0:
        with open(out, "w") as f:
            json.dump(result, f)

if __name__ == "__main__":
    from trainer.distributed import free_port
    mp.start_processes(worker, args=(free_port(), sys.argv[1], sys.argv[2]), nprocs=2, start_method="spawn")
"""


@pytest.mark.slow  # ~1 min on 2 cores: two DeepSpeed workers
def test_two_zero3_workers_with_different_chunk_counts_finish(few_samples, tmp_path):
    script, out = tmp_path / "two_workers.py", tmp_path / "result.json"
    script.write_text(TWO_WORKERS)
    root = str(Path(loop.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, str(script), str(few_samples), str(out)], capture_output=True,
                          text=True, timeout=300, cwd=root, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(out.read_text())["status"] == "completed"
