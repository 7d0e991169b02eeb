"""From a spec to one trial's ``TrialConfig``, and the values a trial-config leaf can take.

These work on anything with the spec's sections as attributes (``model``, ``data``, ``budget``,
``resources``, ``search``): a ``SweepSpec``, or the ``Sections`` the checks see before there is
one. ``domains`` is the parsed space, ``fixed`` the flattened ``fixed:`` section.
"""

from __future__ import annotations

from typing import Any

from sweepd.spec.errors import SpecError
from sweepd.spec.fields import leaf_default
from sweepd.spec.space import SPACE_ALIASES, Domains
from trainer.config import TrialConfig, parse_trial_config


def base_trial_dict(spec: Any) -> dict[str, Any]:
    """The trial config every trial starts from: model, data, budget, resources (num_workers
    = workers_per_trial, zero_stage, device from gpus_per_worker) and the search seed."""
    r = spec.resources
    resources: dict[str, Any] = {
        "num_workers": r.workers_per_trial,
        "zero_stage": r.zero_stage,
        "micro_batch_tokens": r.micro_batch_tokens,
        "device": "cuda" if r.gpus_per_worker > 0 else "cpu",
        "activation_checkpointing": r.activation_checkpointing,
        "offload": r.offload,
        "checkpoint_every": r.checkpoint_every.model_dump(exclude_none=True) if r.checkpoint_every else None,
        "gpu_memory_gb": r.gpu_memory_gb,
    }
    if r.micro_batch_size is not None:
        resources["micro_batch_size"] = r.micro_batch_size
    return {
        "model": spec.model.model_dump(),
        "data": spec.data.model_dump(),
        "budget": spec.budget.model_dump(exclude_none=True),
        "resources": resources,
        "seed": spec.search.seed,
    }


def candidates(path: str, domains: Domains, fixed: dict[str, Any], base: dict[str, Any] | None = None) -> list:
    """Every value a trial-config leaf can take (range domains: both ends): its domain, else its
    ``fixed:`` value, else its value in ``base`` (a base trial dict), else the trial default."""
    for _, (p, d) in domains.items():
        if p == path:
            return d.candidates()
    if path in fixed:
        return [fixed[path]]
    node: Any = base
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            break
        node = node[part]
    else:
        return [node]
    return [leaf_default(path)]


def build_trial_config(
    spec: Any, domains: Domains, fixed: dict[str, Any], params: dict[str, Any] | None = None,
    *, output_dir: str | None = None,
) -> TrialConfig:
    """The base trial dict, then ``fixed``, then the space's plain values, then ``params`` (space
    keys, short or dotted). A ``budget.*`` value replaces the whole budget."""
    by_path = {p: k for k, (p, _) in domains.items()}
    values: dict[str, Any] = dict(fixed)
    values.update({p: d.value for _, (p, d) in domains.items() if not d.searched})
    unknown = []
    for key, value in dict(params or {}).items():
        path = domains[key][0] if key in domains else SPACE_ALIASES.get(key, key)
        if path not in by_path:
            unknown.append((f"params.{key}", f"not a key of this sweep's space ({', '.join(domains) or 'empty'})"))
            continue
        values[path] = plain(value)
    if unknown:
        raise SpecError(unknown, source="trial params")
    raw = base_trial_dict(spec)
    if any(p.startswith("budget.") for p in values):
        raw["budget"] = {}
    for path, value in values.items():
        node = raw
        *parents, name = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[name] = value
    if output_dir is not None:
        raw["output_dir"] = str(output_dir)
    return parse_trial_config(raw, source=f"trial of sweep {spec.name!r}")


def plain(value: Any) -> Any:
    """numpy scalars (Ray Tune samples) -> Python numbers."""
    if hasattr(value, "item") and not isinstance(value, (list, tuple, dict, str)):
        try:
            return value.item()
        except (TypeError, ValueError):
            return value
    return value
