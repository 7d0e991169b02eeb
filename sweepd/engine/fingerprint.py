"""A sweep's fingerprint: what makes two sweeps' results comparable, so that a later sweep may
start from an earlier one (``search.warm_start``, sweepd/engine/warm_start.py).

Three parts, hashed together (sha256, hex):

- the model: its path as validated (absolute), or the builtin's name (``builtin:tiny``);
- the data: sha256 over the train files' bytes, then the eval files' bytes, in the spec's order
  (each file's own digest and length go in, so moving bytes between files changes it). Files are
  read in 1 MiB chunks, and a file's digest is cached by (real path, size, mtime): hashing the
  same unchanged files again costs a ``stat`` each;
- the objective: metric and mode;
- for a replay sweep (``builtin:replay``, which reads no data), the curves file's sha256.

The search space, budget, pruner and seed are not part of it: they are what a sweep varies.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

CHUNK = 1 << 20
_CACHE_SIZE = 4096
_cache: OrderedDict[tuple[str, int, int], str] = OrderedDict()
_lock = threading.Lock()


def file_digest(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file's bytes, streamed; cached by (real path, size, mtime_ns)."""
    real = os.path.realpath(path)
    st = os.stat(real)
    key = (real, st.st_size, st.st_mtime_ns)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    h = hashlib.sha256()
    with open(real, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    digest = h.hexdigest()
    with _lock:
        _cache[key] = digest
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return digest


def data_hash(train: Iterable[str | os.PathLike], eval: Iterable[str | os.PathLike] = ()) -> str:
    """sha256 (hex) over the train files' contents, then the eval files': a file's place in
    the list and which list it is in both count."""
    h = hashlib.sha256()
    for section, paths in (("train", train), ("eval", eval)):
        for path in paths:
            h.update(f"{section}:{os.path.getsize(path)}:{file_digest(path)}\n".encode())
    return h.hexdigest()


def fingerprint_parts(spec: Any) -> dict[str, Any]:
    """The parts of a spec's fingerprint (``spec``: a ``SweepSpec``); OSError when a data file
    cannot be read."""
    parts = {
        "model": spec.model.path,
        "data": data_hash([f.path for f in spec.data.train], [f.path for f in spec.data.eval]),
        "objective": {"metric": spec.objective.metric, "mode": spec.objective.mode},
    }
    replay = getattr(spec.model, "replay", None)
    if replay is not None:  # builtin:replay reads no data: its curves are what it trains on
        parts["curves"] = file_digest(replay.curves_path())
    return parts


def fingerprint(spec: Any) -> str | None:
    """The spec's fingerprint (64 hex digits), or None when a data file cannot be read (such a
    sweep has no comparable history)."""
    try:
        parts = fingerprint_parts(spec)
    except OSError:
        return None
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
