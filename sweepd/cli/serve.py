"""`sweepd serve`: the REST API, the dashboard and the supervisor in one process.

The app itself is composed in the api package (api/service.py: sweepd never imports api); this
command checks its options, migrates the database and hands uvicorn the app by import string.
Options not given come from the settings (SWEEPD_HOST, SWEEPD_PORT, SWEEPD_MAX_SWEEPS,
SWEEPD_SUPERVISE); the ones given reach the app through the same variables.
"""

from __future__ import annotations

import logging
import os
from typing import Annotated, Optional

import typer

SERVICE_APP = "api.service:create_service_app"


def serve(
    host: Annotated[Optional[str], typer.Option(
        help="Address to bind; only loopback unless reads need a token.",
        show_default="SWEEPD_HOST, else 127.0.0.1")] = None,
    port: Annotated[Optional[int], typer.Option(
        help="Port to listen on.", show_default="SWEEPD_PORT, else 8080")] = None,
    max_sweeps: Annotated[Optional[int], typer.Option(
        help="Sweeps run at once.", show_default="SWEEPD_MAX_SWEEPS, else 4")] = None,
    supervise: Annotated[Optional[bool], typer.Option(
        "--supervise/--no-supervise", help="Run queued sweeps.", show_default="SWEEPD_SUPERVISE, else on")] = None,
) -> None:
    """Serve the REST API and dashboard, and run the queued sweeps."""
    from sweepd.settings import get_settings, is_loopback

    settings = get_settings()
    host = settings.host if host is None else host
    port = settings.port if port is None else port
    max_sweeps = settings.max_sweeps if max_sweeps is None else max_sweeps
    supervise = settings.supervise if supervise is None else supervise
    if not is_loopback(host) and settings.public_read:
        typer.echo(f"refusing to bind {host}: SWEEPD_PUBLIC_READ=1 turns authentication off for reads; "
                   "bind 127.0.0.1, or unset SWEEPD_PUBLIC_READ", err=True)
        raise typer.Exit(2)
    if not is_loopback(host) and not settings.data_roots:
        # the default data roots are the working directory and SWEEPD_HOME: started from / or
        # $HOME, that is every file the server can read, offered to anyone who can reach it
        typer.echo(f"refusing to bind {host}: set SWEEPD_DATA_ROOTS to the folders sweeps may read "
                   "(e.g. /models:/data); the default, the working directory, is for a server on 127.0.0.1",
                   err=True)
        raise typer.Exit(2)
    if max_sweeps < 1:
        typer.echo(f"--max-sweeps must be at least 1, got {max_sweeps}", err=True)
        raise typer.Exit(2)
    if not 0 <= port <= 65535:
        typer.echo(f"--port must be 0..65535, got {port}", err=True)
        raise typer.Exit(2)

    import uvicorn

    from sweepd.store.migrate import upgrade
    from sweepd.store.optuna_schema import upgrade_optuna_tables

    # the app reads its settings afresh when uvicorn builds it (api/service.py)
    os.environ["SWEEPD_MAX_SWEEPS"] = str(max_sweeps)
    os.environ["SWEEPD_SUPERVISE"] = "1" if supervise else "0"
    os.environ["SWEEPD_HOST"] = host  # the Host allow-list follows the address actually bound
    get_settings.cache_clear()

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings.home.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    upgrade_optuna_tables(settings.resolved_database_url)  # its drivers open their studies there
    typer.echo(f"sweepd serving on http://{host}:{port}/ (API under /api/v1, data in {settings.home})", err=True)
    uvicorn.run(SERVICE_APP, factory=True, host=host, port=port, log_level="warning")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
