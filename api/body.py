"""Reading a sweep spec from a request body (POST /sweeps): JSON or YAML, bounded in size and
shape, validated with ``sweepd.spec.parse_spec``, its data then checked cheaply (``precheck_data``:
every file opens, the tokenizer loads, the preflight's cache). Every problem becomes a 4xx whose
detail names the field: 413 too large, 415 not JSON/YAML, 422 anything about the content (a data
error names its file). The tokenising pass of the data preflight runs after the sweep exists, off
the request (api/preflight.py). ``decode``, ``validate_spec`` and ``precheck_data`` block (a
megabyte of YAML takes a second or more): the route runs them in a worker thread, never on the
event loop."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request, status
from starlette.requests import ClientDisconnect

from sweepd.spec import Capacity, SpecError, SweepSpec, parse_spec, parse_spec_text

log = logging.getLogger("sweepd.api")

JSON_TYPES = ("application/json",)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
SPEC_TYPES = JSON_TYPES + YAML_TYPES
# A spec is small: a body that parses into more values than this (a YAML alias bomb) or nests
# deeper than this is refused before anything walks it.
MAX_NODES = 100_000
MAX_DEPTH = 64

_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def error(loc: list[str | int], msg: str, type_: str = "spec_error") -> dict[str, Any]:
    return {"loc": ["body", *loc], "msg": msg, "type": type_}


def unprocessable(*errors: dict[str, Any]) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=list(errors))


def field_loc(path: str) -> list[str | int]:
    """``data.train[0].path`` -> ``["data", "train", 0, "path"]``; ``(top level)`` -> ``[]``."""
    if path in ("(top level)", ""):
        return []
    return [int(i) if i else name for name, i in _PART.findall(path)]


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_limited(request: Request, max_bytes: int) -> bytes:
    """The body, or 413 as soon as it is known to be larger than ``max_bytes``."""
    too_large = HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE,
        detail=f"request body larger than {max_bytes:,} bytes (SWEEPD_MAX_BODY_BYTES)",
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise too_large
            chunks.append(chunk)
    except ClientDisconnect:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="the client went away while sending the body") from None
    return b"".join(chunks)


def check_media_type(request: Request) -> str:
    mt = media_type(request)
    if mt not in SPEC_TYPES:
        got = f"{mt!r}" if mt else "no Content-Type"
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            detail=f"a sweep spec must be sent as JSON ({', '.join(JSON_TYPES)}) "
                   f"or YAML ({', '.join(YAML_TYPES)}); got {got}",
        )
    return mt


def _not_unicode(text: str) -> bool:
    """A lone surrogate (a JSON ``"\\ud800"`` escape, or YAML's) is no text: no database stores it."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _check_shape(value: Any) -> None:
    """Refuse values too large or too deep to walk safely, and strings that are not Unicode text
    (iterative; stops early)."""
    stack: list[tuple[Any, int, tuple]] = [(value, 0, ())]
    nodes = 0
    while stack:
        node, depth, path = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise unprocessable(error([], f"the spec has more than {MAX_NODES:,} values; far more than a sweep spec needs"))
        if depth > MAX_DEPTH:
            raise unprocessable(error([], f"the spec nests deeper than {MAX_DEPTH} levels"))
        if isinstance(node, dict):
            for k, v in node.items():
                if isinstance(k, str) and _not_unicode(k):
                    raise unprocessable(error(list(path), f"a key is not valid Unicode text (a lone surrogate): {k!r}"))
                stack.append((v, depth + 1, (*path, k if isinstance(k, (str, int)) else str(k))))
            stack.extend((k, depth + 1, path) for k in node.keys() if not isinstance(k, (str, int, float, bool)) and k is not None)
        elif isinstance(node, (list, tuple)):
            stack.extend((v, depth + 1, (*path, i)) for i, v in enumerate(node))
        elif isinstance(node, str) and _not_unicode(node):
            raise unprocessable(error(list(path), "not valid Unicode text (a lone surrogate)"))


def decode(raw: bytes, mt: str) -> Any:
    """The parsed body (any JSON/YAML value), or 422 naming where the syntax broke."""
    if not raw.strip():
        raise unprocessable(error([], "empty body: expected a sweep spec", "missing"))
    if mt in JSON_TYPES:
        try:
            return json.loads(raw)
        except json.JSONDecodeError as err:
            raise unprocessable(error([], f"invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}",
                                      "json_invalid")) from None
        except (UnicodeDecodeError, RecursionError, ValueError) as err:
            raise unprocessable(error([], f"invalid JSON: {err}", "json_invalid")) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise unprocessable(error([], f"the YAML body is not UTF-8 text ({err.reason} at byte {err.start})",
                                  "yaml_invalid")) from None
    try:
        return parse_spec_text(text, "request body")
    except SpecError as err:
        raise unprocessable(*[error([], f"invalid YAML: {msg}", "yaml_invalid") for _, msg in err.errors]) from None
    except RecursionError:
        raise unprocessable(error([], f"invalid YAML: nested deeper than {MAX_DEPTH} levels", "yaml_invalid")) from None
    except Exception as err:  # noqa: BLE001 - anything else the YAML library trips on is still bad input
        raise unprocessable(error([], f"invalid YAML: {err}", "yaml_invalid")) from None


def validate_spec(value: Any, *, data_roots: list, capacity: Capacity | None) -> SweepSpec:
    """A validated spec (data and model paths resolved inside ``data_roots``), or 422 listing
    every problem with its field path."""
    _check_shape(value)
    try:
        return parse_spec(value, data_roots=data_roots, capacity=capacity, source="request body")
    except SpecError as err:
        raise unprocessable(*[error(field_loc(path), msg) for path, msg in err.errors]) from None
    except Exception as err:  # noqa: BLE001 - bad input must never become a 500
        log.warning("spec validation failed unexpectedly", exc_info=True)
        raise unprocessable(error([], f"invalid spec: {type(err).__name__}: {err}")) from None


def _data_loc(spec: SweepSpec, message: str) -> list[str | int]:
    """The spec field a data error is about: the train/eval file it names, else ``data``."""
    for section in ("train", "eval"):
        for i, f in enumerate(getattr(spec.data, section)):
            if message.startswith(f"{f.path}:"):
                return ["data", section, i, "path"]
    return ["model", "path"] if message.startswith("model.path") else ["data"]


@dataclass
class DataPrecheck:
    """What ``precheck_data`` found: the preflight's summary when its report is cached (the sweep
    can be queued at once), else the loaded tokenizer for the tokenising pass (api/preflight.py)."""

    summary: dict[str, Any] | None = None
    chat: Any = None  # trainer.data.ChatTokenizer


def precheck_data(spec: SweepSpec, *, home: Any) -> DataPrecheck:
    """The data checks that are cheap and certain, or 422 naming the file: every train and eval
    file opens (an empty train file has no sample), a cached preflight report (``home/preflight``)
    is used as it is, else the model folder's tokenizer loads (a builtin model's always does: the
    worker builds it). Blocking: run it off the event loop. The tokenising pass over every line is
    left to the preflight worker."""
    from pathlib import Path

    from trainer.data import DataError, iter_lines
    from trainer.preflight import load_chat_tokenizer, summary

    problems = []
    for section in ("train", "eval"):
        for i, f in enumerate(getattr(spec.data, section)):
            lines = iter_lines(f.path, for_eval=section == "eval", info={})
            try:
                next(lines)  # opens the file (a Parquet file: its schema) and reads one record
            except DataError as err:
                problems.append(error(["data", section, i, "path"], str(err), "data_error"))
            except StopIteration:
                if section == "train":
                    problems.append(error(["data", section, i, "path"], f"{f.path}: no lines", "data_error"))
            finally:
                lines.close()
    if problems:
        raise unprocessable(*problems)
    report = cached_preflight(spec, Path(home) / "preflight")
    if report is not None:
        if report.get("errors"):  # never stored, but a report with errors is still a 422
            raise unprocessable(*[error(_data_loc(spec, e), e, "data_error") for e in report["errors"]])
        return DataPrecheck(summary=summary(report))
    if spec.model.path.startswith("builtin:"):  # always loads (the worker builds it)
        return DataPrecheck()
    from api.preflight import import_tokenizer_code

    import_tokenizer_code()
    try:
        chat = load_chat_tokenizer(spec.model.path)
    except DataError as err:
        raise unprocessable(error(["model", "path"], str(err), "data_error")) from None
    return DataPrecheck(chat=chat)


def cached_preflight(spec: SweepSpec, cache_dir: Any) -> dict[str, Any] | None:
    """The data preflight's cached report for this spec's data and tokenizer, if there is one
    (``trainer.preflight.preflight`` keeps error-free reports as ``<cache_dir>/<cache_key>.json``)."""
    from pathlib import Path

    from trainer.preflight import cache_key

    path = Path(cache_dir) / f"{cache_key(spec.data, spec.model.path)}.json"
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    report["cached"] = True
    return report
