"""The data preflight: every train and eval file read once, with the model's own tokenizer and chat
template (tokenizer files only, no weights), before any trial starts.

``preflight(data, model_path)`` returns a JSON-ready report:

- per file: its layout (messages, sharegpt or alpaca; JSONL or Parquet), samples, tokens p50/p95/max and in all, loss tokens, samples over ``max_seq_len``
  and what ``data.overlong`` does to them (dropped / truncated), and bad lines by reason (not
  UTF-8, not valid JSON, unknown role, no assistant turn, ...) with the first few file:line each;
- ``errors``: what would make a trial fail, one ``file:line: reason`` each (bad lines unless
  ``data.lenient``; over-long samples with ``overlong: error``; a train file with no usable
  sample). An empty list means every trial can read its data.

Lines are judged by ``trainer.data.iter_lines`` and samples by ``ChatTokenizer.encode`` and
``fit_sample``, the very code a trial runs, so the preflight and the trainer agree line by line.
Files stream: only an array of ints (one length per sample) is kept, for the percentiles.

With ``cache_dir`` the report is stored as ``<cache_dir>/<key>.json``, the key hashing the files'
contents, the tokenizer's identity (builtin name, or its tokenizer files' contents), max_seq_len,
the policy and lenient; a second run with the same inputs reads it back (``"cached": true``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from array import array
from pathlib import Path
from typing import Any

from .config import DataConfig
from .data import IGNORE, ChatTokenizer, DataError, fit_sample, iter_lines, no_loss, reason_of

VERSION = 2  # bump when the report's content or the judging of lines changes
EXAMPLES = 3  # file:line shown per reason
MAX_ERRORS = 20  # error lines shown in all (the counts cover the rest)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "vocab.txt", "merges.txt", "tokenizer.model", "added_tokens.json", "chat_template.jinja",
                   "chat_template.json")


def load_chat_tokenizer(model_path: str) -> ChatTokenizer:
    """The model's tokenizer and chat template, never its weights; nothing is downloaded."""
    if model_path.startswith("builtin:"):
        from .models import build_tiny_tokenizer

        return ChatTokenizer(build_tiny_tokenizer())
    if not Path(model_path).is_dir():
        raise DataError(f"model.path: cannot load the tokenizer: {model_path!r} is not a folder here")
    from transformers import AutoTokenizer

    from .models import FALLBACK_CHAT_TEMPLATE

    try:
        tok = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    except Exception as err:  # noqa: BLE001 - any loader failure is the user's folder, said in words
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DataError(f"model.path: cannot load the tokenizer of {model_path!r}: {first}") from None
    if not tok.chat_template:
        tok.chat_template = FALLBACK_CHAT_TEMPLATE
    return ChatTokenizer(tok)


def tokenizer_identity(model_path: str) -> str:
    """A builtin's name, or a hash of the folder's tokenizer files (not the weights)."""
    if model_path.startswith("builtin:"):
        return model_path
    h = hashlib.sha256()
    folder = Path(model_path)
    for name in TOKENIZER_FILES:
        p = folder / name
        if p.is_file():
            h.update(name.encode() + b"\0")
            _hash_file(p, h)
    return "dir:" + h.hexdigest()


def _hash_file(path: Path, h) -> None:
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)


def cache_key(data: DataConfig, model_path: str) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"v": VERSION, "tok": tokenizer_identity(model_path), "max_seq_len": data.max_seq_len,
                         "overlong": data.overlong, "lenient": data.lenient}, sort_keys=True).encode())
    for role, files in (("train", data.train), ("eval", data.eval)):
        for f in files:
            h.update(f"\0{role}\0{f.path}\0".encode())
            try:
                _hash_file(Path(f.path), h)
            except OSError:
                h.update(b"<unreadable>")
    return h.hexdigest()[:32]


def _percentile(sorted_values: array, q: float) -> int | None:
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return int(sorted_values[k])


