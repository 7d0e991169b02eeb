"""The API's route modules: one small router per resource, and what they share.

Each router carries its full prefix (``API_PREFIX`` + resource) itself rather than getting it
from ``include_router(prefix=...)``, so that the matched route's template is the full path
(what the metrics middleware labels requests with).

A read takes ``session: ReadSessionDep`` (the session, once the token has been checked) and
documents ``responses=READ_ERRORS``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from sqlalchemy.orm import Session

from api.deps import ReaderDep, SessionDep
from api.errors import R401, R404, R422, responses

API_PREFIX = "/api/v1"
READ_ERRORS = responses(R401, R404, R422)  # what a read of a sweep or a trial answers besides 200


def _read_session(session: SessionDep, _: ReaderDep) -> Session:
    """The request's session, once its token is checked (``ReaderDep``) for a read."""
    return session


ReadSessionDep = Annotated[Session, Depends(_read_session)]
