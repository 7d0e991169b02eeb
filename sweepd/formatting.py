"""Numbers for people and for JSON, written once: what counts as a finite number, NaN and
infinities as null, numbers and durations as people read them, nested configs as dotted keys,
and field paths as error messages name them.

Standard library only, so any layer may use it: the store (JSON columns), the pruners (their
decision sentences), the API and the reports. The trainer keeps its own small check, since it
must not import sweepd.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

MISSING = "–"  # how a missing value is shown in reports and tables


def is_finite_number(value: Any) -> bool:
    """True for an int or float that is neither NaN nor infinite (a bool is not a number)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def finite(value: Any) -> float | None:
    """``value`` as a float, or None when it is missing, non-numeric, NaN or infinite."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def json_safe(obj: Any) -> Any:
    """``obj`` with every NaN and infinity replaced by None, in nested dicts, lists and tuples too
    (tuples become lists); anything else is kept as it is. JSON has no NaN: PostgreSQL's JSON
    rejects it and SQLite cannot keep it."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def fmt_num(value: Any, digits: int = 4, missing: str = MISSING) -> str:
    """A number for people: ints and whole floats with thousands separators (``2,048``), other
    floats to ``digits`` significant digits (``3e-05``, ``1.841``) but without an exponent once
    the digits run out (``12345.6`` -> ``12,346``). None is ``missing``; NaN and infinities
    are ``nan``/``inf``; a bool is ``true``/``false``; anything else is ``str(value)``."""
    if value is None:
        return missing
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if not isinstance(value, float):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 10**digits:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def fmt_seconds(seconds: Any) -> str:
    """A duration for people: ``5.0 s``, ``12m 03s``, ``1h 02m``; None is ``–``."""
    if seconds is None:
        return MISSING
    s = float(seconds)
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m}m {s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m"


def flatten(config: Mapping[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys: ``{"hparams": {"lr": 1e-4}}`` -> ``{"hparams.lr": 1e-4}``."""
    out: dict[str, Any] = {}
    for key, value in (config or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def dotted_path(parts: Iterable[str | int]) -> str:
    """A field path as people write it: ``("data", "train", 0, "path")`` -> ``data.train[0].path``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out
