"""A throwaway PostgreSQL server for one benchmark part (scripts/postgres.sh), stopped and removed after.

``with_postgres(fn, log)`` returns ``fn(server)``, or ``{"skipped": why}`` when no server starts
here (no PostgreSQL installed: the benchmark goes on with SQLite's figures). ``server.url`` is the
server's default database; ``server.pids()`` its postmaster, for benchmarks that count the
server's CPU as their own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "scripts" / "postgres.sh")


@dataclass
class Server:
    url: str
    folder: Path

    def pids(self) -> list[int]:
        try:
            return [int((self.folder / "data" / "postmaster.pid").read_text().split()[0])]
        except (OSError, ValueError, IndexError):
            return []


def with_postgres(fn: Callable[[Server], dict[str, Any]], log: Callable[[str], None]) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="sweepd-bench-pg-"))
    folder.chmod(0o755)  # readable by the `postgres` user that runs the server when we are root
    env = dict(os.environ, SWEEPD_PG_DIR=str(folder))
    started = subprocess.run(["bash", SCRIPT, "start"], env=env, text=True, capture_output=True, timeout=600)
    if started.returncode != 0:
        log(f"postgresql: could not start a throwaway server, skipped:\n{started.stderr[-1500:]}")
        shutil.rmtree(folder, ignore_errors=True)
        return {"skipped": started.stderr[-1500:]}
    try:
        return fn(Server(started.stdout.strip().splitlines()[-1], folder))
    finally:
        subprocess.run(["bash", SCRIPT, "stop"], env=env, text=True, capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)
