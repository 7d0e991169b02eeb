"""``make_pruner``: a pruner from the sweep spec's ``pruner:`` section (a dict or a pydantic model).

    {"type": "asha", "signal": "grad_norm", "grace": 1024, "reduction_factor": 3,
     "time_attr": "samples", "max_t": 8192, "window": 5, "mode": "min"}
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from sweepd.pruners.asha import ASHAPruner
from sweepd.pruners.base import Pruner
from sweepd.pruners.median import MedianPruner
from sweepd.pruners.nop import NopPruner

PRUNERS: dict[str, type[Pruner]] = {"asha": ASHAPruner, "median": MedianPruner, "none": NopPruner}


def make_pruner(config: Any) -> Pruner:
    if hasattr(config, "model_dump"):  # a pydantic model; its unset optionals keep our defaults
        config = config.model_dump(exclude_none=True)
    if not isinstance(config, Mapping):
        raise ValueError(f"pruner config must be a mapping, got {config!r}")
    spec = dict(config)
    kind = spec.pop("type", "asha")
    if kind not in PRUNERS:
        raise ValueError(f"pruner type must be one of {', '.join(PRUNERS)}; got {kind!r}")
    cls = PRUNERS[kind]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    if kind == "none":
        spec = {}  # `none` takes no options; a spec may still carry the usual ones
    unknown = sorted(set(spec) - accepted)
    if unknown:
        raise ValueError(
            f"unknown option(s) for pruner type {kind!r}: {', '.join(unknown)} "
            f"(accepted: {', '.join(sorted(accepted))})"
        )
    return cls(**spec)
