"""Packaging beyond what pyproject.toml can say: a wheel carries the Alembic migrations.

The migration scripts live in ``migrations/`` at the repository root (the layout DESIGN.md
gives), outside every package. A source checkout (``pip install -e .``, the Makefile, the
images) reads them there; ``build_py`` also copies them into the built package as
``sweepd/store/_migrations/`` so that a plain ``pip install .`` or a wheel can migrate its
database too (``sweepd.store.migrate`` looks in both places).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithMigrations(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return  # an editable install reads migrations/ in place
        target = Path(self.build_lib) / "sweepd" / "store" / "_migrations"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(ROOT / "migrations", target,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildPyWithMigrations})
