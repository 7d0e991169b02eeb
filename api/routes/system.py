"""/healthz and /metrics (Prometheus), outside /api/v1.

/healthz is public (load balancers and container health checks send no token). /metrics is a
read like any other: it tells sweep counts and every route's traffic, so it needs a token (of any
scope) unless reads are public (SWEEPD_PUBLIC_READ). Prometheus sends one with the scrape job's
``authorization: {credentials_file: ...}`` (Bearer by default).
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import text

from api.deps import ReaderDep
from api.errors import R401
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
                     "description": "Prometheus text exposition format 0.0.4"},
               # JSON like every error (the route's own media type is text/plain)
               401: {"description": R401[401]["description"],
                     "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}}},
    summary="Prometheus metrics (a read: needs a token unless reads are public)",
)
def metrics(request: Request, _: ReaderDep) -> PlainTextResponse:
    return PlainTextResponse(render(request.app), media_type=CONTENT_TYPE)
