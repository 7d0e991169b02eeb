"""Packed attention without a dense mask (trainer/attention.py) against the dense 4D-mask reference."""

import copy

import pytest
import torch
import torch.nn.functional as F
from transformers import MistralConfig, MistralForCausalLM

from trainer import attention
from trainer.batching import collate
from trainer.data import IGNORE, ChatTokenizer, load_samples
from trainer.evaluation import greedy_answers, per_sample_loss
from trainer.models import build_tiny


@pytest.fixture(scope="module")
def tiny():
    return build_tiny(seed=0)


@pytest.fixture(scope="module")
def reference(tiny):
    """The same weights on transformers' own SDPA attention: the dense-mask reference."""
    model = copy.deepcopy(tiny.model)
    model.set_attn_implementation("sdpa")
    return model


@pytest.fixture(scope="module")
def samples(synth_dir, tiny):
    return load_samples([str(synth_dir / "train.jsonl")], ChatTokenizer(tiny.tokenizer), 512)


@pytest.fixture(scope="module")
def rows(samples):
    """Three rows of different fill: three samples, one (the most padding), two; lengths all differ."""
    by_len = sorted(samples[:40], key=len)
    picked = [by_len[i] for i in (0, 5, 12, 20, 30, 39)]
    assert len({len(s) for s in picked}) == len(picked)
    return [[picked[0], picked[3], picked[1]], [picked[2]], [picked[5], picked[4]]]


def _logits(model, batch):
    return model(input_ids=batch.input_ids, position_ids=batch.position_ids,
                 attention_mask=batch.attention_mask, use_cache=False).logits


def test_the_models_load_with_the_packed_attention(tiny):
    assert tiny.model.config._attn_implementation == attention.ATTN_IMPLEMENTATION


def test_collate_builds_no_mask_unless_asked_for_the_dense_reference(tiny, rows):
    pad = tiny.tokenizer.pad_token_id
    new, ref = collate(rows, pad), collate(rows, pad, dense_mask=True)
    assert new.attention_mask is None
    L = new.input_ids.shape[1]
    assert ref.attention_mask.shape == (len(rows), 1, L, L)
    for a, b in ((new.input_ids, ref.input_ids), (new.targets, ref.targets), (new.position_ids, ref.position_ids)):
        assert torch.equal(a, b)
    assert (new.real_tokens, new.loss_tokens) == (ref.real_tokens, ref.loss_tokens)


def test_segments_come_from_the_position_ids():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0, 0, 0], [0, 1, 2, 3, 4, 5, 6, 7]])
    seg = attention.segments_from_position_ids(pos)
    # row 0: a 3-token sample, a 2-token one, then three one-token segments (padding)
    assert seg.cu_seqlens == [0, 3, 5, 6, 7, 8, 16]
    assert seg.max_len == 8


def test_segments_are_grouped_by_length_padded_at_their_ends():
    # segments of 8, 7, 3, 2, 1, 1, 1 tokens over two rows of 11 (a flat index per token)
    cu = [0, 8, 11, 18, 20, 21, 22]
    groups = attention.segment_groups(cu, torch.device("cpu"))
    lengths = [b - a for a, b in zip(cu[:-1], cu[1:])]
    assert sum(n for n, _ in groups.sizes) == len(lengths)  # every segment in exactly one group
    assert groups.gather.numel() == sum(n * w for n, w in groups.sizes)
    padded_work = sum(n * w * w for n, w in groups.sizes)  # attention work grows with length squared
    slack = attention.GROUP_SLACK_TOKENS**2 * len(groups.sizes)
    assert padded_work <= attention.GROUP_PADDING * sum(k * k for k in lengths) + slack
    # scattering the gathered tokens back gives every token itself
    assert torch.equal(groups.gather[groups.scatter], torch.arange(cu[-1]))
    # within a group, a segment's row of the padded block is its own tokens, then its last token again
    offset = 0
    for n, w in groups.sizes:
        block = groups.gather[offset:offset + n * w].view(n, w)
        for row in block.tolist():
            first = row[0]
            k = next((i for i in range(1, w) if row[i] != first + i), w)
            assert row[:k] == list(range(first, first + k)) and all(t == first + k - 1 for t in row[k:])
        offset += n * w


def test_groups_bound_the_padded_attention_work_not_the_padded_tokens():
    # a 268-token segment and a 150-token one: padding the second to 268 adds 79% tokens (within
    # 1.25x of the pair's tokens plus 64) but 3.2x its attention work, so they go in separate groups;
    # five near-equal short ones share one
    lengths = [268, 150, 60, 59, 58, 57, 56]
    cu = [0]
    for k in lengths:
        cu.append(cu[-1] + k)
    groups = attention.segment_groups(cu, torch.device("cpu"))
    assert groups.sizes == [(1, 268), (1, 150), (5, 60)]
    assert torch.equal(groups.gather[groups.scatter], torch.arange(cu[-1]))


