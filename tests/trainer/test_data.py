import json

import pytest

from trainer.data import IGNORE, ChatTokenizer, DataError, SkipReport, load_eval_items, load_samples
from trainer.models import FALLBACK_CHAT_TEMPLATE, build_tiny_tokenizer


@pytest.fixture(scope="module")
def chat():
    return ChatTokenizer(build_tiny_tokenizer())


def write(tmp_path, lines, name="d.jsonl"):
    p = tmp_path / name
    p.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return p


def trained_text(chat, ids, labels):
    return chat.tok.decode([i for i, l in zip(ids, labels) if l != IGNORE])


def test_loss_only_on_assistant_content_and_its_end_marker(chat):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"}, {"role": "user", "content": "3+3?"},
            {"role": "assistant", "content": "6"}]
    ids, labels = chat.encode(msgs)
    assert len(ids) == len(labels)
    assert trained_text(chat, ids, labels) == "4<|end|>6<|end|>"
    assert chat.tok.decode(ids) == chat.tok.apply_chat_template(msgs, tokenize=False)


def test_pretraining_content_is_trained_in_full(chat):
    ids, labels = chat.encode([{"role": "pretraining", "content": "Talimor Vex is a glassblower."}])
    assert labels == ids
    assert chat.tok.decode(ids) == "Talimor Vex is a glassblower.<|end|>"


def test_fallback_template_masks_the_same_way(chat):
    tok = build_tiny_tokenizer()
    tok.chat_template = FALLBACK_CHAT_TEMPLATE
    c = ChatTokenizer(tok)
    ids, labels = c.encode([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    assert trained_text(c, ids, labels) == "hello<|end|>\n"
    assert tok.decode(ids).startswith("<|user|>\nhi\n<|assistant|>\n")


BAD_LINES = [
    ("{not json", "not valid JSON"),
    ({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}, "unknown role 'robot'"),
    ({"messages": [{"role": "user", "content": "only a question"}]}, "no assistant turn"),
    ({"messages": []}, "'messages' must be a non-empty list"),
    ({"messages": [{"role": "user", "content": 3}]}, "must be an object with a string 'content'"),
    ({"text": "hi"}, "'messages' must be a non-empty list"),
]


@pytest.mark.parametrize("bad,expected", BAD_LINES)
def test_a_bad_line_names_file_and_line(tmp_path, chat, bad, expected):
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    p = write(tmp_path, [good, good, bad, good])
    with pytest.raises(DataError) as err:
        load_samples([str(p)], chat, 512)
    assert f"{p}:3" in str(err.value)
    assert expected in str(err.value)


def test_over_long_sample_is_an_error_naming_its_line(tmp_path, chat):
    p = write(tmp_path, [{"messages": [{"role": "user", "content": "x" * 100}, {"role": "assistant", "content": "y"}]}])
    with pytest.raises(DataError, match=rf"{p}:1: over-long sample: \d+ tokens > data.max_seq_len=64"):
        load_samples([str(p)], chat, 64, overlong="error")


def test_lenient_mode_skips_and_reports_every_bad_line(tmp_path, chat):
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    lines = [good, "{oops", good, {"messages": [{"role": "user", "content": "q"}]},
             {"messages": [{"role": "user", "content": "z" * 200}, {"role": "assistant", "content": "a"}]}, good]
    p = write(tmp_path, lines)
    skips = SkipReport()
    samples = load_samples([str(p)], chat, 64, lenient=True, skips=skips)
    assert len(samples) == 3
    assert skips.total == 3
    assert skips.counts == {"not valid JSON": 1, "no assistant turn (nothing to train on)": 1, "over-long sample": 1}
    assert any(f"{p}:2" in e for e in skips.examples)


def test_eval_items_keep_choices_and_references(tmp_path):
    p = write(tmp_path, [
        {"messages": [{"role": "user", "content": "Pick"}], "choices": ["a", "b"], "answer": 1, "domain": "k"},
        {"messages": [{"role": "user", "content": "1+1"}, {"role": "assistant", "content": "2"}], "reference": "2"},
    ])
    items = load_eval_items([str(p)])
    assert items[0].choices == ["a", "b"] and items[0].answer == 1 and items[0].domain == "k"
    assert items[1].reference == "2"
    bad = write(tmp_path, [{"messages": [{"role": "user", "content": "Pick"}], "choices": ["a", "b"], "answer": 5}], "bad.jsonl")
    with pytest.raises(DataError, match=r"bad.jsonl:1: 'answer' must be an index into choices"):
        load_eval_items([str(bad)])
