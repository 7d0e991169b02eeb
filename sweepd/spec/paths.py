"""Data and model paths: relative ones start in the context's ``base_dir``; with
``check_paths`` each must exist and, symlinks followed, lie inside one of the data roots. A model
path that is a Hugging Face Hub name and no folder here resolves to its snapshot in the local
cache (trainer/hub.py), and the data-roots rule applies to that folder."""

from __future__ import annotations

import os
from pathlib import Path

from sweepd.spec.capacity import Context
from sweepd.spec.errors import Problem
from trainer.hub import ModelNotCached, is_hub_name, resolve_hub_model


def resolve_path(label: str, raw: str, want: str, ctx: Context) -> tuple[str | None, Problem | None]:
    """(the absolute path to use, None), or (None, why it cannot be used at ``label``).
    ``want``: "file" (a data file) or "dir" (a Hugging Face model folder)."""
    p = Path(raw).expanduser()
    if not p.is_absolute():
        p = ctx.base() / p
    if want == "dir" and not p.exists() and is_hub_name(raw):  # a Hub name: its snapshot in the local cache
        try:
            p = Path(resolve_hub_model(raw, label, local=str(p)))
        except ModelNotCached as err:
            if not ctx.check_paths:  # the trainer resolves it where it runs
                return raw, None
            return None, (label, str(err).removeprefix(f"{label}: "))
    if not ctx.check_paths:
        return os.path.abspath(p), None
    try:
        resolved = p.resolve()  # symlinks followed: the place the trainer would really read
    except (OSError, RuntimeError) as err:
        return None, (label, f"cannot resolve {raw!r}: {err}")
    roots = ctx.roots()
    if not any(resolved == r or resolved.is_relative_to(r) for r in roots):
        return None, (label, f"{raw!r} resolves to {resolved}, outside the data roots "
                             f"({', '.join(map(str, roots))}); see SWEEPD_DATA_ROOTS")
    if not resolved.exists():
        return None, (label, f"{raw!r} does not exist (resolved: {resolved})")
    if want == "file" and not resolved.is_file():
        return None, (label, f"{raw!r} is not a file (resolved: {resolved})")
    if want == "dir":
        if not resolved.is_dir():
            return None, (label, f"{raw!r} is not a directory: use builtin:tiny or a local Hugging Face model folder")
        if not (resolved / "config.json").is_file():
            return None, (label, f"{raw!r} has no config.json: not a Hugging Face model folder")
    return str(resolved), None
