"""/api/v1/tokens: list, create and revoke API tokens. Admin scope only.

The secret of a token is in the response to its POST, once; every other response shows a token
without it (only its sha256 is stored). `sweepd token list|create|revoke` does the same on the
server's database.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query, status

from api.deps import AdminDep, SessionDep
from api.errors import R401, R403, R422, responses
from api.routes import API_PREFIX
from api.schemas import ErrorOut, TokenCreate, TokenCreated, TokenList, TokenPublic
from sweepd.store import repo
from sweepd.store.models import ApiToken

router = APIRouter(prefix=f"{API_PREFIX}/tokens", tags=["tokens"])

TokenName = Annotated[str, Path(description="the token's name", max_length=100)]
R404_TOKEN = {404: {"model": ErrorOut, "description": "no token of this name"}}
R409_TOKEN = {409: {"model": ErrorOut, "description": "a token of this name already exists"}}
R400_BODY = {400: {"model": ErrorOut, "description": "the body is not UTF-8 JSON"}}


def public(token: ApiToken) -> TokenPublic:
    return TokenPublic(name=token.name, scope=token.scope, state=repo.token_state(token), created_at=token.created_at,
                       expires_at=token.expires_at, last_used_at=token.last_used_at, revoked=token.revoked)


@router.get("", responses=responses(R401, R403, R422), summary="List API tokens (admin)")
def list_tokens(
    session: SessionDep, _: AdminDep,
    state: Annotated[Literal["active", "expired", "revoked"] | None, Query(description="only tokens in this state")] = None,
) -> TokenList:
    """Every token, oldest first: name, scope, state, when it was created, expires and was last
    used. Never a secret."""
    items = [public(t) for t in repo.list_tokens(session)]
    return TokenList(items=[t for t in items if state is None or t.state == state])


@router.post("", status_code=status.HTTP_201_CREATED,
             responses=responses(R400_BODY, R401, R403, R409_TOKEN, R422),
             summary="Create an API token (admin); its secret is in this response only")
def create_token(body: TokenCreate, session: SessionDep, _: AdminDep) -> TokenCreated:
    if repo.get_token(session, body.name) is not None:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"a token named {body.name!r} already exists")
    expires_in = repo.parse_duration(body.expires_in) if body.expires_in is not None else None
    token, secret = repo.create_token(session, body.name, scope=body.scope, expires_in=expires_in)
    return TokenCreated(**public(token).model_dump(), token=secret)


@router.delete("/{name}", responses=responses(R401, R403, R404_TOKEN, R422),
               summary="Revoke an API token (admin); it is kept, listed as revoked")
def revoke_token(name: TokenName, session: SessionDep, _: AdminDep) -> TokenPublic:
    """Revoke the token: from now on it is a 401 saying so. Revoking a revoked token is a no-op."""
    token = repo.get_token(session, name) if name.isprintable() else None  # NUL would upset PostgreSQL
    if token is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no token {name!r}")
    repo.revoke_token(session, name)
    session.refresh(token)
    return public(token)
