"""Dashboard rendering: how long the sweep page takes to draw every trial's curves.

Seeds one sweep of `--trials` trials × `--steps` optimizer steps (default 500 × 2,000: a million
metric points) straight into a temp SQLite database through the store repository, serves the
real app (REST API + dashboard, SWEEPD_PUBLIC_READ=1) with uvicorn on 127.0.0.1, and opens the
sweep page in headless Chromium (Debian's chromium, via Playwright) `--runs` times, each in a
fresh browser context (cold cache: uPlot and plotly.js are fetched and compiled every time), and
once more in the same context each time (warm: what a person reloading the page gets).

The curves (loss and grad norm, one series per trial) are drawn with uPlot; plotly.js is loaded
only after them, for the scatter and parallel-coordinates views.

It prints, per run and as the median:
- curves drawn: navigation start -> `window.__sweepdRendered` (set by sweep.js once uPlot has
  drawn both curve charts, one series per trial, and the next frame is painted). The target is
  under 2 s for 500 × 2,000.
- all charts: navigation start -> the scatter and parallel-coordinates views drawn too.
- the curves call (GET /api/v1/sweeps/{id}/curves?max_points=N&fields=...): when it ran in the
  page, the N sweep.js chose (long curves are downsampled on the server: 200 points per trial,
  fewer when there are many trials, 50 for 500), its size as sent (gzip) and as JSON, the time
  the server takes to answer it, and the size the same data had in the old row form (an object
  with every field name per point).
- a live refresh (sweep, trials, curves and events fetched again, all four charts redrawn) once
  the same sweep is set running again.

Run: `.venv/bin/python benchmarks/dashboard_render.py [--trials 500] [--steps 2000] [--runs 3]`
(`--keep DIR`: seed into DIR and keep it, so that the next run with it skips the seeding).
A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.browser.support import (  # noqa: E402
    CHROMIUM,
    LiveServer,
    curve,
    demo_spec,
    ensure_chromium,
    launch_chromium,
)


def seed(db_url: str, n_trials: int, n_steps: int, state: str) -> str:
    """One sweep with n_trials trials of n_steps metric points each; its id."""
    from sweepd.engine.ledger import TrialCost, compute_ledger
    from sweepd.store import make_engine, repo, session_scope

    engine = make_engine(db_url)
    lrs = [1e-5 * (1000 ** (i / max(1, n_trials - 1))) for i in range(n_trials)]
    batches = [8, 16, 32, 64]
    with session_scope(engine) as s:
        spec = demo_spec(f"bench-{n_trials}x{n_steps}", num_trials=n_trials, budget={"max_samples": n_steps * 64})
        sweep_id = repo.create_sweep(s, name=spec["name"], spec=spec).id
        repo.set_sweep_state(s, sweep_id, "running")
    costs = []
    for n in range(n_trials):
        batch = batches[n % len(batches)]
        lr = lrs[(n * 7919) % n_trials]
        points = curve(range(1, n_steps + 1), batch=batch, lr=lr, seed=n)
        stopped = n % 3 == 2  # a third stopped by the pruner (their markers are drawn too)
        last = points[-1]
        with session_scope(engine) as s:
            reason = (f"stopped at {last['samples']:,} samples: grad norm {last['grad_norm']:.2f} is "
                      f"{n % 5 + 2}th of {n % 5 + 3} at this rung; the top 1 continues") if stopped else None
            trial = repo.upsert_trial(
                s, sweep_id, n,
                config={"effective_batch_size": batch, "learning_rate": lr, "warmup_steps": (0, 25, 100)[n % 3],
                        "lr_scheduler": ("constant", "cosine")[n % 2]},
                state="stopped" if stopped else "completed",
                objective=None if stopped else round(last["loss"] - 0.05, 4),
                stopped_at=float(last["samples"]) if stopped else None, reason=reason,
                samples=last["samples"], tokens=last["tokens"], seconds=last["seconds"], attempts=1,
            )
            repo.add_metric_points(s, trial.id, points)
            if stopped:
                repo.add_event(s, sweep_id, "decision", reason, trial_id=trial.id,
                               payload={"action": "stop", "trial_number": n})
        costs.append(TrialCost("stopped" if stopped else "completed", last["samples"], last["tokens"],
                               last["seconds"], n_steps * 64))
        if (n + 1) % 50 == 0:
            print(f"  seeded {n + 1}/{n_trials} trials", file=sys.stderr, flush=True)
    with session_scope(engine) as s:
        repo.update_ledger(s, sweep_id, compute_ledger(costs), replace=True)
        if state != "running":
            repo.set_sweep_state(s, sweep_id, state)
    engine.dispose()
    return sweep_id


MEASURE = """() => {
  const res = performance.getEntriesByType('resource');
  const r = res.find(e => e.name.includes('/api/v1/sweeps/') && e.name.includes('/curves?'));
  const up = res.find(e => e.name.includes('uPlot.iife.min.js'));
  const st = id => document.getElementById(id).__sweepd;
  const lines = id => { const c = st(id); return c && c.u ? c.u.series.filter((s, i) => i > 0 && s.label.startsWith('trial ')).length : 0; };
  return {
    rendered_ms: window.__sweepdRenderedAt,
    all_ms: window.__sweepdAllRenderedAt,
    curves_url: r ? r.name : null,
    curves_ms: r ? r.duration : null,
    curves_start_ms: r ? r.startTime : null,
    curves_end_ms: r ? r.responseEnd : null,
    curves_bytes: r ? r.encodedBodySize : null,
    max_points: r ? Number(new URL(r.name).searchParams.get('max_points')) : null,
    data_ms: (performance.getEntriesByName('sweepd:data-loaded')[0] || {}).startTime,
    uplot_ms: up ? up.responseEnd : null,
    plotly_ms: (performance.getEntriesByName('sweepd:plotly-loaded')[0] || {}).startTime,
    loss_traces: lines('chart-loss'), grad_traces: lines('chart-grad'),
    points: st('chart-loss').u.data.slice(1).reduce((n, d) => n + d[0].length, 0),
  };
}"""

# Measured with the previous dashboard (plotly.js for all four charts, loaded before the curves;
# the curves payload as one object per point) on the same 2-core VM, 500 x 2,000, 3 runs:
BEFORE = {"cold_s": 3.20, "reload_s": 2.13, "all_s": 5.1, "payload_mb": 3.17, "commit": "4560289"}


def row_form_size(doc: dict) -> int:
    """The size of the curves document in the old row form: {"points": [{"step": .., ...}]}."""
    fields = ("step", "samples", "tokens", "loss", "grad_norm", "lr", "seconds")
    trials = []
    for t in doc["trials"]:
        cols = [f for f in fields if f in t]
        rows = [dict(zip(cols, v)) for v in zip(*(t[f] for f in cols))]
        trials.append({k: v for k, v in t.items() if k not in fields} | {"points": rows})
    return len(json.dumps({"trials": trials}, separators=(",", ":")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=500)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=3, help="page loads to measure (median reported)")
    ap.add_argument("--keep", metavar="DIR", type=Path,
                    help="seed into DIR and keep it; a later run with the same DIR reuses the data")
    args = ap.parse_args()

    chromium = ensure_chromium()
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="sweepd-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    db_url = f"sqlite:///{(tmp / 'sweepd.db').resolve()}"
    os.environ.update(SWEEPD_HOME=str(tmp), SWEEPD_DATABASE_URL=db_url, SWEEPD_DATA_ROOTS=str(tmp),
                      SWEEPD_PUBLIC_READ="1")
    from sweepd.settings import get_settings
    from sweepd.store import upgrade

    get_settings.cache_clear()
    upgrade(db_url)
    try:
        run(args, chromium, db_url)
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


def existing_sweep(db_url: str, name: str) -> str | None:
    from sweepd.store import make_engine, repo, session_scope

    engine = make_engine(db_url)
    with session_scope(engine) as s:
        found = [sw.id for sw in repo.list_sweeps(s, limit=200).items if sw.name == name]
        if found:
            repo.set_sweep_state(s, found[0], "succeeded")
    engine.dispose()
    return found[0] if found else None


def run(args: argparse.Namespace, chromium: str, db_url: str) -> None:
    from api.app import create_app
    from api.dashboard import router
    from sweepd.settings import get_settings

    sweep_id = existing_sweep(db_url, f"bench-{args.trials}x{args.steps}")
    if sweep_id is None:
        t0 = time.perf_counter()
        print(f"seeding {args.trials} trials x {args.steps:,} steps into {db_url} ...", file=sys.stderr)
        sweep_id = seed(db_url, args.trials, args.steps, "succeeded")
        print(f"seeded in {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    import httpx
    from playwright.sync_api import sync_playwright

    with LiveServer(create_app(get_settings(), extra_routers=[router])) as server:
        runs = []
        with sync_playwright() as pw:
            browser = launch_chromium(pw, chromium)
            warm = []
            for _ in range(args.runs):
                ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
                page = ctx.new_page()
                for into in (runs, warm):  # a fresh profile, then the same page loaded again
                    page.goto(f"{server.url}/sweeps/{sweep_id}")
                    page.wait_for_function("window.__sweepdAllRenderedAt !== undefined", timeout=120_000)
                    into.append(page.evaluate(MEASURE))
                ctx.close()
            # Live refreshes: the same sweep, running again; the page polls every 2 s and redraws.
            from sweepd.store import make_engine, repo, session_scope

            engine = make_engine(db_url)
            with session_scope(engine) as s:
                repo.set_sweep_state(s, sweep_id, "running")
            engine.dispose()
            ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = ctx.new_page()
            page.goto(f"{server.url}/sweeps/{sweep_id}")
            refreshes = []
            for n in range(2, 5):
                page.wait_for_function(f"window.__sweepdRefreshes >= {n}", timeout=120_000)
                refreshes.append(page.evaluate("window.__sweepdLastRefreshMs"))
            refresh_ms = statistics.median(refreshes)
            ctx.close()
            browser.close()
        max_points = runs[0]["max_points"]
        from urllib.parse import parse_qsl, urlsplit

        page_params = dict(parse_qsl(urlsplit(runs[0]["curves_url"]).query))
        with httpx.Client(base_url=server.url, timeout=120) as client:
            url = f"/api/v1/sweeps/{sweep_id}/curves"
            serve_ms = []
            for _ in range(3):
                t = time.perf_counter()
                payload = client.get(url, params=page_params, headers={"Accept-Encoding": "identity"}).content
                serve_ms.append(1000 * (time.perf_counter() - t))
            all_cols = client.get(url, params={"max_points": max_points}, headers={"Accept-Encoding": "identity"})
            all_cols.raise_for_status()
            old_size = row_form_size(all_cols.json())
            full = client.get(f"/api/v1/trials/{sweep_id}-0000/metrics", params={"max_points": 10_000}).content

    per_trial_full = len(full)
    med = statistics.median(r["rendered_ms"] for r in runs)
    med_all = statistics.median(r["all_ms"] for r in runs)
    med_warm = statistics.median(r["rendered_ms"] for r in warm)
    med_warm_all = statistics.median(r["all_ms"] for r in warm)
    print()
    print(f"sweep page, {args.trials} trials x {args.steps:,} steps ({args.trials * args.steps:,} metric points), "
          f"headless Chromium {CHROMIUM}, {args.runs} cold loads; load average {os.getloadavg()[0]:.2f} "
          f"{os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}:")
    for i, r in enumerate(runs, 1):
        print(f"  run {i}: curves drawn {r['rendered_ms']:6.0f} ms   all charts {r['all_ms']:6.0f} ms   "
              f"(uPlot.js in {r['uplot_ms'] or 0:4.0f} ms, curves call {r['curves_start_ms']:4.0f}-{r['curves_end_ms']:4.0f} ms, "
              f"data parsed {r['data_ms']:5.0f} ms, plotly.js ready {r['plotly_ms']:5.0f} ms)   "
              f"series {r['loss_traces']}+{r['grad_traces']}   points drawn per chart {r['points']:,}")
    print(f"time to all {args.trials} curve series drawn, cold browser (navigation start -> window.__sweepdRendered): "
          f"median {med / 1000:.2f} s  (target < 2 s: {'met' if med < 2000 else 'NOT met'})")
    print(f"time to all {args.trials} curve series drawn, reload in the same browser: median {med_warm / 1000:.2f} s")
    print(f"all four charts drawn: median {med_all / 1000:.2f} s cold, {med_warm_all / 1000:.2f} s reload")
    print(f"curves payload as the page asks for it ({'&'.join(f'{k}={v}' for k, v in page_params.items())}): "
          f"{len(payload) / 1e6:.2f} MB JSON, {runs[0]['curves_bytes'] / 1e6:.2f} MB on the wire (gzip); "
          f"served in median {statistics.median(serve_ms):.0f} ms (JSON, no gzip); every column: "
          f"{len(all_cols.content) / 1e6:.2f} MB; the same data in the old row form: {old_size / 1e6:.2f} MB; "
          f"full resolution would be ~{per_trial_full * args.trials / 1e6:.0f} MB ({per_trial_full / 1e3:.0f} kB per trial)")
    print(f"live refresh of a running sweep of the same size (fetch + redraw of all four charts): "
          f"median {refresh_ms:.0f} ms (the page polls every 2 s)")
    b = BEFORE
    print(f"before (plotly.js for every chart, row-form payload; commit {b['commit']}, recorded on this VM): "
          f"curves drawn {b['cold_s']:.2f} s cold, {b['reload_s']:.2f} s reload, all charts {b['all_s']:.1f} s, "
          f"payload {b['payload_mb']:.2f} MB -> now {med / 1000:.2f} s, {med_warm / 1000:.2f} s, "
          f"{med_all / 1000:.1f} s, {len(payload) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
