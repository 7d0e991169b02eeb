"""The sweep spec: one YAML (or JSON) document describes a whole hyperparameter sweep.

    name: demo
    model: {path: builtin:tiny}
    data: {train: [{path: data/builtin/train.jsonl}], eval: [{path: data/builtin/eval.jsonl}]}
    search:
      algorithm: tpe              # tpe | random | grid
      num_trials: 12
      max_concurrent: 2
      seed: 0
      space:
        effective_batch_size: {choice: [8, 32, 128]}
        learning_rate: {loguniform: [1.0e-5, 3.0e-3]}
        warmup_steps: {choice: [0, 10]}
        lr_scheduler: {choice: [constant, cosine]}
    fixed: {optimizer: {weight_decay: 0.1}, eval: {max_items: 100}}
    budget: {max_samples: 8192}
    pruner: {type: asha, signal: grad_norm, grace: 1024, reduction_factor: 3, time_attr: samples}
    objective: {metric: eval_loss, mode: min}
    resources: {workers_per_trial: 1, cpus_per_worker: 1, gpus_per_worker: 0, zero_stage: 2}
    save_best_model: false

Entry points: ``load_spec(path_or_text)`` and ``parse_spec(mapping)`` return a validated
``SweepSpec`` or raise ``SpecError``, whose ``.errors`` lists EVERY problem found as
``(field_path, message)`` pairs (``data.train[0].path``, ``search.space.learning_rate.loguniform``).

Search space keys
-----------------
A key is a short name or any dotted trial-config path (``trainer.config.TrialConfig``):

    effective_batch_size -> hparams.effective_batch_size    weight_decay -> optimizer.weight_decay
    learning_rate        -> hparams.learning_rate           strategy     -> data.strategy
    warmup_steps         -> hparams.warmup_steps            epochs       -> budget.epochs
    lr_scheduler         -> hparams.lr_scheduler

A value is a domain, ``{choice: [...]}``, ``{uniform: [lo, hi]}``, ``{loguniform: [lo, hi]}``,
``{int: [lo, hi]}`` (both ends included), or a plain value (fixed for every trial). A searched
``budget.*`` key (e.g. ``epochs``) replaces the ``budget:`` section for that trial. Keys that
have their own section cannot be searched: ``model``, ``data.train``, ``data.eval``,
``output_dir``, ``resources.num_workers``, ``resources.zero_stage``, ``resources.device``.

``fixed`` holds trial-config fields fixed for every trial, nested as in the trial YAML; it is
for ``hparams``, ``optimizer``, ``eval`` and ``seed`` (the other sections have their own place
in the spec).

Paths
-----
Relative data and model paths resolve against the current directory (``base_dir``), the way the
trainer CLI resolves a trial YAML. With ``check_paths=True`` (the default) each must exist and
its resolved path, symlinks followed, must lie inside one of ``SWEEPD_DATA_ROOTS``; the validated
spec then carries the resolved absolute paths. ``check_paths=False`` checks the structure only
(no filesystem access) and makes relative paths absolute; use it for specs meant for another
machine (e.g. ``examples/recipe_7b.yaml``).

Resources
---------
``workers_per_trial * cpus_per_worker`` and ``workers_per_trial * gpus_per_worker`` must fit the
cluster's ``Capacity`` (default: this machine, ``os.cpu_count()`` and
``torch.cuda.device_count()``). A trial with ``gpus_per_worker: 0`` runs on the CPU; with GPUs
reserved it runs on CUDA.
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
import os
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo, field_validator, model_validator

from sweepd.pruners.signals import SIGNALS
from trainer.config import Budget, ConfigError, DataConfig, ModelConfig, TrialConfig, parse_trial_config

# ---- vocabularies ---------------------------------------------------------------------------

SPACE_ALIASES: dict[str, str] = {
    "effective_batch_size": "hparams.effective_batch_size",
    "learning_rate": "hparams.learning_rate",
    "warmup_steps": "hparams.warmup_steps",
    "lr_scheduler": "hparams.lr_scheduler",
    "weight_decay": "optimizer.weight_decay",
    "strategy": "data.strategy",
    "epochs": "budget.epochs",
}

# metric -> its natural mode (the default when `objective.mode` is left out)
METRICS: dict[str, str] = {"eval_loss": "min", "mc_accuracy": "max", "exact_match": "max", "train_loss": "min"}
EVAL_METRICS = ("eval_loss", "mc_accuracy", "exact_match")
PRUNER_TYPES = ("asha", "median", "none")
DOMAIN_KINDS = ("choice", "uniform", "loguniform", "int")

# trial-config paths with a place of their own in the spec: never searched
_RESERVED_IN_SPACE: dict[str, str] = {
    "model": "set it in the model: section",
    "data.train": "set data files in the data: section (their paths are checked against the data roots)",
    "data.eval": "set data files in the data: section (their paths are checked against the data roots)",
    "output_dir": "sweepd chooses each trial's output directory",
    "resources.num_workers": "set it with resources.workers_per_trial",
    "resources.zero_stage": "set it with resources.zero_stage",
    "resources.device": "follows resources.gpus_per_worker (0: cpu, else cuda)",
}
# sections of the trial config that `fixed:` may hold; the others have their own spec section
_FIXED_SECTIONS = ("hparams", "optimizer", "eval", "seed")
_FIXED_ELSEWHERE = {
    "model": "model:",
    "data": "data:",
    "budget": "budget:",
    "resources": "resources:",
    "output_dir": "(nowhere: sweepd chooses each trial's output directory)",
}


# ---- errors ---------------------------------------------------------------------------------


class SpecError(ValueError):
    """Everything wrong with a spec at once: ``.errors`` is a list of (field_path, message).

    ``str()`` lists them one per line as ``field_path: message``. It is a ValueError so that a
    pydantic model embedding ``SweepSpec`` (an API body) reports it as a validation error.
    """

    def __init__(self, errors: list[tuple[str, str]], source: str = "spec"):
        self.errors = _dedupe(errors)
        self.source = source
        super().__init__("\n".join(f"{p}: {m}" for p, m in self.errors))

    def format(self) -> str:
        """A header line and the problems, indented: what `sweepd validate` prints."""
        n = len(self.errors)
        lines = [f"{self.source}: {n} problem{'s' if n != 1 else ''}"]
        lines += [f"  {p}: {m}" for p, m in self.errors]
        return "\n".join(lines)


def _dedupe(errors: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for e in errors:
        if e not in out:
            out.append(e)
    return out


def _fmt_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _fmt_value(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


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
        model = _model_in(field.annotation)
    return list(model.model_fields) if model is not None else None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (``X``, ``list[X]``, ``X | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _validation_errors(err: ValidationError, model: type[BaseModel], prefix: tuple = ()) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for e in err.errors():
        inner = (e.get("ctx") or {}).get("error")
        if isinstance(inner, SpecError):
            out.extend(inner.errors)
            continue
        loc = tuple(prefix) + tuple(e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            known = _known_fields(model, loc[:-1])
            msg = f"unknown field {loc[-1]!r}" if loc else "unknown field"
            if known:
                close = difflib.get_close_matches(str(loc[-1]), known, n=1)
                msg += f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
        elif e["type"] == "missing":
            msg = "missing (required)"
        else:
            got = e.get("input")
            if not isinstance(got, dict) and not (isinstance(got, str) and repr(got) in msg):
                msg += f" (got {_fmt_value(got)})"
        out.append((_fmt_loc(loc), msg))
    return out


# ---- capacity -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Capacity:
    """What the cluster has; a trial needing more than this could never be scheduled."""

    cpus: float
    gpus: float

    @classmethod
    def detect(cls) -> "Capacity":
        """This machine: os.cpu_count() CPUs and torch.cuda.device_count() GPUs."""
        try:
            import torch

            gpus = torch.cuda.device_count()
        except Exception:  # no torch, or a broken CUDA install: no GPUs
            gpus = 0
        return cls(cpus=os.cpu_count() or 1, gpus=gpus)

    @classmethod
    def unlimited(cls) -> "Capacity":
        return cls(cpus=math.inf, gpus=math.inf)


@dataclass
class _Context:
    check_paths: bool = True
    capacity: Capacity | None = None
    base_dir: Path | None = None
    data_roots: list[Path] | None = None

    def roots(self) -> list[Path]:
        if self.data_roots is None:
            from sweepd.settings import get_settings

            self.data_roots = list(get_settings().resolved_data_roots)
        return [Path(r).expanduser().resolve() for r in self.data_roots]

    def cap(self) -> Capacity:
        if self.capacity is None:
            self.capacity = Capacity.detect()
        return self.capacity

    def base(self) -> Path:
        return Path(self.base_dir) if self.base_dir is not None else Path.cwd()


def _context(info: ValidationInfo | None) -> _Context:
    ctx = info.context if info is not None and isinstance(info.context, dict) else {}
    found = ctx.get("sweepd")
    return found if isinstance(found, _Context) else _Context()


# ---- search-space domains -------------------------------------------------------------------


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
            return "choice of " + ", ".join(_short(v) for v in self.values)
        if self.kind == "fixed":
            return f"fixed at {_short(self.value)}"
        what = {"uniform": "uniform", "loguniform": "log-uniform", "int": "integer"}[self.kind]
        return f"{what} in [{_short(self.low)}, {_short(self.high)}]"


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _leaf(path: str) -> tuple[Any, str | None]:
    """(pydantic FieldInfo, None) for a trial-config leaf path, or (None, why not)."""
    model: type[BaseModel] = TrialConfig
    parts = path.split(".")
    walked: list[str] = []
    for i, part in enumerate(parts):
        fields = model.model_fields
        if part not in fields:
            where = ".".join(walked) or "the trial config"
            known = list(fields)
            close = difflib.get_close_matches(part, known, n=1)
            hint = f"did you mean {'.'.join([*walked, close[0]])!r}?" if close else f"{where} has: {', '.join(known)}"
            return None, f"not a trial-config field: {part!r} is not in {where} ({hint})"
        walked.append(part)
        sub = _model_in(fields[part].annotation)
        last = i == len(parts) - 1
        if last:
            if sub is not None and not typing.get_args(fields[part].annotation):
                return None, f"{path!r} is a section, not a field; name one of {', '.join(f'{path}.{k}' for k in sub.model_fields)}"
            return fields[part], None
        if sub is None:
            return None, f"not a trial-config field: {'.'.join(walked)!r} has no sub-fields"
        model = sub
    return None, "empty key"


_ADAPTERS: dict[str, TypeAdapter] = {}


def _adapter(path: str) -> TypeAdapter:
    if path not in _ADAPTERS:
        field, _ = _leaf(path)
        ann = field.annotation
        if field.metadata:
            ann = Annotated[tuple([ann, *field.metadata])]
        _ADAPTERS[path] = TypeAdapter(ann)
    return _ADAPTERS[path]


def _numeric_kind(path: str) -> str:
    """'float', 'int' or 'other': which range domains a leaf accepts."""
    ann = _leaf(path)[0].annotation
    kinds = set()

    def walk(a: Any) -> None:
        if a is float:
            kinds.add("float")
        elif a is int:
            kinds.add("int")
        elif a is bool or a is type(None):
            pass
        elif typing.get_origin(a) is Annotated:
            walk(typing.get_args(a)[0])
        elif typing.get_origin(a) is typing.Union or type(a).__name__ == "UnionType":
            for arg in typing.get_args(a):
                walk(arg)
        else:
            kinds.add("other")

    walk(ann)
    if "float" in kinds:
        return "float"
    if kinds == {"int"}:
        return "int"
    return "other"


def _check_value(path: str, value: Any, where: str, errors: list) -> tuple[bool, Any]:
    """Validate one value against the leaf's type; on failure record why at ``where``."""
    try:
        return True, _adapter(path).validate_python(value)
    except ValidationError as err:
        e = err.errors()[0]
        msg = e["msg"].removeprefix("Value error, ")
        errors.append((where, f"{msg} (got {_fmt_value(value)})"))
        return False, None


