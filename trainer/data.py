"""Reading and tokenizing chat JSONL.

A line is `{"messages": [{"role": ..., "content": ...}, ...]}` with roles system, user, assistant,
pretraining. Loss is on assistant turns only (their content and end marker, not the header the
template puts before them); `pretraining` content is trained on in full, as raw text + EOS.

Eval lines may also carry `"reference"` (exact match by greedy decoding: the prompt is the
messages without the final assistant turn) or `"choices"` + `"answer"` (multiple choice by
log-likelihood of each choice as the assistant reply).

A bad line is a DataError naming the file and line; in lenient mode it is skipped and counted.
Lines are read as bytes and decoded one by one (a UTF-8 BOM at the start of a file is ignored,
CRLF line ends are fine, a line that is not UTF-8 is a bad line like any other), so the trainer
and the data preflight (trainer/preflight.py) judge every line the same way.

A sample longer than `data.max_seq_len` follows `data.overlong` (see `fit_sample`): `drop` (skip
and count it), `truncate` (cut to max_seq_len, labels cut alike) or `error` (a DataError).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

IGNORE = -100
OVERLONG_POLICIES = ("drop", "truncate", "error")
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
    dropped_overlong: int = 0  # data.overlong: drop (also counted in `counts`)
    truncated: int = 0  # data.overlong: truncate (kept, so not in `counts`)

    def add(self, reason: str, where: str, detail: str | None = None) -> None:
        self.counts[reason] += 1
        if len(self.examples) < 10:
            self.examples.append(f"{where}: {detail or reason}")

    @property
    def skipped(self) -> int:
        return sum(self.counts.values())

    @property
    def total(self) -> int:
        """Everything worth reporting: skipped lines and truncated samples."""
        return self.skipped + self.truncated

    def as_dict(self) -> dict:
        return {"skipped": self.skipped, "by_reason": dict(self.counts), "examples": self.examples,
                "dropped_overlong": self.dropped_overlong, "truncated": self.truncated}


def check_record(obj: object, *, for_eval: bool = False) -> str | None:
    """Return why a parsed line is unusable, or None when it is fine."""
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    msgs = obj.get("messages")
    if "messages" not in obj:
        keys = ", ".join(repr(k) for k in list(obj)[:8]) or "none"
        return f"'messages' must be a non-empty list (no 'messages' key; keys seen: {keys})"
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


def reason_of(problem: str) -> str:
    """The short reason a problem is counted under (the message itself names the detail)."""
    if problem.startswith("not valid JSON"):
        return "not valid JSON"
    if problem.startswith("not UTF-8"):
        return "not UTF-8"
    if "unknown role" in problem:
        return "unknown role"
    if problem.startswith("no assistant turn"):
        return "no assistant turn"
    return problem


SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system"}
LAYOUTS = ("messages", "sharegpt", "alpaca")


def detect_layout(obj: dict) -> str | None:
    """messages (`messages`), sharegpt (`conversations` of from/value) or alpaca
    (`instruction`/`input`/`output`); None when the keys fit none of them."""
    if "messages" in obj:
        return "messages"
    if "conversations" in obj:
        return "sharegpt"
    if "instruction" in obj and "output" in obj:
        return "alpaca"
    return None


def to_messages(obj: dict, layout: str) -> tuple[dict | None, str | None]:
    """A record of any layout as a `messages` record (other keys kept), or why it cannot be."""
    if layout == "messages":
        return obj, None
    rest = {k: v for k, v in obj.items() if k not in ("conversations", "instruction", "input", "output", "system")}
    if layout == "sharegpt":
        conv = obj["conversations"]
        if not isinstance(conv, list) or not conv:
            return None, "'conversations' must be a non-empty list"
        msgs = []
        for i, turn in enumerate(conv):
            if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
                return None, f"conversations[{i}] must be an object with a string 'value'"
            role = SHAREGPT_ROLES.get(turn.get("from"))
            if role is None:
                return None, (f"conversations[{i}]: unknown role {turn.get('from')!r} "
                              f"(allowed: {', '.join(SHAREGPT_ROLES)})")
            msgs.append({"role": role, "content": turn["value"]})
        return {**rest, "messages": msgs}, None
    ins, inp, out = obj.get("instruction"), obj.get("input", ""), obj.get("output")
    if not all(isinstance(v, str) for v in (ins, out)) or not isinstance(inp, (str, type(None))):
        return None, "'instruction', 'input' and 'output' must be strings"
    msgs = [{"role": "system", "content": obj["system"]}] if isinstance(obj.get("system"), str) else []
    msgs += [{"role": "user", "content": ins + (f"\n\n{inp}" if inp else "")}, {"role": "assistant", "content": out}]
    return {**rest, "messages": msgs}, None


def _keys(obj: dict) -> str:
    return ", ".join(repr(k) for k in list(obj)[:8]) or "none"


def _raw_records(path: Path):
    """``(lineno, record or None, problem or None)`` of a JSONL or Parquet file, streamed."""
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DataError(f"{path}: reading Parquet needs pyarrow, which is not installed") from None
        try:
            pf = pq.ParquetFile(path)
        except Exception as err:  # noqa: BLE001 - a broken file, said in words
            raise DataError(f"{path}: not a readable Parquet file ({err})") from None
        n = 0
        for batch in pf.iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                n += 1
                yield n, row, None
        return
    try:
        fh = path.open("rb")
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    with fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield lineno, None, f"not UTF-8 text (byte 0x{raw[err.start]:02x} at column {err.start + 1})"
                continue
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line), None
            except json.JSONDecodeError as err:
                yield lineno, None, f"not valid JSON ({err.msg} at column {err.colno})"
            except RecursionError:
                yield lineno, None, "not valid JSON (nested too deeply)"


def iter_lines(path: str | Path, *, for_eval: bool = False, info: dict | None = None):
    """Every non-blank line (or Parquet row) as ``(where, messages record or None, problem or
    None)``, streamed; raises DataError when the file cannot be opened. The file's layout
    (messages, sharegpt or alpaca) is the first record's; a record of another layout, or of none,
    is a bad line naming the keys it has. ``info["layout"]`` is set to the layout found."""
    path = Path(path)
    layout = first = None
    for lineno, obj, problem in _raw_records(path):
        where = f"{path}:{lineno}"
        if problem is None and isinstance(obj, dict):
            lay = detect_layout(obj)
            if lay is None:
                problem = (f"'messages' must be a non-empty list (unknown layout: no 'messages', 'conversations' "
                           f"or 'instruction'/'output'; keys seen: {_keys(obj)})")
            elif layout is None:
                layout, first = lay, lineno
                if info is not None:
                    info["layout"] = lay
            elif lay != layout:
                problem = (f"mixed layouts: this line is {lay} (keys seen: {_keys(obj)}) but line {first} "
                           f"made the file {layout}")
            if problem is None:
                obj, problem = to_messages(obj, lay)
        if problem is None:
            problem = check_record(obj, for_eval=for_eval)
        yield where, (obj if problem is None else None), problem


def read_jsonl(path: str | Path, *, for_eval: bool = False, lenient: bool = False,
               skips: SkipReport | None = None) -> list[tuple[dict, str]]:
    """Parsed, checked records with their "file:line" source."""
    out = []
    for where, obj, problem in iter_lines(path, for_eval=for_eval):
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


def no_loss(labels: list[int]) -> bool:
    return all(x == IGNORE for x in labels[1:])


def fit_sample(ids: list[int], labels: list[int], max_seq_len: int, overlong: str):
    """Apply the over-long policy: ``(ids, labels, outcome, problem)`` where outcome is None (kept
    as is), "truncated", "dropped" or "error"; problem says why in words."""
    if len(ids) <= max_seq_len:
        return ids, labels, None, None
    problem = f"over-long sample: {len(ids)} tokens > data.max_seq_len={max_seq_len}"
    if overlong == "truncate":
        ids, labels = ids[:max_seq_len], labels[:max_seq_len]
        if no_loss(labels):  # the cut removed every trained token: nothing left to learn from
            return ids, labels, "dropped", problem + " (no trainable tokens left after truncation)"
        return ids, labels, "truncated", problem
    if overlong == "drop":
        return ids, labels, "dropped", problem
    return ids, labels, "error", problem


def load_samples(paths: list[str], chat: ChatTokenizer, max_seq_len: int, *, lenient: bool = False,
                 skips: SkipReport | None = None, overlong: str = "drop") -> list[Sample]:
    """Training samples. Over-long ones follow ``overlong`` (drop | truncate | error; the
    trial config's ``data.overlong``), counted in ``skips`` when given; malformed lines are
    DataErrors unless ``lenient``."""
    if overlong not in OVERLONG_POLICIES:
        raise ValueError(f"overlong must be one of {', '.join(OVERLONG_POLICIES)}, got {overlong!r}")
    samples = []
    for path in paths:
        for obj, where in read_jsonl(path, lenient=lenient, skips=skips):
            try:
                ids, labels = chat.encode(obj["messages"])
            except DataError as err:
                raise DataError(f"{where}: {err}") from None
            ids, labels, outcome, problem = fit_sample(ids, labels, max_seq_len, overlong)
            if outcome == "dropped":
                if skips is not None:
                    skips.add("over-long sample", where, problem)
                    skips.dropped_overlong += 1
                continue
            if outcome == "truncated" and skips is not None:
                skips.truncated += 1
            key = None
            if outcome == "error":
                key = "over-long sample"
            elif no_loss(labels):
                key = problem = "no trainable tokens after tokenization"
            if key:
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
