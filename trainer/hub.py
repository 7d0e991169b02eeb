"""Hugging Face Hub names as model paths (``Qwen/Qwen2.5-1.5B``), resolved offline to their
snapshot folder in the local Hugging Face cache. Never downloads. Light: no torch, so the spec
checks (sweepd/spec/paths.py) use it as well as the trainer (trainer/models.py)."""

from __future__ import annotations

import os
import re
from pathlib import Path

HUB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ModelNotCached(ValueError):
    """A Hub name that is not in the local cache; the message says how to put it there."""


def is_hub_name(path: str) -> bool:
    """``org/name`` as the Hub spells repositories (no leading ./ or /, no ..)."""
    return bool(HUB_NAME.match(path)) and ".." not in path


def hf_hub_cache() -> Path:
    """The local Hugging Face cache, read from the environment now, in huggingface_hub's order:
    HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, HF_HOME/hub, XDG_CACHE_HOME/huggingface/hub."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "huggingface" / "hub"


def resolve_hub_model(name: str, label: str = "model.path", local: str | None = None) -> str:
    """The snapshot folder of Hub model ``name`` in the local cache (the revision refs/main
    names), never downloading. Not there: ModelNotCached naming ``label`` and what to do
    (``local``: the folder the name would have been here, for the message)."""
    from huggingface_hub import snapshot_download

    cache = hf_hub_cache()
    try:
        return str(snapshot_download(name, cache_dir=str(cache), local_files_only=True))
    except Exception as err:  # noqa: BLE001 - not cached, a bad name, an unreadable cache
        raise ModelNotCached(
            f"{label}: {name!r} does not exist as a folder{f' (resolved: {local})' if local else ''} and is not "
            f"a model in the local Hugging Face cache ({cache}: {type(err).__name__}); sweepd never downloads. On a machine with internet run "
            f"`huggingface-cli download {name}`, then copy its Hugging Face cache (HF_HOME) here "
            f"or point HF_HOME at it") from None
