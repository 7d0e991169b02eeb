"""Dependencies for route functions, as ``Annotated`` aliases.

    def get_thing(session: SessionDep, _: ReaderDep) -> ...   # a read
    def post_thing(session: SessionDep, token: WriterDep) -> ...  # a write

``SessionDep``: one SQLAlchemy session per request, committed when the route returns normally
(rolled back otherwise). ``ReaderDep``: a valid bearer token, or None when reads are public
(``SWEEPD_PUBLIC_READ=1``). ``WriterDep``: always a valid bearer token. A missing or invalid
token is a 401 with ``WWW-Authenticate: Bearer``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
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


def _verify(session: Session, request: Request, credentials: HTTPAuthorizationCredentials | None) -> ApiToken:
    if credentials is None:
        if request.headers.get("authorization"):
            raise unauthorized("malformed Authorization header: expected 'Bearer <token>'")
        raise unauthorized("this route needs an API token: send 'Authorization: Bearer <token>' "
                           "(create one with `sweepd token create NAME`)")
    token = repo.verify_token(session, credentials.credentials, touch=False)
    if token is None:
        raise unauthorized("invalid or revoked API token")
    _touch_now_and_then(request, token.id)
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


def require_writer(request: Request, session: SessionDep, credentials: CredentialsDep) -> ApiToken:
    return _verify(session, request, credentials)


def require_reader(
    request: Request, session: SessionDep, settings: SettingsDep, credentials: CredentialsDep
) -> ApiToken | None:
    if settings.public_read and credentials is None and not request.headers.get("authorization"):
        return None
    return _verify(session, request, credentials)


ReaderDep = Annotated[ApiToken | None, Depends(require_reader)]
WriterDep = Annotated[ApiToken, Depends(require_writer)]
