"""The search space: ``search.space`` keys (short names or dotted trial-config paths) and their
domains, ``{choice: [...]}``, ``{uniform: [lo, hi]}``, ``{loguniform: [lo, hi]}``,
``{int: [lo, hi]}`` (both ends included) or a plain value (fixed for every trial)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sweepd.spec.errors import Problem, fmt_value
from sweepd.spec.fields import check_value, leaf, numeric_kind

SPACE_ALIASES: dict[str, str] = {
    "effective_batch_size": "hparams.effective_batch_size",
    "learning_rate": "hparams.learning_rate",
    "warmup_steps": "hparams.warmup_steps",
    "lr_scheduler": "hparams.lr_scheduler",
    "weight_decay": "optimizer.weight_decay",
    "strategy": "data.strategy",
    "epochs": "budget.epochs",
}
DOMAIN_KINDS = ("choice", "uniform", "loguniform", "int")

# trial-config paths with a place of their own in the spec: never searched
RESERVED_IN_SPACE: dict[str, str] = {
    "model": "set it in the model: section",
    "data.train": "set data files in the data: section (their paths are checked against the data roots)",
    "data.eval": "set data files in the data: section (their paths are checked against the data roots)",
    "output_dir": "sweepd chooses each trial's output directory",
    "resources.num_workers": "set it with resources.workers_per_trial",
    "resources.zero_stage": "set it with resources.zero_stage",
    "resources.activation_checkpointing": "set it with resources.activation_checkpointing",
    "resources.offload": "set it with resources.offload",
    "resources.checkpoint_every": "set it with resources.checkpoint_every",
    "resources.gpu_memory_gb": "set it with resources.gpu_memory_gb",
    "resources.device": "follows resources.gpus_per_worker (0: cpu, else cuda)",
}

Domains = dict[str, tuple[str, "Domain"]]  # space key -> (trial-config path, domain), in order


@dataclass(frozen=True)
class Domain:
    """One search-space entry. ``kind``: choice | uniform | loguniform | int | fixed."""

    kind: str
    values: tuple = ()  # choice
    low: Any = None  # uniform, loguniform, int (inclusive)
    high: Any = None
    value: Any = None  # fixed

    @property
    def searched(self) -> bool:
        return self.kind != "fixed"

    def candidates(self) -> list:
        """Choices; the two ends of a range; the value of a fixed entry."""
        if self.kind == "choice":
            return list(self.values)
        if self.kind == "fixed":
            return [self.value]
        return [self.low, self.high]

    def to_tune(self):
        from ray import tune

        if self.kind == "choice":
            return tune.choice(list(self.values))
        if self.kind == "uniform":
            return tune.uniform(self.low, self.high)
        if self.kind == "loguniform":
            return tune.loguniform(self.low, self.high)
        if self.kind == "int":
            return tune.randint(self.low, self.high + 1)  # randint excludes its upper end
        return self.value

    def describe(self) -> str:
        if self.kind == "choice":
            return "choice of " + ", ".join(short(v) for v in self.values)
        if self.kind == "fixed":
            return f"fixed at {short(self.value)}"
        what = {"uniform": "uniform", "loguniform": "log-uniform", "int": "integer"}[self.kind]
        return f"{what} in [{short(self.low)}, {short(self.high)}]"


def short(v: Any) -> str:
    """A value in words: floats as ``%g``."""
    return f"{v:g}" if isinstance(v, float) else str(v)


def canonical_key(key: str) -> tuple[str | None, str | None]:
    """(trial-config path, None) for a space key, or (None, why it is not one)."""
    path = SPACE_ALIASES.get(key, key)
    if not isinstance(key, str) or not key:
        return None, "empty key"
    for reserved, why in RESERVED_IN_SPACE.items():
        if path == reserved or path.startswith(reserved + "."):
            return None, f"cannot be searched: {why}"
    field, why = leaf(path)
    if field is None:
        if "." not in key:
            why += f"; short names: {', '.join(SPACE_ALIASES)}"
        return None, why
    return path, None


def parse_space(space: dict[str, Any]) -> tuple[Domains, list[Problem]]:
    """``{key: (trial-config path, Domain)}`` and the problems found."""
    errors: list[Problem] = []
    out: Domains = {}
    by_path: dict[str, str] = {}
    if not isinstance(space, dict):
        return {}, [("search.space", f"expected a mapping of keys to domains (got {fmt_value(space)})")]
    for key, raw in space.items():
        key = str(key)
        path, why = canonical_key(key)
        if path is None:
            errors.append((f"search.space.{key}", why))
            continue
        if path in by_path:
            errors.append((f"search.space.{key}", f"same field as search.space.{by_path[path]} ({path})"))
            continue
        by_path[path] = key
        domain = parse_domain(key, path, raw, errors)
        if domain is not None:
            out[key] = (path, domain)
    return out, errors


def parse_domain(key: str, path: str, raw: Any, errors: list[Problem]) -> Domain | None:
    """One space entry as a Domain, or None after recording why it is not one."""
    where = f"search.space.{key}"
    if not isinstance(raw, dict):
        ok, value = check_value(path, raw, where, errors)
        return Domain("fixed", value=value) if ok else None
    kinds = [k for k in raw if k in DOMAIN_KINDS]
    if len(raw) != 1 or len(kinds) != 1:
        errors.append((where, f"a domain is exactly one of {{{', '.join(f'{k}: ...' for k in DOMAIN_KINDS)}}} "
                              f"or a plain value; got keys {', '.join(map(str, raw)) or '(none)'}"))
        return None
    kind = kinds[0]
    parse = _parse_choice if kind == "choice" else _parse_range
    return parse(kind, path, raw[kind], f"{where}.{kind}", errors)


def _parse_choice(kind: str, path: str, arg: Any, where: str, errors: list[Problem]) -> Domain | None:
    if not isinstance(arg, list):
        errors.append((where, f"expected a list of values (got {fmt_value(arg)})"))
        return None
    if not arg:
        errors.append((where, "empty: give at least one value"))
        return None
    values, ok = [], True
    for i, v in enumerate(arg):
        if not (v is None or isinstance(v, (str, int, float, bool))):
            # Optuna's categorical distributions hold plain values only
            errors.append((f"{where}[{i}]", f"a choice must be a number, string or boolean (got {fmt_value(v)})"))
            ok = False
            continue
        good, coerced = check_value(path, v, f"{where}[{i}]", errors)
        ok &= good
        values.append(coerced)
    if not ok:
        return None
    counts = Counter(values)  # linear: a list.count per value was quadratic (16,000 choices: 2.6 s)
    dupes = sorted({short(v) for v in values if counts[v] > 1})
    if dupes:
        errors.append((where, f"duplicate value(s) {', '.join(dupes)}"))
        return None
    return Domain("choice", values=tuple(values))


def _parse_range(kind: str, path: str, arg: Any, where: str, errors: list[Problem]) -> Domain | None:
    """uniform, loguniform or int: ``[low, high]``."""
    if not isinstance(arg, list) or len(arg) != 2:
        errors.append((where, f"expected [low, high] (got {fmt_value(arg)})"))
        return None
    numeric = numeric_kind(path)
    if numeric == "other":
        errors.append((where, f"{path} is not numeric: use {{choice: [...]}}"))
        return None
    if kind in ("uniform", "loguniform") and numeric == "int":
        errors.append((where, f"{path} is an integer: use {{int: [low, high]}} or {{choice: [...]}}"))
        return None
    lo_ok, lo = check_value(path, arg[0], f"{where}[0]", errors)
    hi_ok, hi = check_value(path, arg[1], f"{where}[1]", errors)
    if not (lo_ok and hi_ok):
        return None
    if kind == "int" and any(isinstance(v, bool) or not isinstance(v, int) for v in arg):
        errors.append((where, f"int bounds must be integers (got {fmt_value(arg)})"))
        return None
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (lo, hi)):
        errors.append((where, f"bounds must be finite numbers (got {fmt_value(arg)})"))
        return None
    if not lo < hi:
        errors.append((where, f"low must be less than high (got low={short(lo)}, high={short(hi)})"))
        return None
    if kind == "loguniform" and lo <= 0:
        errors.append((where, f"loguniform needs low > 0 (got low={short(lo)})"))
        return None
    if kind != "int":
        lo, hi = float(lo), float(hi)
    return Domain(kind, low=lo, high=hi)


MAX_GRID_POINTS = 100_000  # Optuna's GridSampler holds every point in memory


def grid_problems(domains: Domains) -> list[Problem]:
    """Grid search needs ``{choice: [...]}`` for every searched key, and a grid of at most
    MAX_GRID_POINTS points, counted before anything builds it."""
    problems = [(f"search.space.{key}", f"grid search needs {{choice: [...]}}, got {d.kind}")
                for key, (_, d) in domains.items() if d.searched and d.kind != "choice"]
    sizes = [len(d.values) for _, d in domains.values() if d.searched and d.kind == "choice"]
    points = math.prod(sizes)
    if not problems and points > MAX_GRID_POINTS:
        problems.append(("search.space", f"the grid has {points:,} points ({' x '.join(map(str, sizes))}); "
                                         f"at most {MAX_GRID_POINTS:,}: use algorithm tpe or random, or fewer choices"))
    return problems
