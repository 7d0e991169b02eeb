"""`sweepd token create|list|revoke` on a local database: scopes, expiry, one-line errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sweepd.cli import app
from sweepd.store import make_engine, make_sessionmaker, repo


def sweepd(db_url: str, *args: str):
    return CliRunner().invoke(app, ["token", *args, "--url", db_url])


def one_line_error(result, exit_code: int = 1) -> str:
    assert result.exit_code == exit_code, (result.stdout, result.stderr)
    assert result.stdout == "" and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr.strip()


def test_create_list_revoke(db_url):
    made = sweepd(db_url, "create", "ci")
    assert made.exit_code == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("swd_") and "scope write, never expires" in made.stderr
    assert sweepd(db_url, "create", "dash", "--scope", "read", "--expires-in", "30d").exit_code == 0
    assert sweepd(db_url, "create", "root", "--scope", "admin", "--expires-in", "12h").exit_code == 0

    listed = sweepd(db_url, "list")
    assert listed.exit_code == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["NAME", "SCOPE", "STATE", "CREATED", "EXPIRES", "LAST", "USED"]
    assert [line.split()[:3] for line in lines[1:]] == [["ci", "write", "active"], ["dash", "read", "active"],
                                                         ["root", "admin", "active"]]
    assert "never" in lines[1] and "UTC" in lines[2]
    assert secret not in listed.stdout and "swd_" not in listed.stdout

    revoked = sweepd(db_url, "revoke", "ci")
    assert revoked.exit_code == 0 and revoked.stderr.strip() == "token 'ci' revoked"
    again = sweepd(db_url, "revoke", "ci")
    assert again.exit_code == 0 and "already revoked" in again.stderr
    rows = [json.loads(line) for line in sweepd(db_url, "list", "--json").stdout.splitlines()]
    assert [(r["name"], r["scope"], r["state"], r["revoked"]) for r in rows] == [
        ("ci", "write", "revoked", True), ("dash", "read", "active", False), ("root", "admin", "active", False)]
    assert rows[0]["expires_at"] is None and rows[1]["expires_at"].endswith("+00:00")
    assert all(set(r) == {"name", "scope", "state", "created_at", "expires_at", "last_used_at", "revoked"} for r in rows)

    engine = make_engine(db_url)
    try:
        with make_sessionmaker(engine)() as s:
            assert repo.verify_token(s, secret, touch=False) is None  # revoked for real
    finally:
        engine.dispose()


@pytest.mark.parametrize("args, message", [
    (("create", "ci"), "error: a token named 'ci' already exists"),
    (("create", "x", "--scope", "root"), "error: unknown token scope 'root': expected one of read, write, admin"),
    (("create", "x", "--expires-in", "3x"), "error: bad duration '3x'"),
    (("create", "x", "--expires-in", "0d"), "error: bad duration '0d'"),
    (("create", "has space"), "error: bad token name 'has space'"),
    (("revoke", "nope"), "error: no token named 'nope' (see `sweepd token list`)"),
])
def test_errors_are_one_line(db_url, args, message):
    assert sweepd(db_url, "create", "ci").exit_code == 0
    assert one_line_error(sweepd(db_url, *args)).startswith(message)
