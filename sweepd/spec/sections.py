"""The spec's own sections: ``search``, ``pruner``, ``objective`` and ``resources`` (``model``,
``data`` and ``budget`` are the trial config's own models, from ``trainer.config``).

Each section checks itself; checks that need more than one section are in ``checks.py``. The
pruner section holds only what the user set: an option left out is None, which means the
pruner class's own default (``sweepd.pruners``), so no default is written here.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sweepd.pruners import DEFAULT_PRUNER_TYPE, PRUNERS, Pruner, make_pruner, option_defaults
from sweepd.pruners.rungs import TIME_KEYS
from sweepd.pruners.signals import SIGNALS, SMOOTHERS
from sweepd.spec.budget import BUDGET_TRIAL_CAP, ComputeBudget, tidy
from trainer.config import MAX_MICRO_BATCH_TOKENS, CheckpointEvery, offload_problem

WARM_START_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")  # search.warm_start: a sweep id

# metric -> its natural mode (the default when `objective.mode` is left out)
METRICS: dict[str, str] = {"eval_loss": "min", "mc_accuracy": "max", "exact_match": "max", "train_loss": "min"}
EVAL_METRICS = ("eval_loss", "mc_accuracy", "exact_match")


class Strict(BaseModel):
    """A spec section: unknown fields are errors, and a validated section never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def one_of(value: str, known, what: str) -> str:
    """``value`` if it is one of ``known``, else the error naming them all."""
    if value not in known:
        raise ValueError(f"unknown {what} {value!r}; known: {', '.join(known)}")
    return value


class SearchSpec(Strict):
    algorithm: Literal["tpe", "random", "grid"] = "tpe"
    num_trials: Annotated[int, Field(ge=1, le=5_000)] = Field(10, description=(
        f"trials to run; with compute_budget, the most trials it may buy (default then {BUDGET_TRIAL_CAP})"))
    compute_budget: ComputeBudget | None = Field(None, description=(
        "run trials until this much compute is spent: {samples: N} (or a plain N), or {gpu_hours: H}"))
    max_concurrent: Annotated[int, Field(ge=1, le=256)] = Field(
        1, description="trials at once; at run time also capped by what the Ray cluster holds at once")
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    space: dict[str, Any] = Field(description="key -> {choice|uniform|loguniform|int: ...} or a plain value")
    warm_start: str = Field("previous", description=(
        "previous: seed the study and the pruner from the newest succeeded sweep with the same name and "
        "fingerprint (model, data content, objective); a sweep id: from that sweep; none: a cold start"))

    @field_validator("warm_start")
    @classmethod
    def _warm_start(cls, v: str) -> str:
        if v in ("previous", "none") or WARM_START_ID.match(v):
            return v
        raise ValueError(f"expected previous, none or a sweep id (letters, digits, '-', '_'), got {v!r}")

    @model_validator(mode="before")
    @classmethod
    def _budget_caps_trials(cls, data: Any) -> Any:
        """A compute budget without num_trials: num_trials is only the cap BUDGET_TRIAL_CAP."""
        if isinstance(data, dict) and data.get("compute_budget") is not None and "num_trials" not in data:
            return {**data, "num_trials": BUDGET_TRIAL_CAP}
        return data


_CLASS_DEFAULT = "default: the pruner class's own (sweepd.pruners)"


