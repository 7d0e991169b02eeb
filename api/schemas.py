"""What the REST API takes and returns (the OpenAPI schema is generated from these).

Create schemas describe request bodies, Public schemas the responses. The sweep spec itself
(``SweepCreate``) is ``sweepd.spec.SweepSpec``: one model for the CLI, the engine and the API.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sweepd.spec import SweepSpec
from sweepd.store.models import SweepState, TrialState

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
    grid's size); ``finished`` = completed + stopped + failed + diverged."""

    planned: int
    pending: int = 0
    running: int = 0
    completed: int = 0
    stopped: int = 0
    failed: int = 0
    diverged: int = 0
    finished: int = 0


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


class SweepDetail(SweepPublic):
    spec: dict[str, Any] = Field(description="the validated spec, as stored")


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
    error: str | None
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
    samples: int | None
    tokens: int | None
    loss: float | None
    grad_norm: float | None
    lr: float | None
    seconds: float | None


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
    best: dict[str, Any] | None
    trials: list[dict[str, Any]]
    ledger: dict[str, Any] | None


# ---- system -----------------------------------------------------------------------------------


class Health(BaseModel):
    status: Literal["ok", "error"]
    database: str
