"""Every number in a spec is finite. YAML's ``.inf``/``.nan`` and JSON's ``Infinity``/``NaN`` parse
as floats that no field wants: stored as JSON they turn into ``null`` and the driver could not
read its own sweep back. Checked on the raw document, before anything else, so the error names
the field whatever section it is in (``fixed.optimizer.weight_decay``, a choice value...)."""

from __future__ import annotations

import math
from typing import Any

from sweepd.formatting import dotted_path
from sweepd.spec.errors import Problem


def non_finite_problems(raw: Any) -> list[Problem]:
    """(field path, message) for each inf or nan anywhere in ``raw``, walked without recursion."""
    problems: list[Problem] = []
    stack: list[tuple[tuple, Any]] = [((), raw)]
    while stack:
        loc, node = stack.pop()
        if isinstance(node, float) and not math.isfinite(node):
            problems.append((dotted_path(loc) or "(top level)", f"must be a finite number (got {node})"))
        elif isinstance(node, dict):
            stack.extend(((*loc, k), v) for k, v in reversed(list(node.items())))
        elif isinstance(node, list):
            stack.extend(((*loc, i), v) for i, v in reversed(list(enumerate(node))))
    return problems
