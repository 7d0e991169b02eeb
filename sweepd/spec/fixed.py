"""``fixed:``: trial-config fields fixed for every trial, nested as in the trial YAML. It holds
``hparams``, ``optimizer``, ``eval`` and ``seed``; the other sections have their own place."""

from __future__ import annotations

import difflib
from typing import Any

from sweepd.spec.errors import Problem, fmt_value
from sweepd.spec.fields import check_value, leaf

FIXED_SECTIONS = ("hparams", "optimizer", "eval", "seed")
FIXED_ELSEWHERE = {
    "model": "model:",
    "data": "data:",
    "budget": "budget:",
    "resources": "resources:",
    "output_dir": "(nowhere: sweepd chooses each trial's output directory)",
}


def flatten_fixed(fixed: Any, errors: list[Problem]) -> dict[str, Any]:
    """``fixed:`` as {dotted leaf path: validated value}; problems go to ``errors``."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        field, why = leaf(prefix)
        if field is None and why and "is a section" in why and isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
            return
        if field is None:
            errors.append((f"fixed.{prefix}", why))
            return
        ok, coerced = check_value(prefix, value, f"fixed.{prefix}", errors)
        if ok:
            out[prefix] = coerced

    if not isinstance(fixed, dict):
        errors.append(("fixed", f"expected a mapping (got {fmt_value(fixed)})"))
        return out
    for key, value in fixed.items():
        key = str(key)
        if key in FIXED_ELSEWHERE:
            errors.append((f"fixed.{key}", f"not allowed here: set it in {FIXED_ELSEWHERE[key]}"))
        elif key not in FIXED_SECTIONS:
            close = difflib.get_close_matches(key, FIXED_SECTIONS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(FIXED_SECTIONS)}"
            errors.append((f"fixed.{key}", f"unknown field {key!r} ({hint})"))
        elif key == "seed":
            walk("seed", value)
        elif not isinstance(value, dict):
            errors.append((f"fixed.{key}", f"expected a mapping of {key} fields (got {fmt_value(value)})"))
        else:
            for k, v in value.items():
                walk(f"{key}.{k}", v)
    return out
