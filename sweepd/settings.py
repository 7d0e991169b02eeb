"""Settings from the environment, prefix SWEEPD_ (pydantic-settings).

SWEEPD_HOME         artifacts, Ray storage, the default SQLite file (default: ./.sweepd)
SWEEPD_DATABASE_URL SQLAlchemy URL (default: sqlite:///$SWEEPD_HOME/sweepd.db). Its password stays in
                    the environment: Ray gets the URL without it, and connections fill it in from
                    here (sweepd/store/db.py, public_url)
SWEEPD_RAY_ADDRESS  a Ray cluster to run on; unset means a local Ray started on demand
SWEEPD_DATA_ROOTS   os.pathsep-separated folders that spec data and model paths must resolve inside
                    (default: the current directory and SWEEPD_HOME)
SWEEPD_PUBLIC_READ  1: the API's read routes need no token (writes always do)
SWEEPD_MAX_BODY_BYTES  largest request body the API accepts (default 1 MiB; larger: 413)
SWEEPD_HOST, SWEEPD_PORT  where `sweepd serve` listens (default 127.0.0.1:8080; --host/--port win)
SWEEPD_MAX_SWEEPS   sweeps `sweepd serve` runs at once, sharing its one Ray (default 4; --max-sweeps wins)
SWEEPD_SUPERVISE    0: `sweepd serve` runs no sweeps, API and dashboard only (default 1; --[no-]supervise wins)
SWEEPD_ALLOWED_HOSTS  comma-separated Host header names the server answers (default: the loopback
                    names when it listens on loopback, which stops DNS rebinding; any otherwise)
"""

from __future__ import annotations

import ipaddress
import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from typing import Annotated


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SWEEPD_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.cwd() / ".sweepd")
    database_url: str | None = None
    ray_address: str | None = None
    data_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    public_read: bool = False
    max_body_bytes: int = Field(default=1024 * 1024, ge=1)
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # `sweepd serve` sets these two from its options before uvicorn builds the app (api/service.py)
    max_sweeps: int = 4  # they share one Ray cluster fairly (sweepd/service/shares.py)
    supervise: bool = True
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, v: object) -> object:
        if isinstance(v, str):
            return [h.strip() for h in v.split(",") if h.strip()]
        return v

    @property
    def resolved_allowed_hosts(self) -> list[str]:
        """Host names the API answers. A server on loopback answers only loopback names, so a web
        page whose DNS name rebinds to 127.0.0.1 cannot read it (public reads included)."""
        if self.allowed_hosts:
            return self.allowed_hosts
        return sorted(LOOPBACK_NAMES) if is_loopback(self.host) else ["*"]

    @field_validator("data_roots", mode="before")
    @classmethod
    def _split_roots(cls, v: object) -> object:
        if isinstance(v, str):
            return [p for p in v.split(os.pathsep) if p.strip()]
        return v

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'sweepd.db').resolve()}"

    @property
    def resolved_data_roots(self) -> list[Path]:
        roots = self.data_roots or [Path.cwd(), self.home]
        return [Path(r).expanduser().resolve() for r in roots]


LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
