"""API tokens in the store: only a token's sha256 is kept; the plaintext is shown once.

Reached through ``sweepd.store.repo`` like every other read and write; the session rules are the
repository's (the caller owns the transaction).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from sweepd.store.models import ApiToken, utcnow

TOKEN_PREFIX = "swd_"
TOKEN_TOUCH_EVERY = timedelta(minutes=1)


def hash_token(plaintext: str) -> str:
    """sha256 hex of a token: the only form a token is stored in."""
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def create_token(session: Session, name: str) -> tuple[ApiToken, str]:
    """A new API token named ``name``; returns (row, plaintext). The plaintext is not stored
    anywhere: show it once. Raises ValueError if the name is taken."""
    name = name.strip()
    if not name or len(name) > 100:
        raise ValueError(f"token name must be 1..100 characters, got {name!r}")
    if session.scalar(select(ApiToken.id).where(ApiToken.name == name)) is not None:
        raise ValueError(f"a token named {name!r} already exists")
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(name=name, token_hash=hash_token(plaintext), created_at=utcnow(), revoked=False)
    session.add(token)
    session.flush()
    return token, plaintext


def touch_token(session: Session, token_id: int, *, every: timedelta = TOKEN_TOUCH_EVERY) -> bool:
    """Set ``last_used_at`` now unless it was set within ``every``: one conditional UPDATE, meant
    for a short session of its own so that readers never hold a write lock."""
    now = utcnow()
    stmt = (update(ApiToken).where(ApiToken.id == token_id,
                                   or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at < now - every))
            .values(last_used_at=now))
    return session.execute(stmt).rowcount > 0


def verify_token(session: Session, plaintext: str, *, touch: bool = True) -> ApiToken | None:
    """The live (not revoked) token with this plaintext, or None.

    ``touch``: update ``last_used_at`` (when it is older than a minute); the caller commits.
    """
    if not plaintext:
        return None
    digest = hash_token(plaintext)
    token = session.scalars(select(ApiToken).where(ApiToken.token_hash == digest)).one_or_none()
    if token is None or token.revoked or not hmac.compare_digest(token.token_hash, digest):
        return None
    now = utcnow()
    if touch and (token.last_used_at is None or now - token.last_used_at > TOKEN_TOUCH_EVERY):
        token.last_used_at = now  # at most once a minute: reads stay reads on a busy server
        session.flush()
    return token


def revoke_token(session: Session, name: str) -> bool:
    """Revoke the token named ``name``; False if there is none."""
    result = session.execute(update(ApiToken).where(ApiToken.name == name).values(revoked=True))
    return result.rowcount > 0


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.id)).all())
