"""What the REST API takes and returns (the OpenAPI schema is generated from these).

Create and Update schemas describe request bodies, Public schemas the responses. The sweep spec
itself (``SweepCreate``) is ``sweepd.spec.SweepSpec``: one model for the CLI, the engine and the API.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sweepd.spec import SweepSpec
from sweepd.store.tokens import DURATION_PATTERN, NAME_PATTERN
from sweepd.store.models import SweepState, TrialState

# A sweep's priority (sweepd.protocol.PRIORITIES, lowest first).
SweepPriority = Literal["low", "normal", "high"]

# The body of POST /sweeps: a sweep spec, as JSON or YAML (validated with sweepd.spec.parse_spec).
SweepCreate = SweepSpec


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# ---- errors -----------------------------------------------------------------------------------


class ErrorItem(BaseModel):
    """One problem, in FastAPI's validation-error shape: ``loc`` is the field path."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorOut(BaseModel):
    """Every 4xx/5xx body: ``detail`` is a sentence, or (422) a list of ``ErrorItem``."""

    detail: str | list[ErrorItem]


class ValidationErrorOut(BaseModel):
    detail: list[ErrorItem]


# ---- sweeps -----------------------------------------------------------------------------------


class ObjectiveOut(BaseModel):
    metric: str
    mode: Literal["min", "max"]


class ProgressOut(BaseModel):
    """Trial counts by state. ``planned``: the trials the spec asks for (grid: capped by the
    grid's size; a compute-budget sweep: the trials launched so far plus ``budget.projected_trials``);
    ``finished`` = completed + stopped + failed + diverged + oom (out of memory)."""

    planned: int
    pending: int = 0
    running: int = 0
    completed: int = 0
    stopped: int = 0
    failed: int = 0
    diverged: int = 0
    oom: int = 0
    finished: int = 0


class BudgetOut(BaseModel):
    """A compute-budget sweep's account (``search.compute_budget``), from the trials in the store.
    ``unit``: samples or gpu_hours; ``spent``: the sum over every trial; ``committed``: what the
    running trials will spend on top at full length; ``remaining`` = total - spent."""

    unit: Literal["samples", "gpu_hours"]
    total: float
    spent: float
    committed: float
    remaining: float
    fraction_spent: float
    trials_launched: int
    trials_cap: int = Field(description="num_trials: the most trials the budget may buy")
    cost_per_trial: float | None = Field(description="the finished trials' mean cost (none finished: a full trial's)")
    projected_trials: int = Field(description="more trials the budget buys at cost_per_trial, after the running ones")
    eta_seconds: float | None = Field(description="when the budget runs out at the sweep's rate so far (running sweeps)")
    exhausted: bool = Field(description="no further trial fits (or the sweep has ended)")


class BestTrialOut(BaseModel):
    """The sweep's best trial: the one chosen when the sweep finished, or while it runs the
    best completed trial so far."""

    trial_id: str
    number: int
    config: dict[str, Any]
    objective: float | None


class SweepPublic(BaseModel):
    id: str
    name: str
    state: SweepState
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    objective: ObjectiveOut
    progress: ProgressOut
    best: BestTrialOut | None
    ledger: dict[str, Any] = Field(description="compute spent, and saved by stopping trials early")
    budget: BudgetOut | None = Field(None, description="the compute budget's account; null without one")
    fingerprint: str | None = Field(None, description=(
        "sha256 of the model, the data files' contents and the objective: sweeps with the same name and "
        "fingerprint warm-start from each other (search.warm_start: previous)"))
    # sharing one cluster (issue 16): what the supervisor decided for this sweep, and why
    priority: SweepPriority = Field("normal", description=(
        "its weight when sweeps share the cluster (low 1, normal 2, high 4) and its place in the queue; "
        "PATCH /sweeps/{id} changes it"))
    max_concurrent: int = Field(1, description="search.max_concurrent: the most trials it runs at once")
    trial_limit: int | None = Field(None, description=(
        "the running-trial limit the supervisor grants it, its fair share of the cluster; "
        "null: no limit but max_concurrent"))
    running_trials: int = Field(0, description="its trials in state running")
    queue_position: int | None = Field(None, description=(
        "a queued sweep's place in the queue, 1 starts next (highest priority first, then oldest); "
        "null when not queued"))
    waiting_for: str | None = Field(None, description=(
        "why it runs fewer trials than it could, e.g. 'a sweep slot: 4 of 4 running'; null when it does not wait"))


