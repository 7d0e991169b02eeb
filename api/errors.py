"""Error responses: their OpenAPI documentation and the app's exception handlers.

Every error body is ``{"detail": ...}``. Bad input is always a 4xx; an unexpected error is a 500
with a generic message (and a logged traceback); a database that cannot be reached is a 503.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.utils import is_body_allowed_for_status_code
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from api.schemas import ErrorOut, ValidationErrorOut
from sweepd.formatting import json_safe

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


class SafeJSONResponse(JSONResponse):
    """JSON that always renders, whatever the request put in the error: NaN and infinities become
    null and a lone surrogate is escaped (``ensure_ascii``), where Starlette's JSONResponse raised
    (a 500 in place of the 422). Found by tests/api/test_fuzz_specs.py."""

    def render(self, content: Any) -> bytes:
        try:
            return json.dumps(json_safe(content), ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()
        except (RecursionError, TypeError, ValueError):
            return b'{"detail":"invalid request (its error could not be rendered)"}'


async def _request_invalid(request: Request, exc: RequestValidationError) -> Response:
    """FastAPI's 422 for a bad parameter or body, each error as ``ErrorItem`` (loc, msg, type):
    without the ``input`` FastAPI echoes, which could be the whole body (a megabyte) and held
    values JSON cannot (NaN, lone surrogates)."""
    errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
              for e in exc.errors()]
    return SafeJSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


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
    path (the router only names the first route that matched it), and the body always renders."""
    if exc.status_code == 405:
        allowed = _allowed_methods(request.app.state.routes, dict(request.scope))
        if allowed:
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(sorted(allowed))}
    headers = getattr(exc, "headers", None)
    if not is_body_allowed_for_status_code(exc.status_code):
        return Response(status_code=exc.status_code, headers=headers)
    return SafeJSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


def install(app: FastAPI, routes: list[BaseRoute]) -> None:
    """``routes``: every route of the app, flat (for the ``Allow`` header of a 405)."""
    app.state.routes = routes
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _request_invalid)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(PoolTimeout, _database_unavailable)
    app.add_exception_handler(Exception, _unexpected)
