"""The `sweepd` command line.

Add a command with ``@app.command()``, or a group with ``app.add_typer(sub, name=...)``.
Import heavy modules (Ray, torch, the API) inside the command functions, so that
`sweepd --help` and `sweepd db upgrade` stay fast.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

app = typer.Typer(
    name="sweepd",
    help="Hyperparameter sweeps for supervised fine-tuning of small LLMs.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _main() -> None:
    """Hyperparameter sweeps for supervised fine-tuning of small LLMs."""


db_app = typer.Typer(help="The database schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")

UrlOption = Annotated[
    Optional[str],
    typer.Option(
        "--url",
        help="SQLAlchemy URL; default: SWEEPD_DATABASE_URL, else the SQLite file under SWEEPD_HOME.",
        show_default=False,
    ),
]


def _url(url: str | None) -> str:
    from sweepd.store.db import default_url

    return url or default_url()


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@db_app.command("upgrade")
def db_upgrade(
    url: UrlOption = None,
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Create or upgrade the database schema (idempotent), and Optuna's tables in it, if any."""
    from sweepd.store.migrate import current_revision, upgrade
    from sweepd.store.optuna_schema import upgrade_optuna_tables

    target = _url(url)
    before = current_revision(target)
    upgrade(target, revision)
    after = current_revision(target)
    if before == after:
        typer.echo(f"{_safe(target)}: already at {after}")
    else:
        typer.echo(f"{_safe(target)}: upgraded {before or '(empty)'} -> {after}")
    if optuna := upgrade_optuna_tables(target):
        was, now = optuna
        typer.echo(f"  Optuna's tables: already at {now}" if was == now else f"  Optuna's tables: upgraded {was} -> {now}")


@db_app.command("current")
def db_current(url: UrlOption = None) -> None:
    """Print the database's schema revision and whether it is the newest."""
    from sweepd.store.migrate import current_revision, head_revision

    target = _url(url)
    cur, head = current_revision(target), head_revision()
    state = "up to date" if cur == head else f"behind (head is {head}; run `sweepd db upgrade`)"
    typer.echo(f"{_safe(target)}: {cur or '(empty)'} {state}")
    if cur != head:
        raise typer.Exit(1)


from sweepd.cli import remote, serve, sweeps, tokens  # noqa: E402

sweeps.register(app)
remote.register(app)
tokens.register(app)
serve.register(app)
from sweepd.cli import extend; extend.register(app)  # noqa: E402,E702
from sweepd.cli import priority; priority.register(app)  # noqa: E402,E702


def main() -> None:  # `python -m sweepd.cli` (sweepd/cli/__main__.py)
    app()
