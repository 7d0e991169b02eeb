"""``SpecError`` (every problem of a spec at once) and turning pydantic's errors into its
``(field_path, message)`` pairs: ``data.train[0].path``, ``search.space.learning_rate.loguniform``."""

from __future__ import annotations

import difflib
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from sweepd.formatting import dotted_path

Problem = tuple[str, str]  # (field path, message)
MAX_PROBLEMS = 200  # a spec with more problems than this is listed up to here, then counted


class SpecError(ValueError):
    """Everything wrong with a spec at once: ``.errors`` is a list of (field_path, message).

    ``str()`` lists them one per line as ``field_path: message``. It is a ValueError so that a
    pydantic model embedding ``SweepSpec`` (an API body) reports it as a validation error.
    """

    def __init__(self, errors: list[Problem], source: str = "spec"):
        self.errors = list(dict.fromkeys(errors))  # the first of each, in order
        self.source = source
        super().__init__("\n".join(f"{p}: {m}" for p, m in self.errors))

    def format(self) -> str:
        """A header line and the problems, indented: what `sweepd validate` prints."""
        n = len(self.errors)
        lines = [f"{self.source}: {n} problem{'s' if n != 1 else ''}"]
        lines += [f"  {p}: {m}" for p, m in self.errors]
        return "\n".join(lines)


def fmt_value(value: Any) -> str:
    """A value as an error message quotes it: its repr, cut at 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (``X``, ``list[X]``, ``X | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = model_in(arg)
        if found is not None:
            return found
    return None


def _known_fields(model: type[BaseModel] | None, loc: tuple) -> list[str] | None:
    """The fields of the model that ``loc`` (the parent of an unknown field) points into."""
    for part in loc:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        model = model_in(field.annotation)
    return list(model.model_fields) if model is not None else None


def unknown_field(name: str, known: list[str] | tuple[str, ...] | None) -> str:
    """``unknown field 'x' (did you mean 'y'?)``, or the known names when none is close."""
    msg = f"unknown field {name!r}"
    if known:
        close = difflib.get_close_matches(name, known, n=1)
        msg += f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
    return msg


def validation_errors(err: ValidationError, model: type[BaseModel], prefix: tuple = ()) -> list[Problem]:
    """pydantic's errors as problems; a ``SpecError`` raised inside validation passes through."""
    out: list[Problem] = []
    errors = err.errors()
    for n, e in enumerate(errors):
        if len(out) >= MAX_PROBLEMS:  # past this, naming each (difflib per unknown key) is the cost
            out.append(("(top level)", f"... and {len(errors) - n:,} more problem(s) not shown"))
            break
        inner = (e.get("ctx") or {}).get("error")
        if isinstance(inner, SpecError):
            out.extend(inner.errors)
            continue
        loc = tuple(prefix) + tuple(e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = unknown_field(str(loc[-1]), _known_fields(model, loc[:-1])) if loc else "unknown field"
        elif e["type"] == "missing":
            msg = "missing (required)"
        else:
            got = e.get("input")
            if not isinstance(got, dict) and not (isinstance(got, str) and repr(got) in msg):
                msg += f" (got {fmt_value(got)})"
        out.append((dotted_path(loc) or "(top level)", msg))
    return out
