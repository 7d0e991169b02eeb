from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import text

from sweepd.store import repo


def test_only_the_hash_is_stored(session):
    token, plaintext = repo.create_token(session, "ci")
    session.commit()
    assert plaintext.startswith("swd_") and len(plaintext) > 40
    assert token.token_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    rows = session.execute(text("SELECT * FROM sweepd_api_tokens")).mappings().all()
    assert len(rows) == 1
    assert all(plaintext not in str(v) for v in rows[0].values())
    assert rows[0]["token_hash"] == token.token_hash


def test_verify_and_revoke(session):
    token, plaintext = repo.create_token(session, "ci")
    _, other = repo.create_token(session, "dashboard")
    session.commit()
    assert token.last_used_at is None
    ok = repo.verify_token(session, plaintext)
    session.commit()
    assert ok is not None and ok.name == "ci" and ok.last_used_at is not None
    assert repo.verify_token(session, plaintext + "x") is None
    assert repo.verify_token(session, "") is None

    assert repo.revoke_token(session, "ci") is True
    session.commit()
    assert repo.verify_token(session, plaintext) is None
    assert repo.verify_token(session, other).name == "dashboard"
    assert repo.revoke_token(session, "missing") is False
    assert [(t.name, t.revoked) for t in repo.list_tokens(session)] == [
        ("ci", True), ("dashboard", False)]


def test_names_are_unique_and_checked(session):
    repo.create_token(session, "ci")
    session.commit()
    with pytest.raises(ValueError, match="already exists"):
        repo.create_token(session, "ci")
    with pytest.raises(ValueError):
        repo.create_token(session, "  ")
