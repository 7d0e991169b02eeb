"""Routes of the dashboard: three page shells and their static files.

    GET /                          sweeps list (?limit=&offset= are passed on to the API call)
    GET /sweeps/{sweep_id}         one sweep, live while it runs
    GET /trials/{trial_id}         one trial
    GET /static/dashboard/{name}   the dashboard's JS modules and CSS
    GET /static/vendor/uPlot.iife.min.js, uPlot.min.css
                                   uPlot (the training curves), fetched from the npm registry at
                                   build time (`make setup`: scripts/fetch_vendor.py, pinned in
                                   vendor.lock.json) into static/vendor/
    GET /static/vendor/plotly.min.js   plotly.js (scatter, parallel coordinates), read from the
                                   installed plotly package

The pages carry no data: the browser reads the REST API with the user's bearer token (kept in
localStorage), so the same pages work with and without SWEEPD_PUBLIC_READ.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from fastapi.templating import Jinja2Templates

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
VENDOR_DIR = STATIC_DIR / "vendor"  # git-ignored: written by scripts/fetch_vendor.py
VENDOR_FILES = ("uPlot.iife.min.js", "uPlot.min.css")
templates = Jinja2Templates(directory=str(HERE / "templates"))

MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
DEFAULT_LIMIT = 20
MAX_LIMIT = 200

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes
    etag: str
    media_type: str


def _asset(path: Path) -> Asset:
    body = path.read_bytes()
    return Asset(
        body=body,
        gzipped=gzip.compress(body, compresslevel=6, mtime=0),
        etag='"' + hashlib.sha256(body).hexdigest()[:20] + '"',
        media_type=MEDIA_TYPES.get(path.suffix, "application/octet-stream"),
    )


def _static_files() -> dict[str, Path]:
    return {p.name: p for p in STATIC_DIR.iterdir() if p.suffix in MEDIA_TYPES}


@lru_cache(maxsize=None)
def _cached_asset(path: Path, mtime_ns: int) -> Asset:  # mtime in the key: edits are picked up
    return _asset(path)


def plotly_js_path() -> Path:
    import plotly

    path = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise RuntimeError(f"plotly.min.js is missing from the plotly package at {path}")
    return path


def _serve(request: Request, path: Path, cache_control: str) -> Response:
    asset = _cached_asset(path, path.stat().st_mtime_ns)
    headers = {"ETag": asset.etag, "Cache-Control": cache_control, "Vary": "Accept-Encoding"}
    if asset.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return Response(asset.gzipped, media_type=asset.media_type, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


def _page(request: Request, template: str, **context: object) -> HTMLResponse:
    return templates.TemplateResponse(
        request, template, context, headers={"Cache-Control": "no-cache"}
    )


@router.get("/", response_class=HTMLResponse)
def sweeps_page(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    offset: Annotated[int, Query(ge=0)] = 0,
    state: Annotated[str | None, Query(max_length=16)] = None,
) -> HTMLResponse:
    return _page(request, "list.html", limit=limit, offset=offset, state=state or "")


@router.get("/sweeps/{sweep_id}", response_class=HTMLResponse)
def sweep_page(request: Request, sweep_id: str) -> HTMLResponse:
    return _page(request, "sweep.html", sweep_id=sweep_id)


@router.get("/trials/{trial_id}", response_class=HTMLResponse)
def trial_page(request: Request, trial_id: str) -> HTMLResponse:
    return _page(request, "trial.html", trial_id=trial_id)


@router.get("/static/dashboard/{name}")
def dashboard_static(request: Request, name: str) -> Response:
    path = _static_files().get(name)  # only files that exist in static/, by exact name
    if path is None:
        raise HTTPException(status_code=404, detail=f"no dashboard file {name!r}")
    # Revalidated on every load (cheap with the ETag), so a new version is never stale.
    return _serve(request, path, "no-cache")


@router.get("/static/vendor/plotly.min.js")
def plotly_js(request: Request) -> Response:
    return _serve(request, plotly_js_path(), "public, max-age=86400")


def missing_vendor_files() -> list[str]:
    """The build-time vendor files that are not there (`make setup` fetches them)."""
    return [name for name in VENDOR_FILES if not (VENDOR_DIR / name).is_file()]


@router.get("/static/vendor/{name}")
def vendor_static(request: Request, name: str) -> Response:
    if name not in VENDOR_FILES:
        raise HTTPException(status_code=404, detail=f"no vendor file {name!r}")
    path = VENDOR_DIR / name
    if not path.is_file():
        # An install without the build step: say what to run, not a traceback.
        return PlainTextResponse(
            f"{name} is missing from {VENDOR_DIR}: it is fetched from the npm registry at build "
            "time. Run `make setup` (or `python3 scripts/fetch_vendor.py`) in the sweepd checkout "
            "and reload.\n",
            status_code=503,
            headers={"Cache-Control": "no-store"},
        )
    # Revalidated like the dashboard's own files: the ETag changes when the pinned version does.
    return _serve(request, path, "no-cache")
