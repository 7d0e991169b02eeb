"""The data preflight (trainer/preflight.py) through `sweepd validate`: a table of broken data
sets, each rejected with its file:line and reason, or accepted with its counts. No trial is
launched: validate never touches the store or Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sweepd.settings import get_settings
from sweepd.spec import Capacity, load_spec
from sweepd.spec.plan import data_preflight, validate_command
from trainer.config import DataConfig
from trainer.data import ChatTokenizer, DataError, SkipReport, load_samples
from trainer.models import build_tiny_tokenizer
from trainer.preflight import preflight

CAP = Capacity(cpus=4, gpus=0)


def msg(user: str = "2+2?", answer: str = "4") -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def jl(*records) -> bytes:
    """JSONL bytes: dicts as JSON, str/bytes as they are; one per line."""
    out = b""
    for r in records:
        line = r if isinstance(r, bytes) else (r.encode() if isinstance(r, str) else json.dumps(r).encode())
        out += line + b"\n"
    return out


GOOD = jl(msg(), msg("3+3?", "6"), msg("name a colour", "blue"))
LONG = msg("x" * 400, "y")  # ~420 tokens with builtin:tiny's byte-level tokenizer
LONG_ANSWER = msg("q", "z" * 400)  # truncation keeps the start of the answer


# (id, train bytes, data options, expected): expected is ("reject", line, reason) with line the
# 1-based line number (None: the file as a whole), or ("accept", {totals key: value}).
CASES = [
    ("overlong-drop", jl(msg(), LONG, msg()), {"max_seq_len": 64},
     ("accept", {"train_samples": 2, "dropped_overlong": 1, "truncated": 0, "over_max_seq_len": 1})),
    ("overlong-truncate", jl(msg(), LONG_ANSWER, msg()), {"max_seq_len": 64, "overlong": "truncate"},
     ("accept", {"train_samples": 3, "dropped_overlong": 0, "truncated": 1})),
    ("overlong-truncate-prompt-only", jl(msg(), LONG, msg()), {"max_seq_len": 64, "overlong": "truncate"},
     ("accept", {"train_samples": 2, "dropped_overlong": 1, "truncated": 0})),
    ("overlong-error", jl(msg(), LONG, msg()), {"max_seq_len": 64, "overlong": "error"},
     ("reject", 2, "over-long sample")),
    ("all-overlong-dropped", jl(LONG, LONG), {"max_seq_len": 64},
     ("reject", None, "no usable sample (2 over-long sample(s) dropped")),
    ("empty-file", b"", {}, ("reject", None, "no lines")),
    ("only-blank-lines", b"\n\n  \n", {}, ("reject", None, "no lines")),
    ("bom", b"\xef\xbb\xbf" + GOOD, {}, ("accept", {"train_samples": 3, "bad_lines": 0})),
    ("crlf", GOOD.replace(b"\n", b"\r\n"), {}, ("accept", {"train_samples": 3, "bad_lines": 0})),
    ("zero-byte-line", jl(msg(), b"", msg()), {}, ("accept", {"train_samples": 2, "bad_lines": 0})),
    ("nul-byte-line", jl(msg(), b"\x00", msg()), {}, ("reject", 2, "not valid JSON")),
    ("non-utf8-byte", jl(msg(), b'{"messages": [{"role": "user", "content": "caf\xe9"}]}'), {},
     ("reject", 2, "not UTF-8 text (byte 0xe9")),
    ("huge-single-line", jl(msg("w" * 2_000_000, "ok")), {"max_seq_len": 512},
     ("reject", None, "1 over-long sample(s) dropped")),
    ("huge-line-among-good", jl(msg(), msg("w" * 2_000_000, "ok")), {"max_seq_len": 512},
     ("accept", {"train_samples": 1, "dropped_overlong": 1})),
    ("not-json", jl(msg(), "{oops", msg()), {}, ("reject", 2, "not valid JSON")),
    ("truncated-last-line-no-newline", jl(msg()) + b'{"messages": [{"role": "user"', {},
     ("reject", 2, "not valid JSON")),
    ("json-not-an-object", jl(msg(), "[1, 2]"), {}, ("reject", 2, "expected a JSON object, got list")),
    ("unknown-role", jl(msg(), {"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": "y"}]}),
     {}, ("reject", 2, "unknown role 'bot'")),
    ("no-assistant-turn", jl(msg(), {"messages": [{"role": "user", "content": "hello?"}]}), {},
     ("reject", 2, "no assistant turn")),
    ("content-not-a-string", jl({"messages": [{"role": "user", "content": 7}, {"role": "assistant", "content": "y"}]}),
     {}, ("reject", 1, "must be an object with a string 'content'")),
    ("mixed-layout-sharegpt-line", jl(msg(), {"conversations": [{"from": "human", "value": "hi"}]}), {},
     ("reject", 2, "mixed layouts: this line is sharegpt (keys seen: 'conversations') but line 1 made the file messages")),
    ("mixed-layout-alpaca-first", jl({"instruction": "add", "output": "4"}, msg()), {},
     ("reject", 2, "mixed layouts: this line is messages")),
    ("unknown-layout", jl({"text": "hi", "label": 1}), {},
     ("reject", 1, "unknown layout: no 'messages', 'conversations' or 'instruction'/'output'; keys seen: 'text', 'label'")),
    ("alpaca-layout", jl({"instruction": "add", "input": "2+2", "output": "4"}, {"instruction": "hi", "output": "hello"}),
     {}, ("accept", {"train_samples": 2, "bad_lines": 0})),
    ("sharegpt-layout", jl({"conversations": [{"from": "system", "value": "be brief"}, {"from": "human", "value": "hi"},
                                              {"from": "gpt", "value": "hello"}]}),
     {}, ("accept", {"train_samples": 1, "bad_lines": 0})),
    ("sharegpt-unknown-from", jl({"conversations": [{"from": "bot", "value": "x"}, {"from": "gpt", "value": "y"}]}), {},
     ("reject", 1, "conversations[0]: unknown role 'bot'")),
    ("lenient-skips-bad-lines", jl(msg(), "{oops", {"messages": [{"role": "user", "content": "q"}]}, msg()),
     {"lenient": True}, ("accept", {"train_samples": 2, "bad_lines": 2})),
]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SWEEPD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SWEEPD_DATA_ROOTS", str(tmp_path))
    monkeypatch.delenv("SWEEPD_RAY_ADDRESS", raising=False)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def write_spec(root: Path, train: bytes, data_opts: dict, eval_bytes: bytes | None = None) -> Path:
    (root / "train.jsonl").write_bytes(train)
    data = {"train": [{"path": str(root / "train.jsonl")}], **data_opts}
    if eval_bytes is not None:
        (root / "eval.jsonl").write_bytes(eval_bytes)
        data["eval"] = [{"path": str(root / "eval.jsonl")}]
    spec = {
        "name": "preflight", "model": {"path": "builtin:tiny"}, "data": data,
        "search": {"algorithm": "random", "num_trials": 2,
                   "space": {"learning_rate": {"loguniform": [1.0e-4, 1.0e-2]}}},
        "budget": {"max_steps": 4}, "pruner": {"type": "none"},
        "objective": {"metric": "train_loss", "mode": "min"},
    }  # fmt: skip
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize("train,data_opts,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_validate_judges_each_broken_data_set(env, train, data_opts, expected):
    spec = write_spec(env, train, data_opts)
    code, text = validate_command(spec, capacity=CAP)
    train_path = str(env / "train.jsonl")
    if expected[0] == "reject":
        _, line, reason = expected
        assert code == 2, text
        where = f"{train_path}:{line}:" if line else f"{train_path}:"
        assert any(where in e and reason in e for e in text.splitlines()), text
    else:
        assert code == 0, text
        assert "data preflight" in text and train_path in text
        report = data_preflight(load_spec(spec, capacity=CAP))
        assert report["cached"] and not report["errors"]  # the second read is the cache's
        for key, value in expected[1].items():
            assert report["totals"][key] == value, (key, report["totals"])
    assert not (env / "home" / "sweepd.db").exists()  # no sweep, no trial


def test_the_table_has_at_least_15_data_sets():
    assert len(CASES) >= 15


def test_a_bad_eval_line_names_the_eval_file(env):
    spec = write_spec(env, GOOD, {}, eval_bytes=jl(msg(), '{"messages": [{"role": "x", "content": "y"}]}'))
    code, text = validate_command(spec, capacity=CAP)
    assert code == 2
    assert f"{env / 'eval.jsonl'}:2: messages[0]: unknown role 'x'" in text


def test_validate_prints_the_per_file_table(env):
    spec = write_spec(env, jl(msg(), LONG, msg()), {"max_seq_len": 64}, eval_bytes=GOOD)
    code, text = validate_command(spec, capacity=CAP)
    assert code == 0, text
    assert "mean" in text and "over all 2 samples" in text
    rows = [line for line in text.splitlines() if line.strip().startswith(str(env))]
    assert len(rows) == 2 and " train " in rows[0] and " eval " in rows[1]
    assert f"{env / 'train.jsonl'}:2: " in text  # the over-long line, named


# ---- the preflight itself ----------------------------------------------------------------------

def data_config(tmp_path: Path, train: bytes, **opts) -> DataConfig:
    p = tmp_path / "t.jsonl"
    p.write_bytes(train)
    return DataConfig(train=[{"path": str(p)}], **opts)


def test_the_cache_is_keyed_by_content_and_policy(tmp_path):
    cache = tmp_path / "cache"
    cfg = data_config(tmp_path, jl(msg(), LONG), max_seq_len=64)
    first = preflight(cfg, "builtin:tiny", cache_dir=cache)
    assert not first["cached"] and first["totals"]["dropped_overlong"] == 1
    again = preflight(cfg, "builtin:tiny", cache_dir=cache)
    assert again["cached"] and again["totals"] == first["totals"]
    other_policy = cfg.model_copy(update={"overlong": "truncate"})
    assert not preflight(other_policy, "builtin:tiny", cache_dir=cache)["cached"]
    (tmp_path / "t.jsonl").write_bytes(jl(msg(), LONG, msg()))  # new content: measured again
    changed = preflight(cfg, "builtin:tiny", cache_dir=cache)
    assert not changed["cached"] and changed["totals"]["train_samples"] == 2


def test_concurrent_preflights_of_the_same_data_all_write_the_cache(tmp_path):
    """Sweeps submitted together run their preflights at once, in one process's threads: each
    writes the shared cache entry through a file of its own (a shared temp name lost one's rename)."""
    from concurrent.futures import ThreadPoolExecutor

    cache = tmp_path / "cache"
    cfg = data_config(tmp_path, jl(msg(), msg(), LONG), max_seq_len=64)
    with ThreadPoolExecutor(8) as pool:
        reports = list(pool.map(lambda _: preflight(cfg, "builtin:tiny", cache_dir=cache), range(16)))
    assert all(r["totals"]["train_samples"] == 2 for r in reports)
    assert [p.name for p in cache.iterdir()] == [f"{reports[0]['key']}.json"]  # no temp file left


def test_percentiles_and_loss_tokens(tmp_path):
    cfg = data_config(tmp_path, jl(*[msg("q" * n, "a") for n in range(1, 101)]), max_seq_len=4096)
    f = preflight(cfg, "builtin:tiny")["files"][0]
    assert f["samples"] == 100 and f["tokens"]["max"] - f["tokens"]["p50"] in (49, 50)
    assert f["loss_tokens"] == 200  # "a" and the end marker, per sample


@pytest.mark.parametrize("policy", ["drop", "truncate"])
def test_preflight_counts_what_the_trainer_does(tmp_path, policy):
    """Same lines, same verdicts: the preflight's counts are the trainer's."""
    lines = [msg(), LONG, LONG_ANSWER, msg("x" * 30, "y" * 30), msg()]
    cfg = data_config(tmp_path, jl(*lines), max_seq_len=64, overlong=policy)
    report = preflight(cfg, "builtin:tiny")
    skips = SkipReport()
    samples = load_samples([cfg.train[0].path], ChatTokenizer(build_tiny_tokenizer()), 64, overlong=policy, skips=skips)
    assert report["totals"]["train_samples"] == len(samples)
    assert report["totals"]["dropped_overlong"] == skips.dropped_overlong
    assert report["totals"]["truncated"] == skips.truncated
    assert report["totals"]["train_tokens"] == sum(len(s) for s in samples)
    assert all(len(s) <= 64 and len(s.labels) == len(s.input_ids) for s in samples)


def test_truncate_keeps_the_mask_aligned(tmp_path):
    chat = ChatTokenizer(build_tiny_tokenizer())
    p = tmp_path / "t.jsonl"
    p.write_bytes(jl(LONG_ANSWER))
    skips = SkipReport()
    [s] = load_samples([str(p)], chat, 64, overlong="truncate", skips=skips)
    full_ids, full_labels = chat.encode(LONG_ANSWER["messages"])
    assert s.input_ids == full_ids[:64] and s.labels == full_labels[:64]
    assert skips.as_dict()["truncated"] == 1 and skips.total == 1  # reported in the trial's final event


def test_drop_is_counted_for_the_final_event(tmp_path):
    chat = ChatTokenizer(build_tiny_tokenizer())
    p = tmp_path / "t.jsonl"
    p.write_bytes(jl(msg(), LONG))
    skips = SkipReport()
    assert len(load_samples([str(p)], chat, 64, skips=skips)) == 1  # drop is the default
    assert skips.as_dict()["dropped_overlong"] == 1 and f"{p}:2" in skips.examples[0]
    with pytest.raises(DataError, match=rf"{p}:2: over-long sample"):
        load_samples([str(p)], chat, 64, overlong="error")


def test_an_unreadable_model_folder_is_a_preflight_error(tmp_path):
    cfg = data_config(tmp_path, GOOD)
    report = preflight(cfg, str(tmp_path / "no-such-model"))
    assert report["errors"] and "cannot load the tokenizer" in report["errors"][0]


def test_an_eval_item_over_max_seq_len_gets_a_row_alone():
    """Evaluation packs eval items with max_seq_len; one longer than that used to loop forever."""
    from trainer.batching import pack_rows

    lengths = {0: 10, 1: 300, 2: 20, 3: 257}
    rows = pack_rows(lengths, [0, 1, 2, 3], 256)
    assert rows[:2] == [[1], [3]] and sorted(i for r in rows[2:] for i in r) == [0, 2]


def test_layouts_are_detected_and_converted_alike(tmp_path):
    """ShareGPT and Alpaca records become the same messages (and the same tokens) as a messages
    record; the preflight names each file's layout."""
    chat = ChatTokenizer(build_tiny_tokenizer())
    files = {
        "m.jsonl": jl(msg("add 2+2", "4")),
        "s.jsonl": jl({"conversations": [{"from": "human", "value": "add 2+2"}, {"from": "gpt", "value": "4"}]}),
        "a.jsonl": jl({"instruction": "add", "input": "2+2", "output": "4"}),
    }
    for name, body in files.items():
        (tmp_path / name).write_bytes(body)
    cfg = DataConfig(train=[{"path": str(tmp_path / n)} for n in files])
    report = preflight(cfg, "builtin:tiny")
    assert [f["layout"] for f in report["files"]] == ["messages", "sharegpt", "alpaca"]
    m, s, a = (load_samples([str(tmp_path / n)], chat, 512)[0] for n in files)
    assert m.input_ids == s.input_ids and m.labels == s.labels
    assert chat.tok.decode(a.input_ids).startswith("<|user|>add\n\n2+2")


def test_parquet_files_in_either_layout(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([msg(), msg("3+3?", "6")]), tmp_path / "m.parquet")
    pq.write_table(pa.Table.from_pylist([{"instruction": "add", "input": "2+2", "output": "4"}]), tmp_path / "a.parquet")
    cfg = DataConfig(train=[{"path": str(tmp_path / "m.parquet")}, {"path": str(tmp_path / "a.parquet")}])
    report = preflight(cfg, "builtin:tiny")
    assert not report["errors"]
    assert [(f["layout"], f["samples"]) for f in report["files"]] == [("messages", 2), ("alpaca", 1)]
    chat = ChatTokenizer(build_tiny_tokenizer())
    assert len(load_samples([str(tmp_path / "m.parquet")], chat, 512)) == 2