def canonical_key(key: str) -> tuple[str | None, str | None]:
    """(trial-config path, None) for a space key, or (None, why it is not one)."""
    path = SPACE_ALIASES.get(key, key)
    if not isinstance(key, str) or not key:
        return None, "empty key"
    for reserved, why in _RESERVED_IN_SPACE.items():
        if path == reserved or path.startswith(reserved + "."):
            return None, f"cannot be searched: {why}"
    field, why = _leaf(path)
    if field is None:
        if "." not in key:
            why += f"; short names: {', '.join(SPACE_ALIASES)}"
        return None, why
    return path, None


def _parse_domain(key: str, path: str, raw: Any, errors: list) -> Domain | None:
    where = f"search.space.{key}"
    if isinstance(raw, dict):
        kinds = [k for k in raw if k in DOMAIN_KINDS]
        if len(raw) != 1 or len(kinds) != 1:
            errors.append((where, f"a domain is exactly one of {{{', '.join(f'{k}: ...' for k in DOMAIN_KINDS)}}} "
                                  f"or a plain value; got keys {', '.join(map(str, raw)) or '(none)'}"))
            return None
        kind = kinds[0]
        arg = raw[kind]
        where = f"{where}.{kind}"
        if kind == "choice":
            if not isinstance(arg, list):
                errors.append((where, f"expected a list of values (got {_fmt_value(arg)})"))
                return None
            if not arg:
                errors.append((where, "empty: give at least one value"))
                return None
            values, ok = [], True
            for i, v in enumerate(arg):
                if not (v is None or isinstance(v, (str, int, float, bool))):
                    # Optuna's categorical distributions hold plain values only
                    errors.append((f"{where}[{i}]", f"a choice must be a number, string or boolean (got {_fmt_value(v)})"))
                    ok = False
                    continue
                good, coerced = _check_value(path, v, f"{where}[{i}]", errors)
                ok &= good
                values.append(coerced)
            if not ok:
                return None
            dupes = sorted({_short(v) for v in values if values.count(v) > 1})
            if dupes:
                errors.append((where, f"duplicate value(s) {', '.join(dupes)}"))
                return None
            return Domain("choice", values=tuple(values))
        # ranges
        if not isinstance(arg, list) or len(arg) != 2:
            errors.append((where, f"expected [low, high] (got {_fmt_value(arg)})"))
            return None
        numeric = _numeric_kind(path)
        if numeric == "other":
            errors.append((where, f"{path} is not numeric: use {{choice: [...]}}"))
            return None
        if kind in ("uniform", "loguniform") and numeric == "int":
            errors.append((where, f"{path} is an integer: use {{int: [low, high]}} or {{choice: [...]}}"))
            return None
        lo_ok, lo = _check_value(path, arg[0], f"{where}[0]", errors)
        hi_ok, hi = _check_value(path, arg[1], f"{where}[1]", errors)
        if not (lo_ok and hi_ok):
            return None
        if kind == "int":
            bad = [v for v in arg if isinstance(v, bool) or not isinstance(v, int)]
            if bad:
                errors.append((where, f"int bounds must be integers (got {_fmt_value(arg)})"))
                return None
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (lo, hi)):
            errors.append((where, f"bounds must be finite numbers (got {_fmt_value(arg)})"))
            return None
        if not lo < hi:
            errors.append((where, f"low must be less than high (got low={_short(lo)}, high={_short(hi)})"))
            return None
        if kind == "loguniform" and lo <= 0:
            errors.append((where, f"loguniform needs low > 0 (got low={_short(lo)})"))
            return None
        if kind != "int":
            lo, hi = float(lo), float(hi)
        return Domain(kind, low=lo, high=hi)
    ok, value = _check_value(path, raw, where, errors)
    return Domain("fixed", value=value) if ok else None


