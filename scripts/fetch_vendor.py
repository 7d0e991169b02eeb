#!/usr/bin/env python3
"""Fetch the dashboard's browser libraries from the npm registry (build time, stdlib only).

Reads api/dashboard/vendor.lock.json: for each package, the pinned version, its tarball URL and
the registry's sha512 `integrity`. Downloads the tarball, refuses it unless its sha512 matches,
and extracts the listed files into api/dashboard/static/vendor/ (git-ignored; the app serves
them at /static/vendor/<name>). Files already there with the pinned version are left alone.

    python3 scripts/fetch_vendor.py            # what `make setup` runs
    python3 scripts/fetch_vendor.py --force    # download again

SWEEPD_NPM_REGISTRY=https://mirror.example/npm/ replaces https://registry.npmjs.org/ in the
tarball URLs (a mirror or a proxy); the integrity check is the same.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import sys
import tarfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "api" / "dashboard" / "vendor.lock.json"
DEST = ROOT / "api" / "dashboard" / "static" / "vendor"
REGISTRY = "https://registry.npmjs.org/"


def _check_integrity(data: bytes, integrity: str, what: str) -> None:
    algo, _, expected = integrity.partition("-")
    if algo != "sha512" or not expected:
        raise SystemExit(f"fetch_vendor: {what}: only sha512 integrity is accepted, got {integrity!r}")
    got = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if got != expected:
        raise SystemExit(f"fetch_vendor: {what}: sha512 mismatch (expected {expected}, got {got}); "
                         "refusing the download")


def _download(url: str) -> bytes:
    mirror = os.environ.get("SWEEPD_NPM_REGISTRY")
    if mirror and url.startswith(REGISTRY):
        url = mirror.rstrip("/") + "/" + url[len(REGISTRY):]
    try:
        with urllib.request.urlopen(url, timeout=60) as r:  # noqa: S310 (a pinned https URL)
            return r.read()
    except OSError as exc:
        raise SystemExit(f"fetch_vendor: cannot download {url}: {exc}") from exc


def fetch(name: str, pkg: dict, dest: Path, force: bool) -> None:
    version = pkg["version"]
    stamp = dest / f".{name}.version"
    targets = [dest / out for out in pkg["files"].values()]
    if not force and stamp.is_file() and stamp.read_text().strip() == f"{version} {pkg['integrity']}" \
            and all(p.is_file() for p in targets):
        print(f"fetch_vendor: {name} {version} already in {dest.relative_to(ROOT)}")
        return
    data = _download(pkg["tarball"])
    _check_integrity(data, pkg["integrity"], f"{name}@{version}")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member_name, out in pkg["files"].items():
            member = tar.getmember(member_name)  # KeyError: the lock names a file the package lacks
            if not member.isfile():
                raise SystemExit(f"fetch_vendor: {name}@{version}: {member_name} is not a file")
            body = tar.extractfile(member).read()  # read by name: no path from the archive is used
            tmp = dest / f".{out}.tmp"
            tmp.write_bytes(body)
            tmp.replace(dest / out)
    stamp.write_text(f"{version} {pkg['integrity']}\n")
    print(f"fetch_vendor: {name} {version} -> {dest.relative_to(ROOT)}: "
          + ", ".join(pkg["files"].values()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--force", action="store_true", help="download even when the files are there")
    ap.add_argument("--dest", type=Path, default=DEST, help=argparse.SUPPRESS)
    args = ap.parse_args()
    lock = json.loads(LOCK.read_text())
    args.dest.mkdir(parents=True, exist_ok=True)
    for name, pkg in lock["packages"].items():
        fetch(name, pkg, args.dest, args.force)


if __name__ == "__main__":
    sys.exit(main())
