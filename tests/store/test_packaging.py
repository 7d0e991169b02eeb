"""A wheel (``pip install .``, not editable) carries what the service needs outside the Python
modules: the Alembic migrations and the dashboard's vendored uPlot."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def build_wheel(out: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(REPO)],
        check=True, cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    [wheel] = out.glob("sweepd-*.whl")
    return wheel


def test_a_wheel_migrates_a_database_without_the_source_tree(tmp_path):
    wheel = build_wheel(tmp_path / "dist")
    names = set(zipfile.ZipFile(wheel).namelist())
    versions = sorted(p.name for p in (REPO / "migrations" / "versions").glob("*.py"))
    for name in ["env.py", "script.py.mako", *[f"versions/{v}" for v in versions]]:
        assert f"sweepd/store/_migrations/{name}" in names
    assert "api/dashboard/static/vendor/uPlot.iife.min.js" in names  # `make setup` fetched it

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    db = tmp_path / "wheel.db"
    script = (
        "import sweepd, sweepd.store.migrate as m\n"
        "assert sweepd.__file__.startswith(sys.argv[1]), sweepd.__file__\n"
        "print(m.MIGRATIONS_DIR)\n"
        "m.upgrade(sys.argv[2])\n"
        "print(m.current_revision(sys.argv[2]), m.head_revision())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, "-c", "import sys\n" + script, str(site), f"sqlite:///{db}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    where, revisions = proc.stdout.strip().splitlines()[-2:]
    assert where == str(site / "sweepd" / "store" / "_migrations")
    current, head = revisions.split()
    assert current == head