def scan_file(path: str, chat: ChatTokenizer, data: DataConfig, *, for_eval: bool) -> dict[str, Any]:
    """One file's figures (train files follow ``data.overlong``; eval files are only measured)."""
    lengths = array("I")
    bad: dict[str, dict[str, Any]] = {}
    out: dict[str, Any] = {"path": path, "role": "eval" if for_eval else "train", "layout": "-",
                           "lines": 0, "samples": 0, "tokens_total": 0, "loss_tokens": 0, "over_max_seq_len": 0,
                           "dropped_overlong": 0, "truncated": 0, "overlong_lines": []}

    def add_bad(reason: str, where: str, problem: str) -> None:
        entry = bad.setdefault(reason, {"count": 0, "first": []})
        entry["count"] += 1
        if len(entry["first"]) < EXAMPLES:
            entry["first"].append(f"{where}: {problem}")

    info: dict[str, str] = {}
    for where, obj, problem in iter_lines(path, for_eval=for_eval, info=info):
        out["lines"] += 1
        if problem is not None:
            add_bad(reason_of(problem), where, problem)
            continue
        try:
            ids, labels = chat.encode(obj["messages"])
        except DataError as err:
            add_bad(str(err), where, str(err))
            continue
        n = len(ids)
        if n > data.max_seq_len:
            out["over_max_seq_len"] += 1
            if len(out["overlong_lines"]) < EXAMPLES:
                out["overlong_lines"].append(f"{where}: {n} tokens > data.max_seq_len={data.max_seq_len}")
        if not for_eval:
            ids, labels, outcome, why = fit_sample(ids, labels, data.max_seq_len, data.overlong)
            if outcome == "dropped":
                out["dropped_overlong"] += 1
                continue
            if outcome == "error":
                add_bad("over-long sample", where, why)
                continue
            if outcome == "truncated":
                out["truncated"] += 1
            if no_loss(labels):
                add_bad("no trainable tokens", where, "no trainable tokens after tokenization")
                continue
            out["loss_tokens"] += sum(1 for x in labels[1:] if x != IGNORE)
        out["samples"] += 1
        out["tokens_total"] += len(ids)
        lengths.append(len(ids))

    out["layout"] = info.get("layout", "-")
    ordered = array("I", sorted(lengths))
    del lengths
    out["tokens"] = {"p50": _percentile(ordered, 0.5), "p95": _percentile(ordered, 0.95),
                     "max": int(ordered[-1]) if ordered else None,
                     "mean": round(out["tokens_total"] / len(ordered), 1) if ordered else None}
    out["bad"] = bad
    out["bad_lines"] = sum(e["count"] for e in bad.values())
    return out


def _errors(files: list[dict[str, Any]], data: DataConfig) -> list[str]:
    """What would make a trial fail, as ``file:line: reason`` lines."""
    errors: list[str] = []
    for f in files:
        for reason, entry in f["bad"].items():
            if data.lenient and reason != "over-long sample":
                continue  # lenient: skipped and counted by the trainer
            more = entry["count"] - len(entry["first"])
            errors.extend(entry["first"])
            if more > 0:
                errors.append(f"{f['path']}: {more} more line(s): {reason}")
        if f["role"] == "train" and f["samples"] == 0:
            why = "no lines" if f["lines"] == 0 else "no usable sample"
            if f["dropped_overlong"]:
                why += f" ({f['dropped_overlong']} over-long sample(s) dropped: raise data.max_seq_len)"
            errors.append(f"{f['path']}: {why}")
    return errors


