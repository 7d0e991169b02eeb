import pytest
import torch

from trainer.batching import collate, micro_batches, one_row, padding_waste, plan_step, sample_order
from trainer.data import ChatTokenizer, load_samples
from trainer.models import build_tiny


@pytest.fixture(scope="module")
def tiny():
    return build_tiny(seed=0)


@pytest.fixture(scope="module")
def samples(synth_dir, tiny):
    return load_samples([str(synth_dir / "train.jsonl")], ChatTokenizer(tiny.tokenizer), 512)


def test_packed_samples_never_attend_to_each_other(tiny, samples):
    model = tiny.model.eval()
    a, b, c = samples[0], samples[1], samples[2]
    packed = collate([[a, b], [c]], tiny.tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=packed.input_ids, position_ids=packed.position_ids,
                       attention_mask=packed.attention_mask).logits
        for row, start, s in ((0, 0, a), (0, len(a), b), (1, 0, c)):
            alone = model(input_ids=torch.tensor([s.input_ids])).logits[0]
            torch.testing.assert_close(logits[row, start:start + len(s)], alone, rtol=1e-4, atol=1e-4)


def test_targets_do_not_cross_sample_boundaries(tiny, samples):
    a, b = samples[0], samples[1]
    batch = collate([[a, b]], tiny.tokenizer.pad_token_id)
    assert batch.targets[0, len(a) - 1].item() == -100  # a's last token predicts nothing
    assert batch.targets[0, : len(a) - 1].tolist() == a.labels[1:]
    assert batch.position_ids[0, len(a)].item() == 0


@pytest.mark.parametrize("batch,workers", [(8, 1), (32, 1), (128, 1), (32, 2), (128, 2)])
def test_packing_wastes_under_ten_percent_on_variable_length_data(samples, batch, workers):
    lengths = [len(s) for s in samples]
    assert max(lengths) > 4 * min(lengths)  # really variable-length
    order = sample_order([len(samples)], 20, batch, seed=0, strategy="stacked")
    pad = total = 0
    for step in range(20):
        for rank in range(workers):
            plan = plan_step(order, step, batch, samples, rank=rank, world=workers, max_seq_len=512,
                             micro_batch_tokens=None, micro_batch_size=None)
            p, t = padding_waste(plan.micro, {i: len(samples[i]) for i in range(len(samples))})
            pad, total = pad + p, total + t
    assert pad / total < 0.10, f"padding {pad / total:.1%}"


def test_rows_respect_max_seq_len_and_micro_batches_cover_every_sample():
    lengths = {i: 50 + (i * 37) % 400 for i in range(40)}
    mbs = micro_batches(lengths, list(range(40)), max_seq_len=512, micro_batch_tokens=2048, micro_batch_size=None)
    seen = sorted(i for rows in mbs for row in rows for i in row)
    assert seen == list(range(40))
    assert all(sum(lengths[i] for i in row) <= 512 for rows in mbs for row in rows)
    assert all(sum(lengths[i] for row in rows for i in row) <= 2048 + 512 for rows in mbs)


def test_sample_order_is_deterministic_and_exact():
    a = sample_order([10, 5], steps=7, batch=4, seed=3, strategy="stacked")
    assert a == sample_order([10, 5], steps=7, batch=4, seed=3, strategy="stacked")
    assert a != sample_order([10, 5], steps=7, batch=4, seed=4, strategy="stacked")
    assert len(a) == 28
    assert sorted(a[:15]) == list(range(15))  # a full epoch before any repeat


def test_phased_order_runs_phases_in_order():
    order = sample_order([12, 4], steps=4, batch=4, seed=0, strategy="phased")
    assert len(order) == 16
    assert all(i < 12 for i in order[:12]) and all(i >= 12 for i in order[12:])


def test_a_training_micro_batch_is_one_row_without_padding(tiny, samples):
    order = sample_order([len(samples)], 4, 32, seed=0, strategy="stacked")
    plan = plan_step(order, 0, 32, samples, rank=0, world=1, max_seq_len=512, micro_batch_tokens=2048,
                     micro_batch_size=None)
    lengths = {i: len(samples[i]) for i in range(len(samples))}
    assert len(plan.micro) > 1 and any(len(rows) > 1 for rows in plan.micro)  # rows to flatten
    flat = [one_row(rows) for rows in plan.micro]
    assert sorted(i for rows in flat for row in rows for i in row) == sorted(order[:32])
    assert padding_waste(flat, lengths)[0] == 0
    batch = collate([[samples[i] for i in row] for row in flat[0]], tiny.tokenizer.pad_token_id)
    assert batch.input_ids.shape == (1, batch.real_tokens)
