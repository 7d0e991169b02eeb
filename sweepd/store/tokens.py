"""API tokens in the store: only a token's sha256 is kept; the plaintext is shown once.

Each token has a scope, ``read`` < ``write`` < ``admin`` (a scope implies those before it: a
write token can read, an admin token can write), and may expire (``expires_at``; None: never).
A revoked or expired token is refused; ``token_problem`` says which.

Reached through ``sweepd.store.repo`` like every other read and write; the session rules are the
repository's (the caller owns the transaction).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from sweepd.store.models import ApiToken, utcnow

TOKEN_PREFIX = "swd_"
TOKEN_TOUCH_EVERY = timedelta(minutes=1)
SCOPES = ("read", "write", "admin")  # each implies the ones before it
DEFAULT_SCOPE = "write"  # what `sweepd token create NAME` has always made
DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
DURATION_PATTERN = r"^[1-9][0-9]{0,3}[smhdw]$"  # the API's schema says the same
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}$"  # a new token's name (the API's schema too)
_NAME = re.compile(NAME_PATTERN)
_DURATION = re.compile(r"([1-9][0-9]{0,3})([smhdw])")


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w``: a whole number (1..9999) and a unit.
    Raises ValueError saying what is expected."""
    match = _DURATION.fullmatch(str(text).strip())
    if match is None:
        raise ValueError(f"bad duration {text!r}: expected a whole number from 1 to 9999 and a unit "
                         "(s, m, h, d or w), e.g. 30d, 12h, 90m")
    return timedelta(**{DURATION_UNITS[match.group(2)]: int(match.group(1))})


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise ValueError(f"unknown token scope {scope!r}: expected one of {', '.join(SCOPES)}")
    return scope


def scope_allows(have: str, need: str) -> bool:
    """Whether a token of scope ``have`` may do what needs ``need`` (admin > write > read)."""
    return have in SCOPES and SCOPES.index(have) >= SCOPES.index(check_scope(need))


def is_expired(token: ApiToken, now: datetime | None = None) -> bool:
    return token.expires_at is not None and token.expires_at <= (now or utcnow())


def token_state(token: ApiToken, now: datetime | None = None) -> str:
    """``revoked``, ``expired`` or ``active``."""
    return "revoked" if token.revoked else "expired" if is_expired(token, now) else "active"


def token_problem(token: ApiToken, now: datetime | None = None) -> str | None:
    """Why this token is refused (a sentence naming it), or None when it is live."""
    if token.revoked:
        return f"API token {token.name!r} has been revoked"
    if is_expired(token, now):
        return f"API token {token.name!r} expired at {token.expires_at:%Y-%m-%d %H:%M:%S} UTC"
    return None


def hash_token(plaintext: str) -> str:
    """sha256 hex of a token: the only form a token is stored in."""
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def create_token(session: Session, name: str, *, scope: str = DEFAULT_SCOPE,
                 expires_in: timedelta | None = None) -> tuple[ApiToken, str]:
    """A new API token named ``name`` with ``scope`` (read, write or admin), expiring after
    ``expires_in`` (None: never); returns (row, plaintext). The plaintext is not stored anywhere:
    show it once. Raises ValueError if the name is taken, the scope unknown or the duration not
    positive."""
    name = name.strip()
    if not _NAME.fullmatch(name):
        raise ValueError(f"bad token name {name!r}: 1 to 100 letters, digits and . _ @ + - "
                         "(starting with a letter or digit)")
    check_scope(scope)
    if expires_in is not None and expires_in <= timedelta(0):
        raise ValueError(f"a token must expire in the future, got expires_in={expires_in}")
    if session.scalar(select(ApiToken.id).where(ApiToken.name == name)) is not None:
        raise ValueError(f"a token named {name!r} already exists")
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    token = ApiToken(name=name, token_hash=hash_token(plaintext), created_at=now, revoked=False, scope=scope,
                     expires_at=now + expires_in if expires_in is not None else None)
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


def find_token(session: Session, plaintext: str) -> ApiToken | None:
    """The token with this plaintext, live or not (``token_problem`` says whether it may be used)."""
    if not plaintext:
        return None
    digest = hash_token(plaintext)
    token = session.scalars(select(ApiToken).where(ApiToken.token_hash == digest)).one_or_none()
    if token is None or not hmac.compare_digest(token.token_hash, digest):
        return None
    return token


def verify_token(session: Session, plaintext: str, *, touch: bool = True) -> ApiToken | None:
    """The live (not revoked, not expired) token with this plaintext, or None.

    ``touch``: update ``last_used_at`` (when it is older than a minute); the caller commits.
    """
    token = find_token(session, plaintext)
    now = utcnow()
    if token is None or token_problem(token, now) is not None:
        return None
    if touch and (token.last_used_at is None or now - token.last_used_at > TOKEN_TOUCH_EVERY):
        token.last_used_at = now  # at most once a minute: reads stay reads on a busy server
        session.flush()
    return token


def get_token(session: Session, name: str) -> ApiToken | None:
    """The token named ``name`` (live or not), or None."""
    return session.scalars(select(ApiToken).where(ApiToken.name == name)).one_or_none()


def revoke_token(session: Session, name: str) -> bool:
    """Revoke the token named ``name``; False if there is none. Revoking twice is harmless."""
    result = session.execute(update(ApiToken).where(ApiToken.name == name).values(revoked=True))
    return result.rowcount > 0


def list_tokens(session: Session) -> list[ApiToken]:
    """Every token, oldest first, revoked and expired ones included."""
    return list(session.scalars(select(ApiToken).order_by(ApiToken.id)).all())
