"""Dependencies for route functions, as ``Annotated`` aliases.

    def get_thing(session: SessionDep, _: ReaderDep) -> ...   # a read
    def post_thing(session: SessionDep, token: WriterDep) -> ...  # a write
    def delete_thing(session: SessionDep, token: AdminDep) -> ...  # token administration

``SessionDep``: one SQLAlchemy session per request, committed when the route returns normally
(rolled back otherwise). ``ReaderDep``: a valid bearer token of any scope, or None when reads are
public (``SWEEPD_PUBLIC_READ=1``). ``WriterDep``: always a valid token of scope ``write`` or
``admin``. ``AdminDep``: always a valid ``admin`` token. A missing, unknown, revoked or expired
token is a 401 with ``WWW-Authenticate: Bearer`` (the detail says which); a valid token whose
scope is too low is a 403 naming the scope needed. A response to a request with a valid token
says its scope in ``X-Sweepd-Token-Scope`` (the dashboard keeps a token that can write out of
localStorage with it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from sweepd.settings import Settings
from sweepd.store import repo
from sweepd.store.db import session_scope
from sweepd.store.models import ApiToken

bearer_scheme = HTTPBearer(
    auto_error=False,
    description="an API token (`sweepd token create NAME` prints one): `Authorization: Bearer swd_...`",
)


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    with session_scope(request.app.state.sessionmaker) as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
CredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"})


SCOPE_HEADER = "X-Sweepd-Token-Scope"


def forbidden(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_403_FORBIDDEN, detail=detail)


def _verify(session: Session, request: Request, response: Response,
            credentials: HTTPAuthorizationCredentials | None, need: str) -> ApiToken:
    """The request's live token, if its scope allows ``need`` (read, write or admin)."""
    if credentials is None:
        if request.headers.get("authorization"):
            raise unauthorized("malformed Authorization header: expected 'Bearer <token>'")
        raise unauthorized("this route needs an API token: send 'Authorization: Bearer <token>' "
                           "(create one with `sweepd token create NAME`)")
    token = repo.find_token(session, credentials.credentials)
    if token is None:
        raise unauthorized("invalid API token: no token has this value (mistyped, or from another server?)")
    problem = repo.token_problem(token)
    if problem is not None:
        raise unauthorized(f"{problem}; ask for a new one (`sweepd token create NAME`)")
    _touch_now_and_then(request, token.id)
    if not repo.scope_allows(token.scope, need):
        raise forbidden(f"this route needs a token with scope {need!r}"
                        f"{' (or admin)' if need == 'write' else ''}; token {token.name!r} has scope {token.scope!r}")
    response.headers[SCOPE_HEADER] = token.scope
    return token


_last_touch: dict[int, float] = {}
TOUCH_EVERY_SECONDS = 60.0


def _touch_now_and_then(request: Request, token_id: int) -> None:
    """Record the token's use at most once a minute per process, in a short transaction of its
    own: a read request must never hold the database's write lock (under 50 concurrent readers
    that stalled every worker thread behind it)."""
    now = time.monotonic()
    if now - _last_touch.get(token_id, -TOUCH_EVERY_SECONDS) < TOUCH_EVERY_SECONDS:
        return
    _last_touch[token_id] = now
    try:
        with session_scope(request.app.state.sessionmaker) as s:
            repo.touch_token(s, token_id)
    except OperationalError:  # busy: the next minute's request will record it
        pass


def require_writer(request: Request, response: Response, session: SessionDep,
                   credentials: CredentialsDep) -> ApiToken:
    return _verify(session, request, response, credentials, "write")


def require_admin(request: Request, response: Response, session: SessionDep,
                  credentials: CredentialsDep) -> ApiToken:
    return _verify(session, request, response, credentials, "admin")


def require_reader(
    request: Request, response: Response, session: SessionDep, settings: SettingsDep, credentials: CredentialsDep
) -> ApiToken | None:
    if settings.public_read and credentials is None and not request.headers.get("authorization"):
        return None
    return _verify(session, request, response, credentials, "read")


ReaderDep = Annotated[ApiToken | None, Depends(require_reader)]
WriterDep = Annotated[ApiToken, Depends(require_writer)]
AdminDep = Annotated[ApiToken, Depends(require_admin)]
