"""/api/v1/trials: one trial, and its per-step metrics downsampled in the database."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from api import views
from api.routes import API_PREFIX, READ_ERRORS, ReadSessionDep
from api.schemas import MetricPointOut, TrialMetrics, TrialPublic
from sweepd.store import repo

router = APIRouter(prefix=f"{API_PREFIX}/trials", tags=["trials"])

TrialId = Annotated[str, Path(description="the trial's id (`<sweep id>-<number>`)", max_length=200)]
MaxPoints = Annotated[int, Query(ge=2, le=10_000, description="points at most")]


@router.get("/{trial_id}", responses=READ_ERRORS, summary="A trial")
def get_trial(trial_id: TrialId, session: ReadSessionDep) -> TrialPublic:
    return TrialPublic.model_validate(views.trial_or_404(session, trial_id))


@router.get("/{trial_id}/metrics", responses=READ_ERRORS, summary="A trial's per-step metrics, downsampled")
def get_metrics(trial_id: TrialId, session: ReadSessionDep, max_points: MaxPoints = 1000) -> TrialMetrics:
    """In step order; above `max_points`, the first and last step and evenly spaced steps
    between them (exactly `max_points` points)."""
    trial = views.trial_or_404(session, trial_id)
    points = repo.read_metrics(session, trial.id, max_points=max_points)
    return TrialMetrics(trial_id=trial.id, points=[MetricPointOut.model_validate(p) for p in points])