def parse_space(space: dict[str, Any]) -> tuple[dict[str, tuple[str, Domain]], list[tuple[str, str]]]:
    """``{key: (trial-config path, Domain)}`` and the problems found."""
    errors: list[tuple[str, str]] = []
    out: dict[str, tuple[str, Domain]] = {}
    by_path: dict[str, str] = {}
    if not isinstance(space, dict):
        return {}, [("search.space", f"expected a mapping of keys to domains (got {_fmt_value(space)})")]
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
        domain = _parse_domain(key, path, raw, errors)
        if domain is not None:
            out[key] = (path, domain)
    return out, errors


def _flatten_fixed(fixed: dict, errors: list) -> dict[str, Any]:
    """``fixed:`` as {dotted leaf path: validated value}."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        field, why = _leaf(prefix)
        if field is None and why and "is a section" in why and isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
            return
        if field is None:
            errors.append((f"fixed.{prefix}", why))
            return
        ok, coerced = _check_value(prefix, value, f"fixed.{prefix}", errors)
        if ok:
            out[prefix] = coerced

    if not isinstance(fixed, dict):
        errors.append(("fixed", f"expected a mapping (got {_fmt_value(fixed)})"))
        return out
    for key, value in fixed.items():
        key = str(key)
        if key in _FIXED_ELSEWHERE:
            errors.append((f"fixed.{key}", f"not allowed here: set it in {_FIXED_ELSEWHERE[key]}"))
            continue
        if key not in _FIXED_SECTIONS:
            close = difflib.get_close_matches(key, _FIXED_SECTIONS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(_FIXED_SECTIONS)}"
            errors.append((f"fixed.{key}", f"unknown field {key!r} ({hint})"))
            continue
        if key == "seed":
            walk("seed", value)
        elif not isinstance(value, dict):
            errors.append((f"fixed.{key}", f"expected a mapping of {key} fields (got {_fmt_value(value)})"))
        else:
            for k, v in value.items():
                walk(f"{key}.{k}", v)
    return out


# ---- the spec's sections --------------------------------------------------------------------


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchSpec(Strict):
    algorithm: Literal["tpe", "random", "grid"] = "tpe"
    num_trials: Annotated[int, Field(ge=1, le=10_000)] = 10
    max_concurrent: Annotated[int, Field(ge=1, le=1_000)] = 1
    seed: int = 0
    space: dict[str, Any] = Field(description="key -> {choice|uniform|loguniform|int: ...} or a plain value")


class PrunerSpec(Strict):
    # Defaults chosen by the pruner benchmark (`make bench-pruning`, README "Choosing the default
    # pruner"): no pruning won at 30% of full-grid compute, and when a pruner is asked for, ASHA
    # on the training loss was the best signal (grad_norm/paper ended 9-15% of the range off).
    # tests/benchmarks/test_default_pruner.py keeps this in step with the stored result.
    type: Literal["asha", "median", "none"] = "none"
    signal: str = "loss"
    grace: Annotated[float, Field(gt=0)] = 1024
    reduction_factor: Annotated[float, Field(gt=1)] | None = Field(None, description="asha only; default 3")
    interval: Annotated[float, Field(gt=0)] | None = Field(None, description="median only; default: grace")
    min_samples: Annotated[int, Field(ge=1)] | None = Field(None, description="median only; default 3")
    time_attr: Literal["samples", "steps"] = "samples"
    window: Annotated[int, Field(ge=1)] = 5
    smooth: Literal["median", "mean"] = "median"
    min_completed: Annotated[int, Field(ge=3)] = 4

    @field_validator("signal")
    @classmethod
    def _known_signal(cls, v: str) -> str:
        if v not in SIGNALS:
            raise ValueError(f"unknown signal {v!r}; known: {', '.join(SIGNALS)}")
        return v

    @model_validator(mode="after")
    def _options_for_type(self) -> "PrunerSpec":
        wrong = []
        if self.type != "asha" and self.reduction_factor is not None:
            wrong.append("reduction_factor (asha only)")
        if self.type != "median":
            wrong += [f"{k} (median only)" for k in ("interval", "min_samples") if getattr(self, k) is not None]
        if wrong and self.type != "none":
            raise ValueError(f"option(s) not used by pruner type {self.type!r}: {', '.join(wrong)}")
        return self


class ObjectiveSpec(Strict):
    metric: str = "eval_loss"
    mode: Literal["min", "max"] | None = Field(None, description="default: the metric's natural mode")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, v: str) -> str:
        if v not in METRICS:
            raise ValueError(f"unknown metric {v!r}; known: {', '.join(METRICS)}")
        return v

    @model_validator(mode="after")
    def _default_mode(self) -> "ObjectiveSpec":
        if self.mode is None:
            self.mode = METRICS[self.metric]  # type: ignore[assignment]
        return self


class ResourcesSpec(Strict):
    workers_per_trial: Annotated[int, Field(ge=1, le=512)] = 1
    cpus_per_worker: Annotated[float, Field(gt=0)] = 1
    gpus_per_worker: Annotated[float, Field(ge=0)] = 0
    zero_stage: Literal[0, 1, 2, 3] = 2
    max_failures: Annotated[int, Field(ge=0, le=100)] = 1
    micro_batch_tokens: int | str = Field("auto", description="'auto' or a token budget per micro-batch (>= 8)")
    micro_batch_size: Annotated[int, Field(ge=1)] | None = Field(None, description="fixed samples per micro-batch")

    @field_validator("micro_batch_tokens", mode="before")
    @classmethod
    def _tokens(cls, v: Any) -> Any:
        if v == "auto":
            return v
        if isinstance(v, bool) or not isinstance(v, int) or v < 8:
            raise ValueError("must be 'auto' or an integer >= 8")
        return v


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class SweepSpec(Strict):
    """A validated sweep. Build it with ``load_spec``/``parse_spec`` to get every problem at once;
    ``SweepSpec.model_validate(raw, context={"sweepd": ...})`` works too (an API body)."""

    name: str
    model: ModelConfig
    data: DataConfig
    search: SearchSpec
    fixed: dict[str, Any] = Field(default_factory=dict)
    budget: Budget
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    objective: ObjectiveSpec = Field(default_factory=ObjectiveSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    save_best_model: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("must be 1-100 characters of letters, digits, '.', '_' or '-', starting with a letter or digit")
        return v

    @model_validator(mode="after")
    def _semantics(self, info: ValidationInfo) -> "SweepSpec":
        errors = _semantic_errors(self.__dict__, _context(info), rewrite_paths=True)
        if errors:
            raise SpecError(errors)
        return self

    @classmethod
    def from_stored(cls, data: str | bytes | dict) -> "SweepSpec":
        """A spec that was validated before (``model_dump_json()`` of a ``load_spec`` result, as
        the API stores it or a trial receives it): structure only, no filesystem or capacity
        checks, which would judge the paths from the wrong machine or directory (a Ray worker
        runs in its trial folder). Never use it on user input."""
        ctx = {"sweepd": _Context(check_paths=False, capacity=Capacity.unlimited())}
        if isinstance(data, dict):
            return cls.model_validate(data, context=ctx)
        return cls.model_validate_json(data, context=ctx)

    # ---- the search space -------------------------------------------------------------------

    @property
    def domains(self) -> dict[str, tuple[str, Domain]]:
        """``{space key: (trial-config path, Domain)}``, in the spec's order."""
        return parse_space(self.search.space)[0]

    def to_tune_space(self) -> dict[str, Any]:
        """The searched keys as Ray Tune domains (tune.choice / uniform / loguniform /
        randint(hi + 1)), keyed by the spec's own keys. Plain (fixed) entries are left out:
        ``trial_config`` applies them itself."""
        return {k: d.to_tune() for k, (_, d) in self.domains.items() if d.searched}

    def grid_space(self) -> dict[str, list]:
        """``{key: [values]}`` for grid search; every searched key must be a ``choice``.

        The grid is the product of the choices in the spec's order (``grid_points()``). The
        engine runs ``min(num_trials, grid_size())`` points of it, in that order, each once:
        ``num_trials`` caps a large grid, and a ``num_trials`` above the grid's size means the
        full grid (see ``planned_trials``).
        """
        out, bad = {}, []
        for key, (_, d) in self.domains.items():
            if not d.searched:
                continue
            if d.kind != "choice":
                bad.append((f"search.space.{key}", f"grid search needs {{choice: [...]}}, got {d.kind}"))
            else:
                out[key] = list(d.values)
        if bad:
            raise SpecError(bad)
        return out

    def grid_points(self) -> list[dict[str, Any]]:
        grid = self.grid_space()
        return [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]

    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid_space().values())

    def num_trials_to_run(self) -> int:
        """Same as ``planned_trials``: num_trials, capped by the grid's size for grid search."""
        return self.planned_trials

    @property
    def planned_trials(self) -> int:
        """Trials the sweep will run at most: num_trials, capped by the grid for grid search."""
        if self.search.algorithm == "grid":
            return min(self.search.num_trials, self.grid_size())
        return self.search.num_trials

    def candidates(self, path: str) -> list:
        """Every value a trial-config leaf can take in this sweep (range domains: both ends)."""
        for _, (p, d) in self.domains.items():
            if p == path:
                return d.candidates()
        fixed = _flatten_fixed(self.fixed, [])
        if path in fixed:
            return [fixed[path]]
        base = _base_trial_dict(self)
        node: Any = base
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            return [node]
        return [_adapter(path).validate_python(_leaf(path)[0].get_default(call_default_factory=True))]

    def batch_sizes(self) -> list[int]:
        return sorted(set(self.candidates("hparams.effective_batch_size")))

    # ---- trials -----------------------------------------------------------------------------

    def trial_config(self, params: dict[str, Any] | None = None, *, output_dir: str | None = None) -> TrialConfig:
        """A validated ``TrialConfig``: model, data (absolute paths), budget, resources
        (num_workers = workers_per_trial, zero_stage, device from gpus_per_worker), then
        ``fixed``, then the space's plain values, then ``params`` (space keys, short or dotted,
        as ``to_tune_space`` names them). A ``budget.*`` value replaces the whole budget.
        The trial seed is ``fixed.seed`` if given, else ``search.seed``."""
        params = dict(params or {})
        domains = self.domains
        by_path = {p: k for k, (p, _) in domains.items()}
        values: dict[str, Any] = dict(_flatten_fixed(self.fixed, []))
        values.update({p: d.value for _, (p, d) in domains.items() if not d.searched})
        unknown = []
        for key, value in params.items():
            path = domains[key][0] if key in domains else SPACE_ALIASES.get(key, key)
            if path not in by_path:
                unknown.append((f"params.{key}", f"not a key of this sweep's space ({', '.join(domains) or 'empty'})"))
                continue
            values[path] = _plain(value)
        if unknown:
            raise SpecError(unknown, source="trial params")
        raw = _base_trial_dict(self)
        budget_keys = {p.split(".", 1)[1]: v for p, v in values.items() if p.startswith("budget.")}
        if budget_keys:
            raw["budget"] = {}
        for path, value in values.items():
            node = raw
            *parents, leaf = path.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        if output_dir is not None:
            raw["output_dir"] = str(output_dir)
        return parse_trial_config(raw, source=f"trial of sweep {self.name!r}")

    def pruner_config(self) -> dict[str, Any]:
        """Keyword arguments for ``sweepd.pruners.make_pruner`` (max_t from the budget)."""
        p = self.pruner
        if p.type == "none":
            return {"type": "none"}
        cfg: dict[str, Any] = {
            "type": p.type, "signal": p.signal, "grace": _tidy(p.grace), "time_attr": p.time_attr,
            "max_t": self.max_time(), "window": p.window, "smooth": p.smooth,
            "metric": self.objective.metric, "mode": self.objective.mode, "min_completed": p.min_completed,
        }  # fmt: skip
        if p.type == "asha":
            cfg["reduction_factor"] = _tidy(p.reduction_factor if p.reduction_factor is not None else 3)
        else:
            cfg["interval"] = _tidy(p.interval if p.interval is not None else p.grace)
            cfg["min_samples"] = p.min_samples if p.min_samples is not None else 3
        return cfg

    def train_samples(self) -> int | None:
        """Lines in the train files (None when one cannot be read)."""
        return _count_lines([f.path for f in self.data.train])

    def budgets(self) -> list[Budget]:
        """Every full budget a trial can have (a searched budget key: each candidate)."""
        return _budgets(self.__dict__)

    def full_budget(self, batch_size: int, unit: str = "samples") -> float | None:
        """The largest full budget of a trial at this batch size, in samples or steps."""
        return _full_budget(self.budgets(), batch_size, unit, self.train_samples())

    def max_time(self) -> float | None:
        """The furthest any trial gets on the pruner's time axis (None: unknown)."""
        times = [self.full_budget(b, self.pruner.time_attr) for b in self.batch_sizes()]
        if any(t is None for t in times) or not times:
            return None
        return _tidy(max(times))


