"""``SweepSpec``: a validated sweep, frozen. Build one with ``load_spec``/``parse_spec`` (every
problem at once); store it with ``to_stored()`` and rebuild it anywhere with ``from_stored()``,
which runs no check again."""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Mapping
from functools import cached_property
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from sweepd.spec.budget import budgets_of, count_lines, full_budget, tidy
from sweepd.spec.capacity import Context, context_of
from sweepd.spec.checks import Sections, check_trial_config, run_checks
from sweepd.spec.errors import SpecError
from sweepd.spec.fixed import flatten_fixed
from sweepd.spec.paths import resolve_path
from sweepd.spec.sections import ObjectiveSpec, PrunerSpec, ResourcesSpec, SearchSpec, Strict
from sweepd.spec.space import Domains, grid_problems, parse_space
from sweepd.spec.trials import base_trial_dict, build_trial_config, candidates
from trainer.config import Budget, DataConfig, ModelConfig, TrialConfig
from trainer.replay_config import REPLAY_MODEL

# The stored document's format: ``to_stored()`` writes it as "schema_version", ``from_stored``
# reads every version listed here (a document without the key is version 1).
SCHEMA_VERSION = 2
STORED_VERSIONS = {
    1: "before the key was stored: every pruner option filled in, whatever the type",
    2: "a pruner option may be null: the pruner class's default (type none keeps its nulls)",
}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class SweepSpec(Strict):
    """A validated sweep. Build it with ``load_spec``/``parse_spec`` to get every problem at once;
    ``SweepSpec.model_validate(raw, context={"sweepd": Context(...)})`` works too (an API body)."""

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
    # the sweep's weight when sweeps share the cluster (sweepd/service/shares.py); changeable later
    priority: Literal["low", "normal", "high"] = "normal"

    @model_validator(mode="before")
    @classmethod
    def _replay_reads_no_data(cls, raw: Any) -> Any:
        """A builtin:replay sweep may leave ``data`` out: its trials read none (trainer/replay.py)."""
        model = raw.get("model") if isinstance(raw, dict) else None
        if isinstance(model, dict) and model.get("path") == REPLAY_MODEL and "data" not in raw:
            return {**raw, "data": {"train": []}}
        return raw

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("must be 1-100 characters of letters, digits, '.', '_' or '-', starting with a letter or digit")
        return v

    # Paths become the ones the trainer will read (absolute; with check_paths, symlinks followed).
    # One that cannot be used stays as written: check_data_paths / check_model_path say why.
    @field_validator("data")
    @classmethod
    def _resolve_data_paths(cls, data: DataConfig, info: ValidationInfo) -> DataConfig:
        ctx = context_of(info)
        if ctx.stored:
            return data

        def resolved(section: str) -> list:
            out = []
            for i, f in enumerate(getattr(data, section)):
                path, _ = resolve_path(f"data.{section}[{i}].path", f.path, "file", ctx)
                out.append(f if path is None else f.model_copy(update={"path": path}))
            return out

        return data.model_copy(update={"train": resolved("train"), "eval": resolved("eval")})

    @field_validator("model")
    @classmethod
    def _resolve_model_path(cls, model: ModelConfig, info: ValidationInfo) -> ModelConfig:
        ctx = context_of(info)
        if ctx.stored:
            return model
        if model.path == REPLAY_MODEL:  # a curves file (not a builtin bank): resolved like a data file
            replay = model.replay
            if replay is None or replay.curves.startswith("builtin:"):
                return model
            path, _ = resolve_path("model.replay.curves", replay.curves, "file", ctx)
            return model if path is None else model.model_copy(
                update={"replay": replay.model_copy(update={"curves": path})})
        if model.path.startswith("builtin:"):
            return model
        path, _ = resolve_path("model.path", model.path, "dir", ctx)
        return model if path is None else model.model_copy(update={"path": path})

    @model_validator(mode="after")
    def _checks(self, info: ValidationInfo) -> "SweepSpec":
        ctx = context_of(info)
        if ctx.stored:  # validated before it was stored: judged on the machine that stored it
            return self
        sections = Sections.of(self.__dict__)
        problems = run_checks(sections, ctx) or list(check_trial_config(sections, ctx))
        if problems:
            raise SpecError(problems)
        return self

    # ---- stored form ------------------------------------------------------------------------

    def to_stored(self) -> dict[str, Any]:
        """The document to store or send: JSON-ready, with its ``schema_version``, and with the
        options of a rung pruner as its class resolved them, so that the stored sweep records
        (and a resumed one keeps) the rungs it ran with."""
        doc = json.loads(self.model_dump_json())
        if self.pruner.type != "none":
            resolved = self.pruner.build().config()
            doc["pruner"] = {k: resolved.get(k, v) for k, v in doc["pruner"].items()}
        return {"schema_version": SCHEMA_VERSION, **doc}

    @classmethod
    def from_stored(cls, doc: str | bytes | Mapping[str, Any]) -> "SweepSpec":
        """The spec again from ``to_stored()`` (or JSON of it; a document without
        ``schema_version``, as stored before it existed, is version 1). The structure is rebuilt;
        no check across sections runs and no path is resolved: those judged the spec where it
        was validated, and a Ray worker (another machine, its trial folder) would judge it
        wrongly. Never use it on user input."""
        if isinstance(doc, (str, bytes)):
            doc = json.loads(doc)
        if not isinstance(doc, Mapping):
            raise SpecError([("(top level)", f"expected a stored spec, got {type(doc).__name__}")], source="stored spec")
        doc = dict(doc)
        version = doc.pop("schema_version", 1)
        if version not in STORED_VERSIONS:
            known = ", ".join(map(str, STORED_VERSIONS))
            raise SpecError([("schema_version", f"unknown stored spec version {version!r}; this sweepd reads "
                                                f"{known}: a newer sweepd stored it")], source="stored spec")
        return cls.model_validate(doc, context={"sweepd": Context(stored=True)})

    # ---- the search space -------------------------------------------------------------------

    @cached_property
    def domains(self) -> Domains:
        """``{space key: (trial-config path, Domain)}``, in the spec's order."""
        return parse_space(self.search.space)[0]

    @cached_property
    def fixed_values(self) -> dict[str, Any]:
        """``fixed:`` as ``{dotted trial-config path: value}``."""
        return flatten_fixed(self.fixed, [])

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
        bad = grid_problems(self.domains)
        if bad:
            raise SpecError(bad)
        return {key: list(d.values) for key, (_, d) in self.domains.items() if d.searched}

    def grid_points(self) -> list[dict[str, Any]]:
        grid = self.grid_space()
        return [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]

    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid_space().values())

    @property
    def planned_trials(self) -> int:
        """Trials the sweep will run at most: num_trials, capped by the grid for grid search."""
        if self.search.algorithm == "grid":
            return min(self.search.num_trials, self.grid_size())
        return self.search.num_trials

    def candidates(self, path: str) -> list:
        """Every value a trial-config leaf can take in this sweep (range domains: both ends)."""
        return candidates(path, self.domains, self.fixed_values, base_trial_dict(self))

    def batch_sizes(self) -> list[int]:
        return sorted(set(self.candidates("hparams.effective_batch_size")))

    # ---- trials -----------------------------------------------------------------------------

    def trial_config(self, params: dict[str, Any] | None = None, *, output_dir: str | None = None) -> TrialConfig:
        """A validated ``TrialConfig``: model, data (absolute paths), budget, resources
        (num_workers = workers_per_trial, zero_stage, device from gpus_per_worker), then
        ``fixed``, then the space's plain values, then ``params`` (space keys, short or dotted,
        as ``to_tune_space`` names them). A ``budget.*`` value replaces the whole budget.
        The trial seed is ``fixed.seed`` if given, else ``search.seed``."""
        return build_trial_config(self, self.domains, self.fixed_values, params, output_dir=output_dir)

    # ---- the pruner -------------------------------------------------------------------------

    def pruner_config(self) -> dict[str, Any]:
        """The mapping for ``sweepd.pruners.make_pruner``: the type, the options the spec sets
        (the class fills in the rest) and the sweep's max_t (from the budget), metric and mode.
        A sweep without a pruner: ``{"type": "none"}``."""
        if self.pruner.type == "none":
            return {"type": "none"}
        return {"type": self.pruner.type, **self.pruner.options(), "max_t": self.max_time(),
                "metric": self.objective.metric, "mode": self.objective.mode}

    @property
    def pruner_time_attr(self) -> str:
        """The time axis trials are measured on (samples or steps), as the pruner class resolves
        it; a sweep without a pruner: ASHA's with the spec's options (see ``PrunerSpec.on_axis``)."""
        return self.pruner.on_axis().time_attr

    # ---- budgets ----------------------------------------------------------------------------

    def train_samples(self) -> int | None:
        """Lines in the train files (None when one cannot be read)."""
        return count_lines([f.path for f in self.data.train])

    def budgets(self) -> list[Budget]:
        """Every full budget a trial can have (a searched budget key: each candidate)."""
        return budgets_of(self.budget, self.domains)

    def full_budget(self, batch_size: int, unit: str = "samples") -> float | None:
        """The largest full budget of a trial at this batch size, in samples or steps."""
        return full_budget(self.budgets(), batch_size, unit, self.train_samples())

    def max_time(self) -> float | None:
        """The furthest any trial gets on the pruner's time axis (None: unknown)."""
        unit = self.pruner_time_attr
        times = [self.full_budget(b, unit) for b in self.batch_sizes()]
        if any(t is None for t in times) or not times:
            return None
        return tidy(max(times))