class PrunerSpec(Strict):
    """``type`` and the options the user set; every option left out (None) takes the pruner
    class's default when ``make_pruner`` builds it. ``type: none`` ignores the options."""

    type: Literal[tuple(PRUNERS)] = DEFAULT_PRUNER_TYPE  # type: ignore[valid-type]
    signal: str | None = Field(None, description=_CLASS_DEFAULT)
    grace: Annotated[float, Field(gt=0, le=1e15)] | None = Field(None, description=_CLASS_DEFAULT)
    reduction_factor: Annotated[float, Field(gt=1, le=100)] | None = Field(None, description="asha only; " + _CLASS_DEFAULT)
    interval: Annotated[float, Field(gt=0, le=1e15)] | None = Field(None, description="median only; " + _CLASS_DEFAULT)
    min_samples: Annotated[int, Field(ge=1, le=10_000)] | None = Field(None, description="median only; " + _CLASS_DEFAULT)
    time_attr: Literal[tuple(TIME_KEYS)] | None = Field(None, description=_CLASS_DEFAULT)  # type: ignore[valid-type]
    window: Annotated[int, Field(ge=1, le=10_000)] | None = Field(None, description=_CLASS_DEFAULT)
    smooth: Literal[SMOOTHERS] | None = Field(None, description=_CLASS_DEFAULT)  # type: ignore[valid-type]
    min_completed: Annotated[int, Field(ge=3, le=10_000)] | None = Field(None, description=_CLASS_DEFAULT)

    @field_validator("signal")
    @classmethod
    def _known_signal(cls, v: str | None) -> str | None:
        return v if v is None else one_of(v, SIGNALS, "signal")

    @model_validator(mode="after")
    def _options_for_type(self) -> "PrunerSpec":
        if self.type == "none":
            return self
        accepted = option_defaults(self.type)
        wrong = [f"{k} ({'/'.join(t for t in PRUNERS if k in option_defaults(t))} only)"
                 for k in self.options() if k not in accepted]
        if wrong:
            raise ValueError(f"option(s) not used by pruner type {self.type!r}: {', '.join(wrong)}")
        return self

    def options(self) -> dict[str, Any]:
        """The options the user set (whole floats as ints: 1024, not 1024.0)."""
        out = {k: getattr(self, k) for k in type(self).model_fields if k != "type"}
        return {k: tidy(v) if isinstance(v, float) else v for k, v in out.items() if v is not None}

    def build(self, **context: Any) -> Pruner:
        """``make_pruner`` of this section and ``context`` (max_t, metric, mode)."""
        return make_pruner({"type": self.type, **self.options(), **context})

    def on_axis(self) -> Pruner:
        """The pruner with every option resolved by its class, for the time axis, grace and rungs.

        A sweep without a pruner (type none) is still measured on a time axis: it gets the ASHA
        its options would make (it stops nothing; this is what the plan, the searcher's time axis
        and the calibration view use). No max_t: a grace past the budget is a check's business."""
        if self.type != "none":
            return self.build()
        asha = option_defaults("asha")
        return make_pruner({"type": "asha", **{k: v for k, v in self.options().items() if k in asha}})


class ObjectiveSpec(Strict):
    metric: str = "eval_loss"
    mode: Literal["min", "max"] | None = Field(None, description="default: the metric's natural mode")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, v: str) -> str:
        return one_of(v, METRICS, "metric")

    @model_validator(mode="before")
    @classmethod
    def _default_mode(cls, data: Any) -> Any:
        metric = data.get("metric", "eval_loss") if isinstance(data, dict) else None
        if isinstance(metric, str) and metric in METRICS and data.get("mode") is None:
            return {**data, "mode": METRICS[metric]}
        return data


class ResourcesSpec(Strict):
    workers_per_trial: Annotated[int, Field(ge=1, le=512)] = 1
    cpus_per_worker: Annotated[float, Field(ge=0.1, le=1024)] = 1
    gpus_per_worker: Annotated[float, Field(ge=0, le=16)] = 0
    zero_stage: Literal[0, 1, 2, 3] = 2
    max_failures: Annotated[int, Field(ge=0, le=100)] = 1
    micro_batch_tokens: int | str = Field("auto", description="'auto' or a token budget per micro-batch (>= 8)")
    micro_batch_size: Annotated[int, Field(ge=1)] | None = Field(None, description="fixed samples per micro-batch")
    activation_checkpointing: Literal["auto"] | bool = Field(
        "auto", description="auto: on when the fit check says a trial would not fit without it")
    offload: Literal["none", "optimizer", "optimizer+params"] = "none"
    checkpoint_every: CheckpointEvery | None = Field(
        None, description="{minutes: M} or {samples: N}: resumable trial checkpoints; null: none")
    gpu_memory_gb: Annotated[float, Field(gt=0, le=100_000)] | None = Field(
        None, description="memory per GPU for the fit check; default: the server's GPU, if any")

    @model_validator(mode="after")
    def _offload_needs_zero(self) -> "ResourcesSpec":
        if problem := offload_problem(self.offload, self.zero_stage):
            raise ValueError(problem)
        return self

    @field_validator("micro_batch_tokens", mode="before")
    @classmethod
    def _tokens(cls, v: Any) -> Any:
        if v == "auto":
            return v
        if isinstance(v, bool) or not isinstance(v, int) or not 8 <= v <= MAX_MICRO_BATCH_TOKENS:
            raise ValueError(f"must be 'auto' or an integer from 8 to {MAX_MICRO_BATCH_TOKENS:,}")
        return v
