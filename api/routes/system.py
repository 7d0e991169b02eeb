"""/healthz and /metrics (Prometheus): public, outside /api/v1."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import text

from api.metrics import CONTENT_TYPE, render
from api.schemas import Health

log = logging.getLogger("sweepd.api")
router = APIRouter(tags=["system"])


@router.get("/healthz", response_model=Health,
            responses={503: {"model": Health, "description": "the database cannot be reached"}},
            summary="Liveness and database reachability")
def healthz(request: Request) -> Health | JSONResponse:
    try:
        with request.app.state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure here means "unreachable"
        log.warning("health check: database unreachable: %s", exc)
        return JSONResponse({"status": "error", "database": f"unreachable: {type(exc).__name__}"}, status_code=503)
    return Health(status="ok", database="ok")


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                     "description": "Prometheus text exposition format 0.0.4"}},
    summary="Prometheus metrics",
)
def metrics(request: Request) -> PlainTextResponse:
    return PlainTextResponse(render(request.app), media_type=CONTENT_TYPE)
