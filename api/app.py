"""The FastAPI application: ``create_app(settings=None, *, extra_routers=(), lifespan=None)``.

    from api.app import create_app
    from api.dashboard import router as dashboard_router

    app = create_app(settings, extra_routers=[dashboard_router])

(`sweepd serve` serves ``api.service:create_service_app``: this app, the dashboard and the
supervisor.) REST under ``/api/v1`` (routes in ``api/routes/``), ``/healthz`` and ``/metrics`` at
the root, OpenAPI at ``/openapi.json``, docs at ``/docs``. ``extra_routers`` (the dashboard) are
included as they are, after the API's own routes. At startup the database is migrated to the
latest schema, sweeps left ``validating`` are validated again (``app.state.preflight``, the data
preflight worker of api/preflight.py), then ``lifespan`` (if given) is entered; at shutdown it is
left, running preflights are stopped, then the engine is disposed. Use the app as a context
manager in tests (``with TestClient(app) as client``) so that startup runs.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any

from fastapi.middleware.gzip import GZipMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from fastapi import APIRouter, FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.utils import get_openapi
from sqlalchemy import func, select

import sweepd
from api import errors
from api.metrics import HttpMetrics, MetricsMiddleware
from api.preflight import PreflightWorker
from api.security import SecurityHeadersMiddleware
from api.routes import API_PREFIX, sweeps, system, tokens, trials
from sweepd.settings import Settings, get_settings
from sweepd.spec import SweepSpec
from sweepd.store.db import make_engine, make_sessionmaker
from sweepd.store.migrate import upgrade
from sweepd.store.models import ApiToken

log = logging.getLogger("sweepd.api")

__all__ = ["API_PREFIX", "create_app"]


def _startup(app: FastAPI) -> None:
    settings: Settings = app.state.settings
    upgrade(settings.resolved_database_url)
    app.state.preflight.resume()  # sweeps a stopped or crashed server left validating
    with app.state.sessionmaker() as session:
        tokens = session.scalar(select(func.count()).select_from(ApiToken).where(ApiToken.revoked.is_(False)))
    if not tokens:
        log.warning("no API tokens yet: every write%s needs one; create one with `sweepd token create NAME`",
                    "" if settings.public_read else " and read")


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The generated schema, plus the sweep spec's models (the POST /sweeps body) and, when
    reads are public, security made optional on the read routes."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    spec_schema = SweepSpec.model_json_schema(ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, definition in spec_schema.pop("$defs", {}).items():
        components.setdefault(name, definition)
    components["SweepSpec"] = spec_schema
    if app.state.settings.public_read:
        for path in schema.get("paths", {}).values():
            op = path.get("get")
            if op and op.get("security"):
                op["security"] = [{}, *op["security"]]
    app.openapi_schema = schema
    return schema


def create_app(settings: Settings | None = None, *, extra_routers: Iterable[APIRouter] = (),
               lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None) -> FastAPI:
    """The sweepd app on the database of ``settings`` (default: from the environment)."""
    settings = settings or get_settings()
    # No overflow cap: a request must never wait for a pooled connection while it holds one of
    # the worker threads the connection's owner needs to finish (a deadlock under load).
    engine = make_engine(settings.resolved_database_url, max_overflow=-1)

    @asynccontextmanager
    async def app_lifespan(app: FastAPI) -> AsyncIterator[None]:
        if app.state.preflight.closed:  # started again after a shutdown
            app.state.preflight = PreflightWorker(app.state.sessionmaker, settings.home)
        await run_in_threadpool(_startup, app)
        try:
            async with lifespan(app) if lifespan else nullcontext():
                yield
        finally:
            await run_in_threadpool(app.state.preflight.close)
            engine.dispose()

    app = FastAPI(
        title="sweepd",
        version=getattr(sweepd, "__version__", "0.1.0"),
        description="Hyperparameter sweeps for supervised fine-tuning of small LLMs. "
                    "Send `Authorization: Bearer <token>` (`sweepd token create NAME`).",
        lifespan=app_lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = make_sessionmaker(engine)
    app.state.http_metrics = HttpMetrics()
    app.state.capacity = None
    app.state.preflight = PreflightWorker(app.state.sessionmaker, settings.home)

    routers = [sweeps.router, trials.router, tokens.router, system.router, *extra_routers]
    for router in routers:  # extra routers: e.g. the dashboard (api/dashboard), by `sweepd serve`
        app.include_router(router)

    errors.install(app, [route for router in routers for route in router.routes])
    app.add_middleware(MetricsMiddleware, metrics=app.state.http_metrics)
    # curves of hundreds of trials are megabytes of JSON numbers; they compress ~5x
    app.add_middleware(GZipMiddleware, minimum_size=4096)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.resolved_allowed_hosts)  # outermost
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app
