"""The last decoder layer's MLP runs on the tokens with a target only (trainer/last_layer.py).

The curves over several steps, at ZeRO 0 and 3, are compared in test_memory.py: with activation
checkpointing on, the trim is off, and its steps equal the trimmed baseline's (rel 1e-5)."""

import pytest
import torch
from transformers import (Gemma2Config, Gemma2ForCausalLM, LlamaForCausalLM, Qwen3Config,
                          Qwen3ForCausalLM)

import trainer.last_layer as last_layer
from trainer.batching import Batch
from trainer.data import IGNORE
from trainer.loss import full_logits_loss, summed_loss
from trainer.models import tiny_config

VOCAB = 256


def packed_batch(lengths: list[int], seed: int = 0) -> Batch:
    """One row of samples back to back (positions restart per sample), a prompt in each."""
    g = torch.Generator().manual_seed(seed)
    n = sum(lengths)
    ids = torch.randint(0, VOCAB, (1, n), generator=g)
    targets = torch.randint(0, VOCAB, (1, n), generator=g)
    pos, start = torch.zeros((1, n), dtype=torch.long), 0
    for k in lengths:
        pos[0, start:start + k] = torch.arange(k)
        targets[0, start:start + k // 2] = IGNORE  # the prompt
        targets[0, start + k - 1] = IGNORE  # the last token predicts nothing
        start += k
    return Batch(ids, targets, pos, None, n, int((targets != IGNORE).sum()))


def models():
    yield "llama", LlamaForCausalLM(tiny_config(VOCAB))
    # Gemma 2 norms the MLP's output again; Qwen 3 norms queries and keys
    yield "gemma2", Gemma2ForCausalLM(Gemma2Config(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, final_logit_softcapping=None, attn_logit_softcapping=None))
    yield "qwen3", Qwen3ForCausalLM(Qwen3Config(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16))


def loss_and_grads(model, fn, b):
    model.zero_grad()
    value = fn(model, b)
    value.backward()
    return value.item(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def mlp_inputs(mlp) -> tuple[list, object]:
    """Tokens per call of `mlp`, as its first projection sees them (after the trim's own hook)."""
    seen: list[int] = []
    first = next(m for m in mlp.children() if isinstance(m, torch.nn.Linear))
    handle = first.register_forward_pre_hook(lambda m, args: seen.append(args[0].reshape(-1, args[0].size(-1)).size(0)))
    return seen, handle


@pytest.mark.parametrize("name,model", list(models()), ids=lambda x: x if isinstance(x, str) else "")
def test_the_last_mlp_sees_only_loss_tokens_and_the_loss_and_grads_stay_the_same(name, model):
    torch.manual_seed(0)
    b = packed_batch([30, 55, 17, 40])
    assert last_layer.trim_is_exact(model, b.input_ids, b.position_ids)
    summed_loss(model, b)  # the once-per-model probes run here, not below
    layers = model.get_decoder().layers
    seen_last, h1 = mlp_inputs(layers[-1].mlp)
    seen_first, h2 = mlp_inputs(layers[0].mlp)
    trimmed = loss_and_grads(model, lambda m, x: summed_loss(m, x, chunk_tokens=37), b)
    h1.remove()
    h2.remove()
    full = loss_and_grads(model, full_logits_loss, b)
    assert seen_last == [b.loss_tokens] and b.loss_tokens < b.real_tokens / 2
    assert seen_first == [b.real_tokens]  # the layers below still run on every token
    assert trimmed[0] == pytest.approx(full[0], rel=1e-6)
    torch.testing.assert_close(trimmed[1], full[1], rtol=1e-5, atol=1e-6 * full[1].abs().max().item())


def test_with_activation_checkpointing_the_last_mlp_runs_on_every_token():
    model = LlamaForCausalLM(tiny_config(VOCAB))
    assert last_layer.last_mlp(model) is model.model.layers[-1].mlp
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    assert last_layer.last_mlp(model) is None


def test_a_mixture_of_experts_block_is_not_trimmed():
    model = LlamaForCausalLM(tiny_config(VOCAB))

    class SparseMoeBlock(torch.nn.Module):  # stands for a router + experts: not a dense "...MLP"
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    model.model.layers[-1].mlp = SparseMoeBlock(model.model.layers[-1].mlp)
    assert last_layer.last_mlp(model) is None


def test_a_model_that_mixes_tokens_after_the_last_mlp_fails_the_probe_and_trains_in_full():
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config(VOCAB))
    norm = model.model.norm

    class MixingNorm(torch.nn.Module):  # each token's output reads the next token's
        def forward(self, x):
            return norm(x + 0.5 * torch.roll(x, -1, dims=1))

    model.model.norm = MixingNorm()
    b = packed_batch([30, 40])
    assert not last_layer.trim_is_exact(model, b.input_ids, b.position_ids)
    summed_loss(model, b)  # the once-per-model probes run here, not below
    seen, handle = mlp_inputs(model.model.layers[-1].mlp)
    trained = loss_and_grads(model, lambda m, x: summed_loss(m, x, chunk_tokens=37), b)
    handle.remove()
    assert seen == [b.real_tokens]
    assert trained[0] == pytest.approx(full_logits_loss(model, b).item(), rel=1e-6)


def test_a_micro_batch_without_loss_tokens_runs_the_last_mlp_on_nothing():
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config(VOCAB))
    b = packed_batch([20, 30])
    summed_loss(model, b)  # the once-per-model probes
    empty = Batch(b.input_ids, torch.full_like(b.targets, IGNORE), b.position_ids, None, b.real_tokens, 0)
    seen, handle = mlp_inputs(model.model.layers[-1].mlp)
    value = summed_loss(model, empty)
    value.backward()
    handle.remove()
    assert seen == [0] and value.item() == 0.0


def test_the_probe_passes_in_bf16_where_matmuls_round_by_shape():
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config(VOCAB)).to(torch.bfloat16)
    b = packed_batch([30, 40])
    assert last_layer.trim_is_exact(model, b.input_ids, b.position_ids)
