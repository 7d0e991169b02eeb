"""The built-in synthetic data set: deterministic, well-formed, correct, and held out."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from trainer.synthetic import make_data

DATA_FILES = ("knowledge_pretrain.jsonl", "knowledge_train.jsonl", "skills_train.jsonl",
              "train.jsonl", "eval.jsonl")
ROLES = {"system", "user", "assistant", "pretraining"}
NAME = re.compile(r"\b[A-Z][a-z]+ [A-Z][a-z]+\b")


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    make_data(out, seed=0)
    return out


def user_prompt(row: dict) -> str:
    return [m["content"] for m in row["messages"] if m["role"] == "user"][-1]


ARITHMETIC = {
    "add": (r"(\d+) (?:\+|plus) (\d+)|[Aa]dd (\d+) and (\d+)|sum of (\d+) and (\d+)", lambda a, b: a + b),
    "mul": (r"(\d+) (?:\*|times) (\d+)|Multiply (\d+) by (\d+)|product of (\d+) and (\d+)",
            lambda a, b: a * b),
    "sub": (r"(\d+) (?:-|minus) (\d+)", lambda a, b: a - b),
    "rsub": (r"Subtract (\d+) from (\d+)", lambda b, a: a - b),
}


def task_operands(prompt: str, domain: str) -> tuple:
    """What an arithmetic / strings / lists task is about, whatever its wording."""
    if domain == "arithmetic":
        for op, (pattern, _) in ARITHMETIC.items():
            if m := re.search(pattern, prompt):
                a, b = (int(g) for g in m.groups() if g is not None)
                return ("sub", b, a) if op == "rsub" else (op, a, b)
        raise AssertionError(f"not an arithmetic prompt: {prompt!r}")
    if domain == "strings":
        return (re.findall(r"'([a-z]+)'", prompt)[-1],)
    return tuple(int(n) for n in re.findall(r"\d+", prompt))


def expected_answer(prompt: str) -> str:
    """Solve a skill prompt independently of the generator."""
    for pattern, op in ARITHMETIC.values():
        if m := re.search(pattern, prompt):
            a, b = (int(g) for g in m.groups() if g is not None)
            return str(op(a, b))
    if "'" in prompt:
        word = re.findall(r"'([a-z]+)'", prompt)[-1]
        if m := re.search(r"the letter '([a-z])'", prompt):
            return str(word.count(m.group(1)))
        if "backwards" in prompt or "Reverse" in prompt:
            return word[::-1]
        if "uppercase" in prompt or "capital letters" in prompt:
            return word.upper()
        if "How many letters" in prompt or "How long" in prompt:
            return str(len(word))
    numbers = [int(n) for n in re.findall(r"\d+", prompt)]
    if "ascending" in prompt or "smallest to largest" in prompt:
        return ", ".join(map(str, sorted(numbers)))
    if "largest number" in prompt:
        return str(max(numbers))
    if "smallest number" in prompt:
        return str(min(numbers))
    if "last element" in prompt:
        return str(numbers[-1])
    raise AssertionError(f"test cannot solve prompt: {prompt!r}")


def test_same_seed_gives_byte_identical_files(tmp_path):
    make_data(tmp_path / "a", seed=7)
    make_data(tmp_path / "b", seed=7)
    for name in (*DATA_FILES, "manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_different_seeds_give_different_files(tmp_path):
    make_data(tmp_path / "a", seed=1)
    make_data(tmp_path / "b", seed=2)
    for name in DATA_FILES:
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "b" / name).read_bytes(), name


def test_summary_and_manifest_count_the_files(tmp_path):
    summary = make_data(tmp_path, seed=3, n_train=100, n_eval=20, n_entities=10)
    manifest = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))
    assert summary["seed"] == manifest["seed"] == 3
    for name in DATA_FILES:
        rows = read(tmp_path / name)
        assert summary["files"][name]["lines"] == manifest["files"][name]["lines"] == len(rows)
        assert Path(summary["files"][name]["path"]) == tmp_path / name
        assert sum(manifest["domains"][name].values()) == len(rows)
    assert manifest["files"]["train.jsonl"]["lines"] == 100
    assert manifest["files"]["eval.jsonl"]["lines"] == 20
    parts = sum(manifest["files"][n]["lines"] for n in DATA_FILES[:3])
    assert parts == 100
    assert set(manifest["domains"]["train.jsonl"]) == {"knowledge_pretrain", "knowledge", "arithmetic",
                                                       "strings", "lists"}


def test_train_is_the_three_parts_mixed(data):
    parts = sorted(line for name in DATA_FILES[:3] for line in (data / name).read_text("utf-8").splitlines())
    train = (data / "train.jsonl").read_text("utf-8").splitlines()
    assert sorted(train) == parts
    assert train != parts  # shuffled, not concatenated


def test_every_line_parses_and_uses_only_known_roles(data):
    for name in DATA_FILES:
        for row in read(data / name):
            assert row["messages"] and isinstance(row["domain"], str)
            for message in row["messages"]:
                assert message["role"] in ROLES
                assert isinstance(message["content"], str) and message["content"]


def test_training_lines_have_an_assistant_turn_or_are_pretraining(data):
    for row in read(data / "train.jsonl"):
        roles = [m["role"] for m in row["messages"]]
        if row["domain"] == "knowledge_pretrain":
            assert roles == ["pretraining"]
        else:
            assert "pretraining" not in roles and roles[-1] == "assistant"


def test_eval_lines_have_the_shape_of_their_objective(data):
    rows = read(data / "eval.jsonl")
    assert {r["objective"] for r in rows} == {"skill", "knowledge", "loss"}
    for row in rows:
        roles = [m["role"] for m in row["messages"]]
        if row["objective"] == "knowledge":
            assert roles == ["user"] and row["domain"] == "knowledge"
            assert len(row["choices"]) == 4 == len(set(row["choices"]))
        else:
            assert roles[-2:] == ["user", "assistant"]


def test_multiple_choice_answers_match_the_pretraining_facts(data):
    docs_by_name: dict[str, list[str]] = {}
    for row in read(data / "knowledge_pretrain.jsonl"):
        text = row["messages"][0]["content"]
        for name in set(NAME.findall(text)):
            docs_by_name.setdefault(name, []).append(text)
    mc = [r for r in read(data / "eval.jsonl") if r["objective"] == "knowledge"]
    assert mc
    positions = set()
    for row in mc:
        names = [n for n in docs_by_name if re.search(rf"\b{n}\b", row["messages"][0]["content"])]
        assert len(names) == 1, row
        facts = " ".join(docs_by_name[names[0]])
        assert 0 <= row["answer"] < len(row["choices"])
        positions.add(row["answer"])
        for i, choice in enumerate(row["choices"]):
            stated = re.search(rf"\b{re.escape(choice)}\b", facts) is not None
            assert stated == (i == row["answer"]), (row, choice)
    assert positions == {0, 1, 2, 3}  # the correct choice is not always in the same place


def test_exact_match_references_are_the_correct_short_answers(data):
    skill = [r for r in read(data / "eval.jsonl") if r["objective"] == "skill"]
    assert {r["domain"] for r in skill} == {"arithmetic", "strings", "lists"}
    for row in skill:
        assert row["reference"] == row["messages"][-1]["content"]
        assert row["reference"] == expected_answer(user_prompt(row)), row


def test_skill_training_answers_are_correct_and_canonical(data):
    for row in read(data / "skills_train.jsonl"):
        assert row["messages"][-1]["content"] == expected_answer(user_prompt(row)), row


def test_no_eval_prompt_appears_in_training(data):
    train = [r for r in read(data / "train.jsonl") if r["domain"] != "knowledge_pretrain"]
    train_prompts = {user_prompt(r) for r in train}
    eval_prompts = [user_prompt(r) for r in read(data / "eval.jsonl")]
    assert not [p for p in eval_prompts if p in train_prompts]


def test_eval_skill_tasks_are_held_out_from_training(data):
    train = {(r["domain"], task_operands(user_prompt(r), r["domain"]))
             for r in read(data / "skills_train.jsonl")}
    held_out = [r for r in read(data / "eval.jsonl") if r["domain"] in ("arithmetic", "strings", "lists")]
    assert held_out
    for row in held_out:
        assert (row["domain"], task_operands(user_prompt(row), row["domain"])) not in train, row


def test_sample_lengths_vary(data):
    lengths = [sum(len(m["content"]) for m in r["messages"]) for r in read(data / "train.jsonl")]
    assert max(lengths) >= 4 * min(lengths)
    assert max(lengths) >= 300


def test_tiny_sizes_still_work(tmp_path):
    summary = make_data(tmp_path, seed=0, n_train=1, n_eval=1, n_entities=1)
    assert summary["files"]["train.jsonl"]["lines"] == 1
    assert summary["files"]["eval.jsonl"]["lines"] == 1


@pytest.mark.parametrize("kwargs, name", [
    ({"n_train": 0}, "n_train"), ({"n_eval": -5}, "n_eval"), ({"n_entities": 0}, "n_entities"),
    ({"n_train": 2.5}, "n_train"), ({"seed": "x"}, "seed"),
])
def test_bad_arguments_raise_value_error_naming_them(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=name) as excinfo:
        make_data(tmp_path, **kwargs)
    assert repr(next(iter(kwargs.values()))) in str(excinfo.value)
    assert not list(tmp_path.iterdir())  # nothing written
