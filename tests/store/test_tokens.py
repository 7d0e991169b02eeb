from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import pytest
from sqlalchemy import text

from sweepd.store import head_revision, make_engine, repo, upgrade
from sweepd.store.migrate import current_revision, downgrade
from sweepd.store.models import utcnow


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


def test_scopes_imply_the_ones_below():
    assert repo.SCOPES == ("read", "write", "admin")
    allowed = {(have, need) for have in repo.SCOPES for need in repo.SCOPES if repo.scope_allows(have, need)}
    assert allowed == {("read", "read"), ("write", "read"), ("write", "write"),
                       ("admin", "read"), ("admin", "write"), ("admin", "admin")}
    assert not repo.scope_allows("root", "read")
    with pytest.raises(ValueError, match="unknown token scope 'root'"):
        repo.scope_allows("admin", "root")


def test_scope_defaults_to_write_and_is_checked(session):
    token, _ = repo.create_token(session, "ci")
    reader, _ = repo.create_token(session, "dash", scope="read")
    session.commit()
    assert (token.scope, token.expires_at) == ("write", None)
    assert reader.scope == "read"
    with pytest.raises(ValueError, match="unknown token scope"):
        repo.create_token(session, "x", scope="superuser")


@pytest.mark.parametrize("text, delta", [("30d", timedelta(days=30)), ("12h", timedelta(hours=12)),
                                         ("90m", timedelta(minutes=90)), ("45s", timedelta(seconds=45)),
                                         ("2w", timedelta(weeks=2)), (" 9999d ", timedelta(days=9999))])
def test_durations(text, delta):
    assert repo.parse_duration(text) == delta


@pytest.mark.parametrize("text", ["", "30", "d", "0d", "-1d", "1.5h", "3 days", "10000d", "12y", "1h30m"])
def test_bad_durations_say_what_is_expected(text):
    with pytest.raises(ValueError, match=r"bad duration .*e\.g\. 30d, 12h"):
        repo.parse_duration(text)


def test_an_expired_token_is_refused_and_says_when(session):
    token, plaintext = repo.create_token(session, "short", expires_in=timedelta(hours=1))
    session.commit()
    assert token.expires_at is not None
    assert timedelta(minutes=59) < token.expires_at - token.created_at <= timedelta(hours=1)
    assert repo.verify_token(session, plaintext) is not None and repo.token_state(token) == "active"
    token.expires_at = utcnow() - timedelta(seconds=1)
    session.commit()
    assert repo.verify_token(session, plaintext) is None
    assert repo.find_token(session, plaintext).name == "short"
    assert repo.token_state(token) == "expired"
    assert re.fullmatch(r"API token 'short' expired at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", repo.token_problem(token))
    repo.revoke_token(session, "short")
    session.commit()
    assert repo.token_state(token) == "revoked"  # revoked wins: it is the stronger statement
    assert repo.token_problem(token) == "API token 'short' has been revoked"


def test_existing_tokens_become_write_tokens_that_never_expire(db_url):
    """Migration 0005 on a database with tokens made before scopes existed."""
    upgrade(db_url, "0004")
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO sweepd_api_tokens (name, token_hash, created_at, revoked) "
                              "VALUES ('old', :h, :t, false)"), {"h": "a" * 64, "t": utcnow()})
        upgrade(db_url)
        with engine.connect() as conn:
            row = conn.execute(text("SELECT name, scope, expires_at FROM sweepd_api_tokens")).one()
        assert tuple(row) == ("old", "write", None)
        assert current_revision(db_url) == head_revision()
        downgrade(db_url, "0004")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT name FROM sweepd_api_tokens")).scalar_one() == "old"
    finally:
        engine.dispose()
