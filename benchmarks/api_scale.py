"""API at scale (#15): POST /sweeps with a megabyte of spec, and GET /sweeps with 1,000 sweeps stored.

For each backend (SQLite, and PostgreSQL from scripts/postgres.sh unless `--no-postgres`), a fresh
database gets `--sweeps` (1,000) sweeps through the store repository (`repo.create_sweep`, each a
validated spec as the API stores it, with 3 trials: a third of the sweeps running with completed
trials, so the best trial is computed live, a third finished with a stored best trial, a third
queued), then `sweepd serve --no-supervise` serves it (a subprocess, 127.0.0.1; the benchmark waits
until its start-up work, the preflight's torch import, is done) and is timed from this process over
one keep-alive connection:

1. GET /api/v1/sweeps (the default page of 50), `--list-requests` (50) times after 5 warm-ups;
   target p95 < 50 ms. Also a page of 200 (the largest).
2. POST /api/v1/sweeps, `--post-requests` (20) times each: a valid spec padded to ~1 MiB with a
   long choice list (as YAML and as the same document in JSON: each makes a sweep), and an
   invalid one padded to ~1 MiB with unknown keys (YAML; a 422 listing the problems).
3. GET /api/v1/sweeps again, now that the newest page holds the 2 x 20 megabyte-spec sweeps: the
   list reads a few fields of each spec, never whole specs.

Also, in this process: what rebuilding a stored spec (`SweepSpec.from_stored`, which every read of
a sweep did before #15) costs for a small spec and for the megabyte one, i.e. what a page of 50
would pay on top if reads still validated.

Printed, and written to benchmarks/results/api_scale.json. The machine is shared: the load average
is printed before and after. A benchmark, not a test: it asserts nothing.

Run: `make bench`, or `.venv/bin/python benchmarks/api_scale.py [--sweeps 1000] [--list-requests 50]
[--post-requests 20] [--no-postgres] [--keep] [--out FILE]`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import httpx  # noqa: E402
import yaml  # noqa: E402

from benchmarks.throwaway_postgres import with_postgres  # noqa: E402
from api_load import (  # noqa: E402
    CLK_TCK, NCPU, _proc_stat, fmt_ms, free_port, loadavg, log, note, start_serve, stop_process, summary)

API = "/api/v1"
TARGET_LIST_P95_MS = 50.0
MIB = 1024 * 1024
LINE = '{"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}\n'


def base_spec(data: Path, name: str = "scale") -> dict[str, Any]:
    return {
        "name": name, "model": {"path": "builtin:tiny"},
        "data": {"train": [{"path": str(data / "train.jsonl")}], "eval": [{"path": str(data / "eval.jsonl")}]},
        "search": {"algorithm": "random", "num_trials": 8, "seed": 0,
                   "space": {"learning_rate": {"loguniform": [1e-5, 1e-3]}, "effective_batch_size": {"choice": [8, 16]}}},
        "budget": {"max_samples": 1024},
        "pruner": {"type": "asha", "signal": "grad_norm", "grace": 64, "reduction_factor": 2, "window": 3},
        "objective": {"metric": "eval_loss", "mode": "min"},
    }  # fmt: skip


def padded_valid(data: Path, size: int = MIB - 4096) -> dict[str, Any]:
    """A valid spec whose learning_rate choice list makes its YAML just under ``size`` bytes."""
    doc = base_spec(data, "big-valid")
    n = 1000
    while True:
        doc["search"]["space"]["learning_rate"] = {"choice": [1e-5 + i * 1e-11 for i in range(n)]}
        length = len(yaml.safe_dump(doc, sort_keys=False))
        per_item = length / n
        if length > size or size - length < 2 * per_item:
            n = int(n - max(1, (length - size) / per_item + 1)) if length > size else n
            doc["search"]["space"]["learning_rate"] = {"choice": [1e-5 + i * 1e-11 for i in range(n)]}
            return doc
        n = int(n + (size - length) / per_item * 0.98)


def padded_invalid(data: Path, size: int = MIB - 4096) -> str:
    """A spec padded with unknown keys to about ``size`` bytes of YAML."""
    text = yaml.safe_dump(base_spec(data, "big-invalid"), sort_keys=False)
    n = (size - len(text)) // len("unknown_key_0000000: 0000000\n")
    return text + "".join(f"unknown_key_{i:07d}: {i:07d}\n" for i in range(n))


def seed(url: str, data: Path, n: int) -> dict[str, Any]:
    """``n`` sweeps with 3 trials each through the repository; returns a token and timings."""
    from sweepd.spec import Capacity, parse_spec
    from sweepd.store import make_engine, repo, session_scope, upgrade

    t0 = time.perf_counter()
    upgrade(url)
    stored = parse_spec(base_spec(data), data_roots=[data], capacity=Capacity.unlimited()).to_stored()
    engine = make_engine(url)
    try:
        with session_scope(engine) as s:
            _, token = repo.create_token(s, "bench", scope="read")
        for start in range(0, n, 100):
            with session_scope(engine) as s:
                for i in range(start, min(n, start + 100)):
                    sweep = repo.create_sweep(s, name=f"sweep-{i:04d}", spec={**stored, "name": f"sweep-{i:04d}"})
                    kind = i % 3
                    if kind:
                        repo.set_sweep_state(s, sweep.id, "running")
                    for k in range(3 if kind else 0):
                        repo.upsert_trial(s, sweep.id, k, state="completed", objective=1.0 + (i * 7 + k * 3) % 11 / 10,
                                          config={"learning_rate": 1e-4, "effective_batch_size": 8}, samples=1024)
                    if kind == 2:
                        repo.set_best_trial(s, sweep.id, repo.trial_id_for(sweep.id, 0))
                        repo.set_sweep_state(s, sweep.id, "succeeded")
    finally:
        engine.dispose()
    return {"token": token, "seed_s": round(time.perf_counter() - t0, 1)}


def wait_idle(pid: int, timeout: float = 90.0) -> float:
    """Seconds until the server process has stopped working after its start (it imports torch and
    transformers in a thread for the data preflight: ~10 s here, while requests are twice as
    slow); idle = under 5% of a core for a second."""
    t0 = time.monotonic()
    last = _proc_stat(pid)
    while last is not None and time.monotonic() - t0 < timeout:
        time.sleep(1.0)
        now = _proc_stat(pid)
        if now is None or (now[1] - last[1]) / CLK_TCK < 0.05:
            break
        last = now
    return round(time.monotonic() - t0, 1)


def timed(client: httpx.Client, n: int, method: str, path: str, expect: int, **kw: Any) -> tuple[list[float], int]:
    """``n`` requests one after another: their latencies (s) and how many answered otherwise."""
    out, wrong = [], 0
    for _ in range(n):
        t = time.perf_counter()
        r = client.request(method, path, **kw)
        out.append(time.perf_counter() - t)
        wrong += r.status_code != expect
    return out, wrong


def measure(name: str, url: str, args: argparse.Namespace, tmp: Path, data: Path) -> dict[str, Any]:
    note(f"{name}: seeding {args.sweeps} sweeps")
    seeded = seed(url, data, args.sweeps)
    log(f"{name}: {args.sweeps:,} sweeps x 3 trials stored through the repository in {seeded['seed_s']:.0f} s")
    home = tmp / f"home-{name}"
    env = dict(os.environ, SWEEPD_HOME=str(home), SWEEPD_DATABASE_URL=url, SWEEPD_DATA_ROOTS=str(data),
               PYTHONUNBUFFERED="1")
    env.pop("SWEEPD_PUBLIC_READ", None)
    port = free_port()
    proc = start_serve(env, port, tmp / f"serve-{name}.log", "--no-supervise")
    writer = None
    out: dict[str, Any] = {"seed_s": seeded["seed_s"]}
    try:
        out["server_warm_up_s"] = wait_idle(proc.pid)
        from sweepd.store import make_engine, repo, session_scope

        engine = make_engine(url)
        with session_scope(engine) as s:
            _, writer = repo.create_token(s, "bench-writer", scope="write")
        engine.dispose()
        headers = {"Authorization": f"Bearer {seeded['token']}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=120) as c:
            timed(c, 5, "GET", f"{API}/sweeps", 200)
            page = c.get(f"{API}/sweeps").json()
            out["list_total"] = page["total"]
            lat, wrong = timed(c, args.list_requests, "GET", f"{API}/sweeps", 200)
            out["list_50"] = {**summary(lat), "errors": wrong, "bytes": len(c.get(f"{API}/sweeps").content)}
            lat, wrong = timed(c, max(5, args.list_requests // 2), "GET", f"{API}/sweeps", 200, params={"limit": 200})
            out["list_200"] = {**summary(lat), "errors": wrong}

            write = {"Authorization": f"Bearer {writer}"}
            valid = padded_valid(data)
            bodies = {
                "valid_yaml": (yaml.safe_dump(valid, sort_keys=False).encode(), "application/yaml", 201),
                "valid_json": (json.dumps(valid).encode(), "application/json", 201),
                "invalid_yaml": (padded_invalid(data).encode(), "application/yaml", 422),
            }
            for key, (content, media, expect) in bodies.items():
                lat, wrong = timed(c, args.post_requests, "POST", f"{API}/sweeps", expect, content=content,
                                   headers={**write, "Content-Type": media})
                out[f"post_{key}"] = {**summary(lat), "errors": wrong, "bytes": len(content)}
            lat, wrong = timed(c, args.list_requests, "GET", f"{API}/sweeps", 200)
            out["list_50_with_big_specs"] = {**summary(lat), "errors": wrong,
                                             "big_on_page": min(50, 2 * args.post_requests)}
    finally:
        stop_process(proc)
    out["target_met"] = out["list_50"]["p95_ms"] < TARGET_LIST_P95_MS
    for key in ("list_50", "list_200", "post_valid_yaml", "post_valid_json", "post_invalid_yaml",
                "list_50_with_big_specs"):
        r = out[key]
        if not r.get("n"):
            continue
        size = f" ({r['bytes']:,} bytes)" if "bytes" in r and key.startswith("post") else ""
        log(f"  {key:24s}{size:20s} n={r['n']:3d}  p50 {fmt_ms(r['p50_ms']):>9s}  p95 {fmt_ms(r['p95_ms']):>9s}  "
            f"max {fmt_ms(r['max_ms']):>9s}  {r['errors']} unexpected statuses")
    return out


def revalidation_cost(data: Path) -> dict[str, float]:
    """What ``SweepSpec.from_stored`` costs per stored spec (what each read of a sweep paid)."""
    from sweepd.spec import Capacity, SweepSpec, parse_spec

    out = {}
    for key, doc in (("small_spec_ms", base_spec(data)), ("mib_spec_ms", padded_valid(data))):
        stored = parse_spec(doc, data_roots=[data], capacity=Capacity.unlimited()).to_stored()
        n = 200 if key.startswith("small") else 5
        t = time.perf_counter()
        for _ in range(n):
            SweepSpec.from_stored(stored)
        out[key] = round(1000 * (time.perf_counter() - t) / n, 3)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sweeps", type=int, default=1000)
    ap.add_argument("--list-requests", type=int, default=50)
    ap.add_argument("--post-requests", type=int, default=20)
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder (service logs, SQLite file)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "api_scale.json")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="sweepd-api-scale-"))
    data = tmp / "data"
    data.mkdir()
    (data / "train.jsonl").write_text(LINE * 8)
    (data / "eval.jsonl").write_text(LINE * 4)
    doc: dict[str, Any] = {
        "benchmark": "api_scale", "argv": sys.argv[1:], "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": NCPU, "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_start": loadavg()},
        "target_list_p95_ms": TARGET_LIST_P95_MS, "sweeps": args.sweeps,
    }
    log(f"== API at scale: {args.sweeps:,} sweeps; POST of ~1 MiB specs ({NCPU} cores, load {loadavg()}) ==")
    try:
        doc["revalidation"] = revalidation_cost(data)
        log(f"SweepSpec.from_stored per stored spec (what every read paid before #15): "
            f"{doc['revalidation']['small_spec_ms']:.2f} ms small, {doc['revalidation']['mib_spec_ms']:.0f} ms for 1 MiB")
        log("sqlite:")
        doc["sqlite"] = measure("sqlite", f"sqlite:///{tmp / 'scale.db'}", args, tmp, data)
        if not args.no_postgres:
            log("postgresql:")
            doc["postgresql"] = with_postgres(lambda pg: measure("postgresql", pg.url, args, tmp, data), log)
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    doc["machine"]["load_average_end"] = loadavg()
    doc["total_s"] = round(time.perf_counter() - t0, 1)
    met = all(doc[b]["target_met"] for b in ("sqlite", "postgresql") if b in doc and "target_met" in doc[b])
    log(f"== summary: GET {API}/sweeps p95 (50 of {args.sweeps:,}): "
        + ", ".join(f"{b} {fmt_ms(doc[b]['list_50']['p95_ms'])}" for b in ("sqlite", "postgresql")
                    if b in doc and "list_50" in doc[b])
        + f" (target < {TARGET_LIST_P95_MS:.0f} ms: {'met' if met else 'NOT met'}); "
        + f"load average {doc['machine']['load_average_start']} -> {doc['machine']['load_average_end']}; "
        + f"{doc['total_s']:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    log(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