def preflight(data: DataConfig, model_path: str, *, cache_dir: str | os.PathLike | None = None,
              chat: ChatTokenizer | None = None) -> dict[str, Any]:
    """The report (see the module docstring); cached under ``cache_dir`` when given."""
    key = cache_key(data, model_path)
    cache_file = Path(cache_dir) / f"{key}.json" if cache_dir is not None else None
    if cache_file is not None and cache_file.is_file():
        try:
            report = json.loads(cache_file.read_text())
            report["cached"] = True
            return report
        except (OSError, ValueError):
            pass  # a torn or unreadable cache entry: measure again
    t0 = time.perf_counter()
    policy = {"max_seq_len": data.max_seq_len, "overlong": data.overlong, "lenient": data.lenient}
    files: list[dict[str, Any]] = []
    if chat is None and (data.train or data.eval):  # no files (builtin:replay): no tokenizer to load
        try:
            chat = load_chat_tokenizer(model_path)
        except DataError as err:
            return {"key": key, "cached": False, "policy": policy, "files": files, "errors": [str(err)],
                    "totals": _totals(files), "seconds": round(time.perf_counter() - t0, 3)}
    for role, entries in (("train", data.train), ("eval", data.eval)):
        for f in entries:
            try:
                files.append(scan_file(f.path, chat, data, for_eval=role == "eval"))
            except DataError as err:  # the file cannot be opened at all
                return {"key": key, "cached": False, "policy": policy, "files": files, "errors": [str(err)],
                        "totals": _totals(files), "seconds": round(time.perf_counter() - t0, 3)}
    report = {
        "key": key,
        "cached": False,
        "policy": policy,
        "files": files,
        "errors": _errors(files, data),
        "totals": _totals(files),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if cache_file is not None and not report["errors"]:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        # a name of its own per call: concurrent preflights of the same data (sweeps submitted
        # together) share one cache file, and one process runs several of them in threads
        fd, tmp = tempfile.mkstemp(dir=cache_file.parent, prefix=f".{cache_file.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(report))
        os.replace(tmp, cache_file)
    return report


def _totals(files: list[dict[str, Any]]) -> dict[str, int]:
    train = [f for f in files if f["role"] == "train"]
    return {
        "train_samples": sum(f["samples"] for f in train),
        "train_tokens": sum(f["tokens_total"] for f in train),
        "loss_tokens": sum(f["loss_tokens"] for f in train),
        "over_max_seq_len": sum(f["over_max_seq_len"] for f in train),
        "dropped_overlong": sum(f["dropped_overlong"] for f in train),
        "truncated": sum(f["truncated"] for f in train),
        "bad_lines": sum(f["bad_lines"] for f in files),
        "tokens_read": sum(f["tokens_total"] for f in files),
    }


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """What a sweep keeps of the report: totals and per-file counts, no example lines."""
    return {
        "key": report.get("key"),
        "policy": report.get("policy"),
        "totals": report.get("totals"),
        "files": [{k: f[k] for k in ("path", "role", "layout", "samples", "tokens", "loss_tokens",
                                     "over_max_seq_len", "dropped_overlong", "truncated", "bad_lines")}
                  for f in report.get("files", [])],
    }


def format_report(report: dict[str, Any]) -> str:
    """The per-file table `sweepd validate` prints, then the errors (if any)."""
    pol = report.get("policy") or {}
    took = "cached" if report.get("cached") else f"{report.get('seconds', 0):.1f}s"
    head = (f"data preflight ({took}; "
            f"max_seq_len {pol.get('max_seq_len')}, overlong: {pol.get('overlong')}"
            + (", lenient" if pol.get("lenient") else "") + "):")
    w = min(100, max([len(f["path"]) for f in report.get("files", [])] + [4]))
    lines = [head, f"  {'file':<{w}} {'role':<5} {'layout':<8} {'samples':>8} {'p50':>6} {'p95':>6} {'max':>7} "
                   f"{'loss tok':>10} {'>max':>5} {'dropped':>7} {'trunc':>6} {'bad':>5}"]
    for f in report.get("files", []):
        t = f["tokens"]
        name = f["path"] if len(f["path"]) <= w else "…" + f["path"][-(w - 1):]
        lines.append(f"  {name:<{w}} {f['role']:<5} {f['layout']:<8} {f['samples']:>8,} {_n(t['p50']):>6} "
                     f"{_n(t['p95']):>6} {_n(t['max']):>7} {f['loss_tokens']:>10,} {f['over_max_seq_len']:>5,} "
                     f"{f['dropped_overlong']:>7,} {f['truncated']:>6,} {f['bad_lines']:>5,}")
        for reason, entry in f["bad"].items():
            lines.append(f"    {entry['count']:,} x {reason}: " + "; ".join(e.split(": ", 1)[0] for e in entry["first"]))
        if f["overlong_lines"] and (f["role"] == "eval" or pol.get("overlong") != "error"):
            lines.append("    over max_seq_len: " + "; ".join(f["overlong_lines"]))
    if report.get("errors"):
        lines.append(f"data errors ({len(report['errors'])}):")
        lines += [f"  {e}" for e in report["errors"][:MAX_ERRORS]]
        if len(report["errors"]) > MAX_ERRORS:
            lines.append(f"  ... and {len(report['errors']) - MAX_ERRORS} more")
    return "\n".join(lines)


def _n(v: Any) -> str:
    return "-" if v is None else f"{v:,}"