def test_packed_logits_equal_the_dense_mask_reference(tiny, reference, rows):
    pad = tiny.tokenizer.pad_token_id
    new, ref = collate(rows, pad), collate(rows, pad, dense_mask=True)
    with torch.no_grad():
        got, want = _logits(tiny.model.eval(), new), _logits(reference.eval(), ref)
    # every position, padding included (a padding token attends to itself in both)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_packed_samples_are_isolated(tiny, rows):
    pad = tiny.tokenizer.pad_token_id
    model = tiny.model.eval()
    a, b, c = rows[0]
    changed = copy.deepcopy(b)
    changed.input_ids = [(t + 7) % 256 for t in changed.input_ids]
    with torch.no_grad():
        before = _logits(model, collate([[a, b, c]], pad))[0]
        after = _logits(model, collate([[a, changed, c]], pad))[0]
    sa, sb = slice(0, len(a)), slice(len(a), len(a) + len(b))
    sc = slice(len(a) + len(b), len(a) + len(b) + len(c))
    torch.testing.assert_close(after[sa], before[sa], rtol=0, atol=0)
    torch.testing.assert_close(after[sc], before[sc], rtol=1e-6, atol=1e-6)
    assert not torch.allclose(after[sb], before[sb])


def _step(model, batch):
    model.zero_grad(set_to_none=True)
    logits = _logits(model, batch).float()
    loss = F.cross_entropy(logits.view(-1, logits.size(-1)), batch.targets.view(-1), ignore_index=IGNORE,
                           reduction="sum") / batch.loss_tokens
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_a_training_step_has_the_same_loss_and_gradients(tiny, reference, rows):
    pad = tiny.tokenizer.pad_token_id
    model, ref_model = copy.deepcopy(tiny.model).train(), copy.deepcopy(reference).train()
    loss, grads = _step(model, collate(rows, pad))
    ref_loss, ref_grads = _step(ref_model, collate(rows, pad, dense_mask=True))
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_eval_loss_per_sample_equals_each_sample_run_alone(tiny, samples):
    model = tiny.model.eval()
    few = samples[:7]
    sums = per_sample_loss(model, few, tiny.tokenizer.pad_token_id, 512, "cpu")
    with torch.no_grad():
        for s, (total, n) in zip(few, sums):
            alone = collate([[s]], tiny.tokenizer.pad_token_id)
            logits = _logits(model, alone)[0]
            want = F.cross_entropy(logits, alone.targets[0], ignore_index=IGNORE, reduction="sum").item()
            assert total == pytest.approx(want, rel=1e-5) and n == alone.loss_tokens


def test_generation_with_left_padding_matches_sdpa(tiny, reference):
    chat = ChatTokenizer(tiny.tokenizer)
    prompts = [[{"role": "user", "content": text}] for text in ("hi", "what is two plus two?", "name a colour")]
    got = greedy_answers(tiny.model.eval(), chat, prompts, 6, "cpu")
    want = greedy_answers(reference.eval(), chat, prompts, 6, "cpu")
    assert got == want


def test_a_sliding_window_applies_inside_each_sample():
    cfg = MistralConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, sliding_window=8)
    torch.manual_seed(0)
    ref = MistralForCausalLM(cfg).eval()
    new = copy.deepcopy(ref)
    new.set_attn_implementation(attention.ATTN_IMPLEMENTATION)
    lengths = (20, 5, 13)  # longer and shorter than the window
    pos = torch.cat([torch.arange(n) for n in lengths])[None]
    ids = torch.randint(0, 64, pos.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = new(input_ids=ids, position_ids=pos).logits[0]
        start = 0
        for n in lengths:  # the reference: each sample alone, through transformers' SDPA
            # (packed position_ids on transformers' own SDPA path do not match this for later samples)
            alone = ref(input_ids=ids[:, start:start + n]).logits[0]
            torch.testing.assert_close(got[start:start + n], alone, rtol=1e-5, atol=1e-5)
            start += n


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the fused varlen backends need a CUDA GPU")
@pytest.mark.parametrize("backend", ["torch_varlen", "flash_attn", "sdpa"])
def test_gpu_backends_match_the_dense_reference_in_bf16(tiny, reference, rows, backend):
    if backend == "flash_attn" and attention._flash_attn_varlen() is None:
        pytest.skip("flash_attn is not installed")
    if backend == "torch_varlen" and attention._torch_varlen() is None:
        pytest.skip("this torch has no torch.nn.attention.varlen")
    pad = tiny.tokenizer.pad_token_id
    model = copy.deepcopy(tiny.model).to("cuda", torch.bfloat16).eval()
    ref_model = copy.deepcopy(reference).to("cuda", torch.bfloat16).eval()
    new, ref = collate(rows, pad).to("cuda"), collate(rows, pad, dense_mask=True).to("cuda")
    attention.force_backend(backend)
    try:
        with torch.no_grad():
            got = _logits(model, new).float()
    finally:
        attention.force_backend(None)
    with torch.no_grad():
        want = _logits(ref_model, ref).float()
    real = new.input_ids != pad
    torch.testing.assert_close(got[real], want[real], rtol=2e-2, atol=2e-2)
