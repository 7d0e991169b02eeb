"""POST /sweeps with a cold data preflight (issue 14): how long the request takes now that the
tokenising pass runs off the request (the sweep answers `validating`, then becomes `queued`), how
long the preflight itself takes, how /healthz answers meanwhile, and what the request took before
(the old synchronous path: the spec's validation and the whole preflight inside the request).

The data is benchmarks/preflight.py's: the built-in synthetic train set repeated to `--samples`
lines (100,000: 24 MB, 13.3M tokens with builtin:tiny), in a temporary data root with a temporary
SQLite database and SWEEPD_HOME. The app is the real one (api.app.create_app) under Starlette's
TestClient; its preflight worker runs in its own thread. Measured:

- `post_seconds`: POST /sweeps, cold cache (answered `validating`);
- `validating_seconds`: from the POST to the sweep being `queued` (the preflight's wall time);
- `healthz_ms`: p50 / p95 / max of GET /healthz, one every 50 ms while that preflight runs, and
  the same with nothing running (`healthz_idle_ms`);
- `cached_post_seconds`: POST of the same data again (the cache hit: answered `queued`);
- `before_post_seconds`: the old request's critical path, timed in the same process on an empty
  cache: `body.validate_spec` then `trainer.preflight.preflight` (what POST did synchronously).

Run: `.venv/bin/python benchmarks/preflight_api.py` (about two cold preflights: ~2 minutes on a
loaded 2-CPU machine). Writes benchmarks/results/preflight_api.json. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"n": len(ordered), "p50": round(1000 * statistics.median(ordered), 1),
            "p95": round(1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
            "max": round(1000 * ordered[-1], 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "preflight_api.json"))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = tmp / "data"
        from trainer.synthetic import make_data

        make_data(root / "src", seed=0)
        lines = (root / "src" / "train.jsonl").read_bytes().splitlines(keepends=True)
        big = root / "train_big.jsonl"
        with open(big, "wb") as fh:
            for i in range(args.samples):
                fh.write(lines[i % len(lines)])
        os.environ.update(SWEEPD_HOME=str(tmp / "home"), SWEEPD_DATABASE_URL=f"sqlite:///{tmp / 'sweepd.db'}",
                          SWEEPD_DATA_ROOTS=str(root))
        from fastapi.testclient import TestClient

        from api import body
        from api.app import create_app
        from api.preflight import import_tokenizer_code
        from sweepd.settings import get_settings
        from sweepd.spec import Capacity
        from sweepd.store import repo, session_scope
        from trainer.preflight import load_chat_tokenizer, preflight

        get_settings.cache_clear()
        spec = {
            "name": "bench-preflight", "model": {"path": "builtin:tiny"},
            "data": {"train": [{"path": str(big)}], "eval": [{"path": str(root / "src" / "eval.jsonl")}],
                     "max_seq_len": 512},
            "search": {"algorithm": "random", "num_trials": 4, "seed": 0,
                       "space": {"learning_rate": {"loguniform": [1.0e-5, 1.0e-3]}}},
            "budget": {"max_samples": 1024},
        }  # fmt: skip
        app = create_app()
        with TestClient(app) as client:
            import_tokenizer_code()  # the startup's warm-up: done before a user would post
            with session_scope(app.state.sessionmaker) as s:
                _, token = repo.create_token(s, "bench")
            auth = {"Authorization": f"Bearer {token}"}
            idle = []
            for _ in range(40):
                t = time.perf_counter()
                client.get("/healthz")
                idle.append(time.perf_counter() - t)
                time.sleep(0.05)

            t0 = time.perf_counter()
            r = client.post("/api/v1/sweeps", json=spec, headers=auth)
            post_s = time.perf_counter() - t0
            assert r.status_code == 201, r.text
            sweep = r.json()
            future = app.state.preflight.futures[sweep["id"]]
            busy = []
            while not future.done():
                t = time.perf_counter()
                client.get("/healthz")
                busy.append(time.perf_counter() - t)
                time.sleep(0.05)
            validating_s = time.perf_counter() - t0
            final = client.get(f"/api/v1/sweeps/{sweep['id']}", headers=auth).json()

            t0 = time.perf_counter()
            again = client.post("/api/v1/sweeps", json={**spec, "name": "bench-again"}, headers=auth)
            cached_s = time.perf_counter() - t0

        # the old request: validate, then the whole preflight, synchronously (cache empty)
        settings = get_settings()
        t0 = time.perf_counter()
        parsed = body.validate_spec(spec, data_roots=settings.resolved_data_roots, capacity=Capacity.unlimited())
        report = preflight(parsed.data, parsed.model.path, cache_dir=tmp / "old-cache",
                           chat=load_chat_tokenizer("builtin:tiny"))
        before_s = time.perf_counter() - t0
        get_settings.cache_clear()

    result = {
        "samples": args.samples,
        "tokens_read": report["totals"]["tokens_read"],
        "post_seconds": round(post_s, 3),
        "post_state": sweep["state"],
        "validating_seconds": round(validating_s, 1),
        "final_state": final["state"],
        "healthz_ms": _ms(busy),
        "healthz_idle_ms": _ms(idle),
        "cached_post_seconds": round(cached_s, 3),
        "cached_post_state": again.json()["state"],
        "before_post_seconds": round(before_s, 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_1m": round(os.getloadavg()[0], 2)},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
