"""What `sweepd serve` serves: the API, the dashboard, and the supervisor that runs queued sweeps.

    uvicorn.run("api.service:create_service_app", factory=True, host=..., port=...)

The data preflight's imports (torch, transformers) are warmed up in a thread at startup
(api/preflight.py). The supervisor (sweepd.service.supervisor) lives as long as the app: it starts
after the startup migrations and stops at shutdown, which sends every sweep driver SIGTERM (their
sweeps stay RUNNING and resume on the next start). Settings: SWEEPD_MAX_SWEEPS, SWEEPD_SUPERVISE (sweepd/settings.py),
set by `sweepd serve` from its options.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from api.app import create_app
from api.dashboard import router as dashboard_router
from api.dashboard.router import missing_vendor_files
from sweepd.settings import Settings, get_settings

log = logging.getLogger("sweepd.api")


def create_service_app(settings: Settings | None = None) -> FastAPI:
    """The app with the dashboard; its lifespan runs the supervisor when ``settings.supervise``.
    The running supervisor is ``app.state.supervisor`` (None without one)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def supervised(app: FastAPI) -> AsyncIterator[None]:
        if missing := missing_vendor_files():
            log.warning("the dashboard's charts need %s, fetched at build time: run `make setup` (or "
                        "`python3 scripts/fetch_vendor.py`); the API works without them", ", ".join(missing))
        app.state.preflight.warm_up()  # so the first POST /sweeps does not wait for torch's import
        app.state.supervisor = _start_supervisor(settings) if settings.supervise else None
        try:
            yield
        finally:
            if app.state.supervisor is not None:
                await run_in_threadpool(_stop_supervisor, app.state.supervisor)

    app = create_app(settings, extra_routers=[dashboard_router], lifespan=supervised)
    app.state.supervisor = None
    return app


def _start_supervisor(settings: Settings):
    from sweepd.service.cluster import service_cluster
    from sweepd.service.supervisor import Supervisor
    from sweepd.store.db import make_engine

    # one Ray for every sweep: SWEEPD_RAY_ADDRESS's, or a local head started when the first sweep runs
    supervisor = Supervisor(make_engine(settings.resolved_database_url), max_sweeps=settings.max_sweeps,
                            log_dir=settings.home / "logs", cluster=service_cluster(settings.ray_address))
    supervisor.start()
    return supervisor


def _stop_supervisor(supervisor) -> None:
    try:
        supervisor.stop()
    finally:
        supervisor.engine.dispose()
