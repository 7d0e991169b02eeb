"""Error responses: their OpenAPI documentation and the app's exception handlers.

Every error body is ``{"detail": ...}``. Bad input is always a 4xx; an unexpected error is a 500
with a generic message (and a logged traceback); a database that cannot be reached is a 503.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from api.schemas import ErrorOut, ValidationErrorOut

log = logging.getLogger("sweepd.api")


def _doc(description: str, model: type = ErrorOut) -> dict[str, Any]:
    return {"model": model, "description": description}


R401 = {401: _doc("missing, malformed, invalid, revoked or expired bearer token")}
R403 = {403: _doc("the token's scope does not allow this (read < write < admin)")}
R404 = {404: _doc("no such sweep or trial")}
R409 = {409: _doc("the sweep is not in a state that allows this")}
R413 = {413: _doc("request body too large")}
R415 = {415: _doc("unsupported Content-Type")}
R422 = {422: _doc("invalid parameter or body; `loc` is the field path", ValidationErrorOut)}


def responses(*docs: dict[int, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = {}
    for d in docs:
        out.update(d)
    return out


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.error("database unavailable during %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse({"detail": "database unavailable; retry shortly"}, status_code=503,
                        headers={"Retry-After": "1"})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error in %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal server error (logged on the server)"}, status_code=500)


def _allowed_methods(routes: list[BaseRoute], scope: dict[str, Any]) -> set[str]:
    allowed: set[str] = set()
    for route in routes:
        methods = getattr(route, "methods", None)
        if methods and route.matches(scope)[0] is not Match.NONE:
            allowed |= set(methods)
    return allowed


async def _http_error(request: Request, exc: StarletteHTTPException) -> Any:
    """FastAPI's handler, except that a 405's ``Allow`` lists the methods of every route on the
    path (the router only names the first route that matched it)."""
    if exc.status_code == 405:
        allowed = _allowed_methods(request.app.state.routes, dict(request.scope))
        if allowed:
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(sorted(allowed))}
    return await http_exception_handler(request, exc)


def install(app: FastAPI, routes: list[BaseRoute]) -> None:
    """``routes``: every route of the app, flat (for the ``Allow`` header of a 405)."""
    app.state.routes = routes
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(PoolTimeout, _database_unavailable)
    app.add_exception_handler(Exception, _unexpected)
