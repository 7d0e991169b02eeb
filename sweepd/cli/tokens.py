"""`sweepd token create|list|revoke`: API tokens in the local database (stored hashed). A
user's mistake (unknown name, bad scope or duration) is exit 1 with one line, no traceback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Optional

import typer

from sweepd.cli.remote import EXIT_FAILED, _die, _say

token_app = typer.Typer(help="API tokens for the REST API (stored hashed in the database).",
                        no_args_is_help=True)


TokenDbOption = Annotated[Optional[str], typer.Option(
    "--url", show_default=False,
    help="SQLAlchemy URL; default: SWEEPD_DATABASE_URL, else the SQLite file under SWEEPD_HOME.")]


@contextmanager
def _token_session(url: str | None) -> Iterator[Any]:
    """A session on the (migrated) database; a ValueError inside is exit 1 with its message."""
    from sweepd.store.db import default_url, make_engine, session_scope
    from sweepd.store.migrate import upgrade

    target = url or default_url()
    upgrade(target)
    engine = make_engine(target)
    try:
        with session_scope(engine) as s:
            yield s
    except ValueError as err:
        raise _die(EXIT_FAILED, f"error: {err}") from None
    finally:
        engine.dispose()


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else "-"


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="A name for the token, e.g. the CI job's.", show_default=False)],
    scope: Annotated[str, typer.Option(
        "--scope", help="read (GET only), write (also submit, cancel, extend) or admin (also manage tokens).")]
        = "write",
    expires_in: Annotated[Optional[str], typer.Option(
        "--expires-in", show_default=False,
        help="Expire after this long: 30d, 12h, 90m, 2w (s, m, h, d, w); default: never.")] = None,
    url: TokenDbOption = None,
) -> None:
    """Create a token and print it once (only its hash is stored): keep it as SWEEPD_TOKEN."""
    from sweepd.store import repo
    from sweepd.store.tokens import check_scope

    try:  # checked before the database is touched
        check_scope(scope)
        lifetime = repo.parse_duration(expires_in) if expires_in is not None else None
    except ValueError as err:
        raise _die(EXIT_FAILED, f"error: {err}") from None
    with _token_session(url) as s:
        token, plaintext = repo.create_token(s, name, scope=scope, expires_in=lifetime)
        expires = f"expires {_when(token.expires_at)}" if token.expires_at else "never expires"
    typer.echo(plaintext)
    _say(f"token {name.strip()!r} created (scope {scope}, {expires}); it is shown only this once "
         "(use it as SWEEPD_TOKEN)")


@token_app.command("list")
def token_list(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per token instead of a table.")] = False,
    url: TokenDbOption = None,
) -> None:
    """List the tokens: name, scope, state, created, expires, last used. Never a secret."""
    from sweepd.store import repo

    with _token_session(url) as s:
        rows = [{"name": t.name, "scope": t.scope, "state": repo.token_state(t), "created_at": t.created_at,
                 "expires_at": t.expires_at, "last_used_at": t.last_used_at, "revoked": t.revoked}
                for t in repo.list_tokens(s)]
    if as_json:
        for row in rows:
            typer.echo(json.dumps({k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in row.items()}))
        return
    if not rows:
        _say("no tokens yet; create one with `sweepd token create NAME`")
        return
    table = [("NAME", "SCOPE", "STATE", "CREATED", "EXPIRES", "LAST USED")] + [
        (r["name"], r["scope"], r["state"], _when(r["created_at"]),
         _when(r["expires_at"]) if r["expires_at"] else "never", _when(r["last_used_at"]) if r["last_used_at"] else "never")
        for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


@token_app.command("revoke")
def token_revoke(
    name: Annotated[str, typer.Argument(help="The token's name (`sweepd token list`).", show_default=False)],
    url: TokenDbOption = None,
) -> None:
    """Revoke a token: from now on the server answers it with a 401 saying it was revoked."""
    from sweepd.store import repo

    with _token_session(url) as s:
        token = repo.get_token(s, name)
        if token is None:
            raise ValueError(f"no token named {name!r} (see `sweepd token list`)")
        was_revoked = token.revoked
        repo.revoke_token(s, name)
    _say(f"token {name!r} was already revoked" if was_revoked else f"token {name!r} revoked")


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")