class WarmStartOut(BaseModel):
    """Where the sweep's prior came from (``search.warm_start``), as its driver resolved it on
    its first start. ``source`` null: a cold start (``message`` says why)."""

    model_config = ConfigDict(extra="allow")

    mode: str = Field(description="search.warm_start: previous, none or a sweep id")
    source: str | None = Field(description="the sweep whose finished trials and curves seeded this one")
    trials_added: int = Field(0, description="the source's finished trials added to this sweep's Optuna study")
    curves: int = Field(0, description="the source's curves given to the pruner")
    message: str


class SweepDetail(SweepPublic):
    spec: dict[str, Any] = Field(description="the validated spec, as stored")
    warm_start: WarmStartOut | None = Field(None, description="null until the sweep's first start")
    extensions: int = Field(0, description="how often the sweep was extended (POST .../extend)")
    optuna_study_name: str | None = Field(None, description="the sweep's Optuna study, in sweepd's database")


class SweepExtend(BaseModel):
    """The body of POST /sweeps/{id}/extend: how much more to run, and optionally a narrower
    space. At least one of ``trials`` and ``budget``."""

    model_config = ConfigDict(extra="forbid")

    trials: int | None = Field(None, ge=1, le=10_000, description="this many more trials than the sweep holds now")
    budget: float | None = Field(None, gt=0, allow_inf_nan=False, description=(
        "this much more search.compute_budget, in its unit (samples or GPU hours); a sweep without one gets "
        "one of the samples spent so far plus this; the trial cap is lifted unless trials is given"))
    space: dict[str, Any] | None = Field(None, description=(
        "search-space entries replacing the sweep's own, each inside the old domain; keys left out keep theirs"))

    @model_validator(mode="after")
    def _some_more(self) -> "SweepExtend":
        if self.trials is None and self.budget is None:
            raise ValueError("say how much more to run: trials and/or budget")
        return self


class SweepUpdate(BaseModel):
    """The body of PATCH /sweeps/{id}: what to change on a sweep that has not finished."""

    model_config = ConfigDict(extra="forbid")

    priority: SweepPriority = Field(description=(
        "low, normal or high: a queued sweep moves in the queue at once, a running one's share of the "
        "cluster follows at the supervisor's next round"))


class SweepPage(BaseModel):
    items: list[SweepPublic]
    total: int
    limit: int
    offset: int


# ---- trials and metrics ---------------------------------------------------------------------


class TrialPublic(_Out):
    id: str
    sweep_id: str
    number: int
    state: TrialState
    config: dict[str, Any]
    objective: float | None
    metrics_final: dict[str, Any] | None
    stopped_at: float | None = Field(description="where the pruner stopped it, on the sweep's time axis")
    reason: str | None
    error: str | None = Field(description="why it failed: the trainer's own message, or the exception's "
                                          "type and message")
    error_detail: str | None = Field(None, description="a crash's last traceback lines; none for a trainer error")
    attempts: int
    samples: int
    tokens: int
    seconds: float
    started_at: datetime | None
    finished_at: datetime | None


class TrialList(BaseModel):
    items: list[TrialPublic]


