"""The ``Idempotency-Key`` header of POST /sweeps (Stripe's convention; IETF draft
"The Idempotency-Key HTTP Header Field").

A client that did not get the answer to a submit (a proxy's 502, a dropped connection, a timeout)
sends the same request again with the same key. The key is stored with the sweep (a unique
column), with the sha256 of the request (media type and body): the same key and the same request
answer the sweep the first one made (201 again, with ``Idempotent-Replayed: true``), the same key
with another request is a 422 naming the header. Two requests with one key at the same time make
one sweep: the second one's insert fails on the unique constraint and it answers the first's sweep.
Keys are global (not per token): any token that may submit may replay, as any reader sees every
sweep. A request without the header is never deduplicated.
"""

from __future__ import annotations

import hashlib

from fastapi import HTTPException, Request, status

from sweepd.store.models import Sweep

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255  # the column's size; a UUID is 36


def _refuse(msg: str) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                         detail=[{"loc": ["header", HEADER], "msg": msg, "type": "idempotency_key"}])


def key_of(request: Request) -> str | None:
    """The request's key (None without the header), or 422: 1 to 255 visible ASCII characters,
    bare or as a quoted string (``"8e03978e-..."``, the IETF draft's form)."""
    values = request.headers.getlist(HEADER)
    if not values:
        return None
    if len(values) > 1:
        raise _refuse(f"send one {HEADER} header, not {len(values)}")
    key = values[0].strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not key:
        raise _refuse(f"{HEADER} is empty: send a unique value per sweep, e.g. a UUID")
    if len(key) > MAX_KEY_LENGTH:
        raise _refuse(f"{HEADER} is {len(key):,} characters long; at most {MAX_KEY_LENGTH}")
    if not all("!" <= c <= "~" for c in key):
        raise _refuse(f"{HEADER} may hold only visible ASCII characters (no spaces), e.g. a UUID")
    return key


def digest(media_type: str, raw: bytes) -> str:
    """The request's fingerprint: what a retry must repeat exactly."""
    return hashlib.sha256(media_type.encode() + b"\n" + raw).hexdigest()


def replay(sweep: Sweep, key: str, request_digest: str) -> Sweep:
    """The sweep a retry of the same request gets, or 422 when the key came with another request."""
    if sweep.idempotency_digest != request_digest:
        raise _refuse(f"{HEADER} {key!r} was already used to submit sweep {sweep.id!r} with a different "
                      "request body; send a new key for a new sweep")
    return sweep
