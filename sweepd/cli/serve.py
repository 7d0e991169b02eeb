"""`sweepd serve`: the REST API, the dashboard and the supervisor in one process."""

from __future__ import annotations

import ipaddress
import logging
from typing import Annotated

import typer

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    host: Annotated[str, typer.Option(help="Address to bind; only loopback unless reads need a token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    max_sweeps: Annotated[int, typer.Option(help="Sweeps run at once.")] = 1,
    supervise: Annotated[bool, typer.Option("--supervise/--no-supervise", help="Run queued sweeps.")] = True,
) -> None:
    """Serve the REST API and dashboard, and run the queued sweeps."""
    import uvicorn

    from sweepd.settings import get_settings

    settings = get_settings()
    if not is_loopback(host) and settings.public_read:
        typer.echo(f"refusing to bind {host}: SWEEPD_PUBLIC_READ=1 turns authentication off for reads; "
                   "bind 127.0.0.1, or unset SWEEPD_PUBLIC_READ", err=True)
        raise typer.Exit(2)
    if max_sweeps < 1:
        typer.echo(f"--max-sweeps must be at least 1, got {max_sweeps}", err=True)
        raise typer.Exit(2)

    from api.app import create_app
    from api.dashboard import router as dashboard_router
    from api.dashboard.router import missing_vendor_files
    from sweepd.store.db import make_engine
    from sweepd.store.migrate import upgrade
    from sweepd.service.supervisor import Supervisor

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings.home.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    supervisor = None
    if supervise:
        supervisor = Supervisor(make_engine(settings.resolved_database_url), max_sweeps=max_sweeps,
                                log_dir=settings.home / "logs")
        supervisor.start()
    app = create_app(settings, extra_routers=[dashboard_router])
    typer.echo(f"sweepd serving on http://{host}:{port}/ (API under /api/v1, data in {settings.home})", err=True)
    if missing := missing_vendor_files():
        typer.echo(f"warning: the dashboard's charts need {', '.join(missing)}, fetched at build time: "
                   "run `make setup` (or `python3 scripts/fetch_vendor.py`); the API works without them", err=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        if supervisor:
            supervisor.stop()


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