class MetricPointOut(_Out):
    step: int
    attempt: int = Field(1, description="which run of the trial reported this step: 1, then one more per retry "
                                        "(a retry resumed from a checkpoint continues after its step)")
    samples: int | None
    tokens: int | None
    loss: float | None
    grad_norm: float | None
    lr: float | None
    seconds: float | None
    tokens_per_second: float | None = Field(
        None, description="the step's real (non-pad) tokens over all workers per wall-clock second")
    mfu: float | None = Field(
        None, description="model FLOPs utilisation, 6·params·tokens/s over the devices' dense bf16 peak; "
                          "null on CPU and on a GPU of unknown peak")
    peak_memory_gb: float | None = Field(
        None, description="peak memory so far, GiB, largest over workers: PyTorch's GPU allocations, or "
                          "the process's peak RSS on CPU")


class TrialMetrics(BaseModel):
    trial_id: str
    points: list[MetricPointOut]


class TrialCurve(BaseModel):
    """One trial's downsampled curve in columns: index ``i`` of every list is the trial's ``i``-th
    kept point, in step order (all lists have the same length). Only the fields asked for with
    ``fields`` are present; ``step`` always is."""

    id: str
    number: int
    state: TrialState
    stopped_at: float | None
    reason: str | None
    step: list[int]
    samples: list[int | None] | None = Field(None, description="samples seen at each point")
    tokens: list[int | None] | None = None
    loss: list[float | None] | None = None
    grad_norm: list[float | None] | None = None
    lr: list[float | None] | None = None
    seconds: list[float | None] | None = None
    tokens_per_second: list[float | None] | None = None
    mfu: list[float | None] | None = None
    peak_memory_gb: list[float | None] | None = None


class SweepCurves(BaseModel):
    trials: list[TrialCurve]


# ---- events, calibration, report --------------------------------------------------------------


class EventPublic(_Out):
    id: int
    sweep_id: str
    trial_id: str | None
    kind: str
    created_at: datetime
    message: str
    payload: dict[str, Any] | None


class EventList(BaseModel):
    items: list[EventPublic]


class CalibrationRow(BaseModel):
    signal: Literal["loss", "grad_norm"]
    at: int | float = Field(description="the rung, on the pruner's time axis (samples by default)")
    spearman: float | None = Field(description="rank correlation with the final objective; null when n < 3")
    n: int = Field(description="finished trials that reached this rung")


class Calibration(BaseModel):
    objective: ObjectiveOut
    n_trials: int = Field(description="completed trials with an objective")
    rows: list[CalibrationRow]


class ReportJson(BaseModel):
    """``sweepd.engine.finalize.result_document``: what `sweepd run --out` writes."""

    model_config = ConfigDict(extra="allow")

    sweep_id: str
    name: str
    state: str
    error: str | None = None
    best: dict[str, Any] | None
    trials: list[dict[str, Any]]
    ledger: dict[str, Any] | None


# ---- system -----------------------------------------------------------------------------------


class Health(BaseModel):
    status: Literal["ok", "error"]
    database: str


# ---- tokens -----------------------------------------------------------------------------------


class TokenCreate(BaseModel):
    """The body of POST /tokens. ``expires_in``: e.g. ``30d``, ``12h``, ``90m``, ``2w`` (a whole
    number from 1 to 9999 and a unit: s, m, h, d, w); left out, the token never expires."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, max_length=100,
                      description="unique; 1 to 100 letters, digits and . _ @ + - (starting with a letter or digit)")
    scope: Literal["read", "write", "admin"] = Field(
        "write", description="read < write < admin: each implies the ones before it")
    expires_in: str | None = Field(None, pattern=DURATION_PATTERN, description="e.g. 30d, 12h; null: never")


class TokenPublic(_Out):
    """A token as the API shows it: never its secret (only a hash of it is stored)."""

    name: str
    scope: Literal["read", "write", "admin"]
    state: Literal["active", "expired", "revoked"]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None = Field(description="recorded at most once a minute")
    revoked: bool


class TokenCreated(TokenPublic):
    token: str = Field(description="the secret, shown this once: send it as `Authorization: Bearer <token>`")


class TokenList(BaseModel):
    items: list[TokenPublic]