def _tidy(value: float) -> float:
    return int(value) if float(value).is_integer() else value


def _plain(value: Any) -> Any:
    """numpy scalars (Ray Tune samples) -> Python numbers."""
    if hasattr(value, "item") and not isinstance(value, (list, tuple, dict, str)):
        try:
            return value.item()
        except (TypeError, ValueError):
            return value
    return value


def _base_trial_dict(spec: SweepSpec) -> dict[str, Any]:
    r = spec.resources
    resources: dict[str, Any] = {
        "num_workers": r.workers_per_trial,
        "zero_stage": r.zero_stage,
        "micro_batch_tokens": r.micro_batch_tokens,
        "device": "cuda" if r.gpus_per_worker > 0 else "cpu",
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


def _count_lines(paths: list[str]) -> int | None:
    total = 0
    for p in paths:
        try:
            with open(p, "rb") as fh:
                total += sum(1 for line in fh if line.strip())
        except OSError:
            return None
    return total


def _budgets(sections: dict[str, Any]) -> list[Budget]:
    budget = sections.get("budget")
    search = sections.get("search")
    domains = parse_space(search.space)[0] if search is not None else {}
    searched = [(p.split(".", 1)[1], d.candidates()) for _, (p, d) in domains.items() if p.startswith("budget.")]
    if not searched:
        return [budget] if budget is not None else []
    out = []
    for combo in itertools.product(*[vals for _, vals in searched]):
        try:
            out.append(Budget(**dict(zip([k for k, _ in searched], combo))))
        except ValidationError:
            pass
    return out


def _full_budget(budgets: list[Budget], batch: int, unit: str, n_train: int | None) -> float | None:
    best = None
    for b in budgets:
        if b.max_steps is not None:
            steps = b.max_steps
        else:
            total = b.max_samples if b.max_samples is not None else (b.epochs * n_train if n_train is not None else None)
            if total is None:
                return None
            steps = max(1, int(total // batch))
        value = steps if unit == "steps" else steps * batch
        best = value if best is None else max(best, value)
    return best


# ---- checks that need more than one field ----------------------------------------------------


def _semantic_errors(s: dict[str, Any], ctx: _Context, *, rewrite_paths: bool = False) -> list[tuple[str, str]]:
    """Problems found across sections; ``s`` holds the sections that validated on their own.

    ``rewrite_paths``: ``s`` is a whole validated spec (the model validator): its data and model
    paths become the resolved ones, and a sample trial config is built as a last check."""
    errors: list[tuple[str, str]] = []
    search: SearchSpec | None = s.get("search")
    data: DataConfig | None = s.get("data")
    model: ModelConfig | None = s.get("model")
    resources: ResourcesSpec | None = s.get("resources")
    pruner: PrunerSpec | None = s.get("pruner")
    objective: ObjectiveSpec | None = s.get("objective")
    budget: Budget | None = s.get("budget")

    # space and fixed
    domains: dict[str, tuple[str, Domain]] = {}
    fixed: dict[str, Any] = {}
    if search is not None:
        domains, space_errors = parse_space(search.space)
        errors += space_errors
        if not search.space:
            errors.append(("search.space", "empty: give at least one key to search"))
        elif not space_errors and not any(d.searched for _, d in domains.values()):
            errors.append(("search.space", "nothing is searched (every entry is a plain value); "
                                           "give at least one choice/uniform/loguniform/int domain"))
        if search.algorithm == "grid":
            for key, (_, d) in domains.items():
                if d.searched and d.kind != "choice":
                    errors.append((f"search.space.{key}", f"grid search needs {{choice: [...]}}, got {d.kind}"))
    if "fixed" in s:
        fixed = _flatten_fixed(s["fixed"], errors)
        space_paths = {p: k for k, (p, _) in domains.items()}
        for path in fixed:
            if path in space_paths:
                errors.append((f"fixed.{path}", f"also in search.space.{space_paths[path]}: fix it or search it, not both"))

    def values_of(path: str, default: Any) -> list:
        for _, (p, d) in domains.items():
            if p == path:
                return d.candidates()
        return [fixed[path]] if path in fixed else [default]

    # batch sizes against workers
    batches = values_of("hparams.effective_batch_size", 32)
    if resources is not None:
        for key, (p, d) in domains.items():
            if p != "hparams.effective_batch_size":
                continue
            kind = d.kind if d.kind != "fixed" else None
            for i, b in enumerate(d.candidates()):
                if b < resources.workers_per_trial:
                    where = f"search.space.{key}" + (f".{kind}[{i}]" if kind else "")
                    errors.append((where, f"batch size {b} is smaller than resources.workers_per_trial "
                                          f"({resources.workers_per_trial}): every worker needs a sample per step"))
        if "hparams.effective_batch_size" in fixed and fixed["hparams.effective_batch_size"] < resources.workers_per_trial:
            errors.append(("fixed.hparams.effective_batch_size",
                           f"batch size {fixed['hparams.effective_batch_size']} is smaller than "
                           f"resources.workers_per_trial ({resources.workers_per_trial})"))

    # objective and eval data
    if objective is not None and data is not None and objective.metric in EVAL_METRICS and not data.eval:
        errors.append(("objective.metric", f"{objective.metric!r} is measured on eval data, but data.eval is empty"))
    if pruner is not None and pruner.type != "none" and pruner.signal == "objective":
        if objective is not None and objective.metric not in EVAL_METRICS:
            errors.append(("pruner.signal", f"'objective' scores the objective at each rung, but "
                                            f"{objective.metric!r} is only known at the end; use an eval metric"))
        elif not values_of("eval.every_steps", None)[0]:
            errors.append(("pruner.signal", "'objective' needs the eval metric during training: "
                                            "set fixed.eval.every_steps"))

    # grace against the budget
    if pruner is not None and pruner.type != "none" and budget is not None and search is not None:
        n_train = _count_lines([f.path for f in data.train]) if data is not None and ctx.check_paths else None
        budgets = _budgets(s)
        ints = [b for b in batches if isinstance(b, int) and b >= 1]
        times = [_full_budget(budgets, b, pruner.time_attr, n_train) for b in ints]
        if ints and budgets and all(t is not None for t in times):
            longest = max(times)
            if pruner.grace >= longest:
                errors.append(("pruner.grace", f"{_tidy(pruner.grace):,} {pruner.time_attr} is not below the trial "
                                               f"budget ({_tidy(longest):,} {pruner.time_attr} at most): "
                                               f"no trial could ever be stopped"))

    # paths
    if data is not None:
        for section in ("train", "eval"):
            for i, f in enumerate(getattr(data, section)):
                resolved = _check_path(f"data.{section}[{i}].path", f.path, "file", ctx, errors)
                if rewrite_paths and resolved is not None:
                    f.path = resolved
    if model is not None and not model.path.startswith("builtin:"):
        resolved = _check_path("model.path", model.path, "dir", ctx, errors)
        if rewrite_paths and resolved is not None:
            model.path = resolved

    # resources the cluster can never satisfy
    if resources is not None:
        cap = ctx.cap()
        w = resources.workers_per_trial
        cpus, gpus = w * resources.cpus_per_worker, w * resources.gpus_per_worker
        if cpus > cap.cpus:
            errors.append(("resources.cpus_per_worker",
                           f"a trial needs {_tidy(cpus)} CPU(s) (workers_per_trial {w} x cpus_per_worker "
                           f"{_tidy(resources.cpus_per_worker)}), the cluster has {_tidy(cap.cpus)}: it could never start"))
        if gpus > cap.gpus:
            errors.append(("resources.gpus_per_worker",
                           f"a trial needs {_tidy(gpus)} GPU(s) (workers_per_trial {w} x gpus_per_worker "
                           f"{_tidy(resources.gpus_per_worker)}), the cluster has {_tidy(cap.gpus)}: it could never start"))

    # last: one whole trial config, when nothing above already explains a failure
    if rewrite_paths and not errors:  # only on fully validated sections (not salvaged ones)
        probe = SweepSpec.model_construct(**{k: v for k, v in s.items()})
        params = {k: d.candidates()[0] for k, (_, d) in domains.items() if d.searched}
        try:
            probe.trial_config(params)
        except (ConfigError, SpecError) as err:
            errors += [("trial config", line.strip()) for line in str(err).splitlines()[1:] or [str(err)]]
    return errors


def _check_path(label: str, raw: str, want: str, ctx: _Context, errors: list) -> str | None:
    """The absolute path to use, or None after recording why it cannot be used."""
    p = Path(raw).expanduser()
    if not p.is_absolute():
        p = ctx.base() / p
    if not ctx.check_paths:
        return os.path.abspath(p)
    try:
        resolved = p.resolve()  # symlinks followed: the place the trainer would really read
    except (OSError, RuntimeError) as err:
        errors.append((label, f"cannot resolve {raw!r}: {err}"))
        return None
    roots = ctx.roots()
    if not any(resolved == r or resolved.is_relative_to(r) for r in roots):
        errors.append((label, f"{raw!r} resolves to {resolved}, outside the data roots "
                              f"({', '.join(map(str, roots))}); see SWEEPD_DATA_ROOTS"))
        return None
    if not resolved.exists():
        errors.append((label, f"{raw!r} does not exist (resolved: {resolved})"))
        return None
    if want == "file" and not resolved.is_file():
        errors.append((label, f"{raw!r} is not a file (resolved: {resolved})"))
        return None
    if want == "dir":
        if not resolved.is_dir():
            errors.append((label, f"{raw!r} is not a directory: use builtin:tiny or a local Hugging Face model folder"))
            return None
        if not (resolved / "config.json").is_file():
            errors.append((label, f"{raw!r} has no config.json: not a Hugging Face model folder"))
            return None
    return str(resolved)


# ---- loading --------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and reads 1e-5 as a float (YAML 1.2 style)."""


def _no_duplicates(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*)?(?:\.\d*)?[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def _parse_text(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or str(err)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise SpecError([("yaml", f"{where}{problem}")], source=source) from None


def _looks_like_path(value: str) -> bool:
    if "\n" in value or value.lstrip().startswith("{"):
        return False
    return value.endswith((".yaml", ".yml", ".json")) or os.path.isfile(value)


def load_spec(
    path_or_text: str | os.PathLike,
    *,
    check_paths: bool = True,
    capacity: Capacity | None = None,
    base_dir: str | os.PathLike | None = None,
    data_roots: list[str | os.PathLike] | None = None,
) -> SweepSpec:
    """A spec from a file (a ``Path``, or a one-line string ending in .yaml/.yml/.json or naming
    a file) or from YAML/JSON text. Raises ``SpecError`` listing every problem, YAML syntax
    errors with their line number included."""
    if isinstance(path_or_text, os.PathLike) or (isinstance(path_or_text, str) and _looks_like_path(path_or_text)):
        path = Path(path_or_text)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise SpecError([("file", f"cannot read {str(path)!r} ({err.strerror})")], source=str(path)) from None
        source = str(path)
    else:
        text, source = str(path_or_text), "spec"
    raw = _parse_text(text, source)
    if isinstance(raw, str) and source == "spec" and "\n" not in text.strip():
        raise SpecError([("file", f"{text.strip()!r} is not a file here, nor a YAML/JSON mapping")], source=source)
    return parse_spec(raw, check_paths=check_paths, capacity=capacity, base_dir=base_dir,
                      data_roots=data_roots, source=source)


def parse_spec(
    raw: Any,
    *,
    check_paths: bool = True,
    capacity: Capacity | None = None,
    base_dir: str | os.PathLike | None = None,
    data_roots: list[str | os.PathLike] | None = None,
    source: str = "spec",
) -> SweepSpec:
    """A validated ``SweepSpec`` from a mapping (a parsed YAML/JSON body), or ``SpecError``
    with every problem: the structural ones and those across sections, all in one go."""
    if isinstance(raw, (str, bytes)):
        raw = _parse_text(raw.decode() if isinstance(raw, bytes) else raw, source)
    if not isinstance(raw, dict):
        raise SpecError([("(top level)", f"expected a mapping, got {type(raw).__name__}")], source=source)
    ctx = _Context(
        check_paths=check_paths,
        capacity=capacity,
        base_dir=Path(base_dir) if base_dir is not None else Path.cwd(),
        data_roots=[Path(r) for r in data_roots] if data_roots is not None else None,
    )
    try:
        return SweepSpec.model_validate(raw, context={"sweepd": ctx})
    except ValidationError as err:
        errors = _validation_errors(err, SweepSpec)
        semantic_ran = any(isinstance((e.get("ctx") or {}).get("error"), SpecError) for e in err.errors())
    if not semantic_ran:
        # Some section failed, so the cross-section checks did not run: run them on the
        # sections that are fine on their own, so the user sees everything at once.
        sections: dict[str, Any] = {}
        for name, field in SweepSpec.model_fields.items():
            if name not in raw:
                if not field.is_required():
                    sections[name] = field.get_default(call_default_factory=True)
                continue
            try:
                sections[name] = TypeAdapter(field.annotation).validate_python(raw[name])
            except ValidationError:
                salvaged = _salvage(name, raw[name])
                if salvaged is not None:
                    sections[name] = salvaged
        errors += _semantic_errors(sections, ctx)
    raise SpecError(errors, source=source)


# Sections whose good fields are still worth checking when one of their fields is bad: a bad
# field takes its default, which for these never causes a false error elsewhere (an unknown
# algorithm skips the grid check; a default worker count of 1 fits any cluster).
_SALVAGEABLE: dict[str, type[BaseModel]] = {"search": SearchSpec, "resources": ResourcesSpec}


def _salvage(name: str, raw: Any) -> BaseModel | None:
    model = _SALVAGEABLE.get(name)
    if model is None or not isinstance(raw, dict):
        return None
    values: dict[str, Any] = {}
    for fname, field in model.model_fields.items():
        if fname not in raw:
            if field.is_required():
                return None
            continue
        ann = Annotated[tuple([field.annotation, *field.metadata])] if field.metadata else field.annotation
        try:
            values[fname] = TypeAdapter(ann).validate_python(raw[fname])
        except ValidationError:
            if field.is_required():
                return None
    return model.model_construct(**values)


def spec_json_schema() -> dict:
    return SweepSpec.model_json_schema()


def dumps_spec(spec: SweepSpec) -> str:
    return json.dumps(spec.model_dump(mode="json"), indent=2)
