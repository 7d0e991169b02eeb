"""``make_pruner``: a pruner from the sweep spec's ``pruner:`` section (a dict or a pydantic model).

    {"type": "asha", "signal": "loss", "grace": 1024, "reduction_factor": 3,
     "time_attr": "samples", "max_t": 8192, "window": 5, "mode": "min"}

Only the options a spec sets need to be given: every other one takes the pruner class's own
default (its constructor's, read by ``option_defaults``), so each default is written once.
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

# A spec without `pruner:` prunes with ASHA on the learned signal: `make bench-pruning` measured
# it lowest in mean regret over every bank (README, "Choosing the default pruner");
# tests/benchmarks/test_default_pruner.py ties this to benchmarks/results/pruning.json.
DEFAULT_PRUNER_TYPE = "asha"


def option_defaults(kind: str) -> dict[str, Any]:
    """Every option pruner type ``kind`` accepts, with its default: the constructors' keyword
    defaults along the class hierarchy (a subclass's own options first)."""
    cls = _pruner_class(kind)
    out: dict[str, Any] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        for name, param in inspect.signature(klass.__init__).parameters.items():
            if name != "self" and param.default is not inspect.Parameter.empty:
                out.setdefault(name, param.default)
    return out


def make_pruner(config: Any) -> Pruner:
    if hasattr(config, "model_dump"):  # a pydantic model; its unset optionals keep our defaults
        config = config.model_dump(exclude_none=True)
    if not isinstance(config, Mapping):
        raise ValueError(f"pruner config must be a mapping, got {config!r}")
    options = {k: v for k, v in config.items() if v is not None}  # None: the class's default
    kind = options.pop("type", DEFAULT_PRUNER_TYPE)
    cls = _pruner_class(kind)
    if kind == "none":
        return cls()  # `none` takes no options; a spec may still carry the usual ones
    unknown = sorted(set(options) - set(option_defaults(kind)))
    if unknown:
        raise ValueError(
            f"unknown option(s) for pruner type {kind!r}: {', '.join(unknown)} "
            f"(accepted: {', '.join(sorted(option_defaults(kind)))})"
        )
    return cls(**options)


def _pruner_class(kind: Any) -> type[Pruner]:
    if kind not in PRUNERS:
        raise ValueError(f"pruner type must be one of {', '.join(PRUNERS)}; got {kind!r}")
    return PRUNERS[kind]
