"""Reading and tokenizing chat JSONL.

A line is `{"messages": [{"role": ..., "content": ...}, ...]}` with roles system, user, assistant,
pretraining. Loss is on assistant turns only (their content and end marker, not the header the
template puts before them); `pretraining` content is trained on in full, as raw text + EOS.

Eval lines may also carry `"reference"` (exact match by greedy decoding: the prompt is the
messages without the final assistant turn) or `"choices"` + `"answer"` (multiple choice by
log-likelihood of each choice as the assistant reply).

A bad line is a DataError naming the file and line; in lenient mode it is skipped and counted.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

IGNORE = -100
ROLES = ("system", "user", "assistant", "pretraining")
CHAT_ROLES = ("system", "user", "assistant")


class DataError(Exception):
    """A bad data file or line; the message names the file and line number."""


@dataclass
class Sample:
    input_ids: list[int]
    labels: list[int]  # IGNORE where no loss; aligned with input_ids (not shifted)
    source: str  # "file:line"

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class EvalItem:
    messages: list[dict]
    source: str
    domain: str = "default"
    objective: str = "loss"
    reference: str | None = None
    choices: list[str] | None = None
    answer: int | None = None


@dataclass
class SkipReport:
    """What lenient mode skipped, by reason, with the first few places."""

    counts: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def add(self, reason: str, where: str, detail: str | None = None) -> None:
        self.counts[reason] += 1
        if len(self.examples) < 10:
            self.examples.append(f"{where}: {detail or reason}")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict:
        return {"skipped": self.total, "by_reason": dict(self.counts), "examples": self.examples}


def check_record(obj: object, *, for_eval: bool = False) -> str | None:
    """Return why a parsed line is unusable, or None when it is fine."""
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    msgs = obj.get("messages")
    if not isinstance(msgs, list) or not msgs:
        return "'messages' must be a non-empty list"
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            return f"messages[{i}] must be an object with a string 'content'"
        if m.get("role") not in ROLES:
            return f"messages[{i}]: unknown role {m.get('role')!r} (allowed: {', '.join(ROLES)})"
    roles = {m["role"] for m in msgs}
    if "choices" in obj:
        ch, ans = obj.get("choices"), obj.get("answer")
        if not (isinstance(ch, list) and len(ch) >= 2 and all(isinstance(c, str) for c in ch)):
            return "'choices' must be a list of at least 2 strings"
        if not isinstance(ans, int) or not 0 <= ans < len(ch):
            return f"'answer' must be an index into choices, got {ans!r}"
        return None
    if "reference" in obj and not isinstance(obj["reference"], str):
        return "'reference' must be a string"
    if "assistant" not in roles and not (not for_eval and "pretraining" in roles):
        return "no assistant turn (nothing to train on)"
    return None


def read_jsonl(path: str | Path, *, for_eval: bool = False, lenient: bool = False,
               skips: SkipReport | None = None) -> list[tuple[dict, str]]:
    """Parsed, checked records with their "file:line" source."""
    path = Path(path)
    try:
        fh = path.open(encoding="utf-8")
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    out = []
    with fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
                problem = check_record(obj, for_eval=for_eval)
            except json.JSONDecodeError as err:
                problem = f"not valid JSON ({err.msg} at column {err.colno})"
            if problem is None:
                out.append((obj, where))
            elif lenient and skips is not None:
                key = "not valid JSON" if problem.startswith("not valid JSON") else problem
                skips.add(key, where, problem)
            else:
                raise DataError(f"{where}: {problem}")
    return out


class ChatTokenizer:
    """Turns messages into (input_ids, labels) with the tokenizer's chat template."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.eos = tokenizer.eos_token or ""

    def _ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"] if text else []

    def _render(self, msgs: list[dict], gen: bool = False) -> str:
        return self.tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)

    def encode(self, messages: list[dict]) -> tuple[list[int], list[int]]:
        ids: list[int] = []
        labels: list[int] = []

        def add(text: str, train: bool) -> None:
            piece = self._ids(text)
            ids.extend(piece)
            labels.extend(piece if train else [IGNORE] * len(piece))

        chat: list[dict] = []  # the current run of chat messages, rendered incrementally
        rendered = ""
        for m in messages:
            if m["role"] == "pretraining":
                add(m["content"] + self.eos, True)
                chat, rendered = [], ""
                continue
            msg = {"role": m["role"], "content": m["content"]}
            if m["role"] == "assistant":
                prompt = self._render(chat, gen=True) if chat else ""
                full = self._render(chat + [msg])
                if not (prompt.startswith(rendered) and full.startswith(prompt)):
                    raise DataError("chat template is not prefix-stable; cannot mask assistant turns")
                add(prompt[len(rendered):], False)
                add(full[len(prompt):], True)
            else:
                full = self._render(chat + [msg])
                if not full.startswith(rendered):
                    raise DataError("chat template is not prefix-stable; cannot mask assistant turns")
                add(full[len(rendered):], False)
            chat.append(msg)
            rendered = full
        return ids, labels

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """Token ids of a prompt ending with the assistant header (for generation and scoring)."""
        chat = [{"role": m["role"], "content": m["content"]} for m in messages if m["role"] in CHAT_ROLES]
        return self._ids(self._render(chat, gen=True))


def load_samples(paths: list[str], chat: ChatTokenizer, max_seq_len: int, *, lenient: bool = False,
                 skips: SkipReport | None = None) -> list[Sample]:
    samples = []
    for path in paths:
        for obj, where in read_jsonl(path, lenient=lenient, skips=skips):
            try:
                ids, labels = chat.encode(obj["messages"])
            except DataError as err:
                raise DataError(f"{where}: {err}") from None
            key = problem = None
            if len(ids) > max_seq_len:
                key = "over-long sample"
                problem = f"over-long sample: {len(ids)} tokens > data.max_seq_len={max_seq_len}"
            elif all(x == IGNORE for x in labels[1:]):
                key = problem = "no trainable tokens after tokenization"
            if problem:
                if lenient and skips is not None:
                    skips.add(key, where, problem)
                    continue
                raise DataError(f"{where}: {problem}")
            samples.append(Sample(ids, labels, where))
    return samples


def load_eval_items(paths: list[str], *, lenient: bool = False, skips: SkipReport | None = None) -> list[EvalItem]:
    items = []
    for path in paths:
        for obj, where in read_jsonl(path, for_eval=True, lenient=lenient, skips=skips):
            items.append(EvalItem(
                messages=obj["messages"], source=where,
                domain=str(obj.get("domain", "default")), objective=str(obj.get("objective", "loss")),
                reference=obj.get("reference"), choices=obj.get("choices"), answer=obj.get("answer"),
            ))
    return items
