"""`make bench-orchestration`: what sweepd's orchestration costs on top of the trials (issue 16).

    .venv/bin/python -m benchmarks.orchestration [--trials 1000] [--concurrency 8] [--rounds 2] [--store-results 50000]
        [--sections sweeps,store] [--no-postgres] [--out benchmarks/results/orchestration.json]

Sections, each printed as it finishes (figures and ratios) and written together to ``--out``:

1. ``sweeps``: a sweep of ``--trials`` replay trials (builtin:replay, trainer/replay.py: about
   2 s and 50 reported steps each; ``--concurrency`` at once, each asking for CPUs/concurrency
   CPUs; TPE; ASHA on the loss) through sweepd's real engine (``run_local``: the driver, Ray
   Tune, sweepd's searcher, scheduler and recorder, a SQLite store), then the same trials through
   stock Ray Tune (tune.Tuner + OptunaSearch + ASHAScheduler, benchmarks/orchestration_sweeps.py).
   For each: wall / ideal, where ideal = (sum of each trial's replay time) / concurrency, the
   time the trials alone would take on perfectly packed slots. Then sweepd's ratio over stock's.
   ``--rounds`` pairs, the order alternating; the verdict is on each engine's median.
   Goal: sweepd within 1.15x of ideal, and not worse than stock.
2. ``store``: reported results per second that sweepd's recorder sustains into the store, on
   SQLite and on PostgreSQL (a throwaway server from scripts/postgres.sh), through the real
   recorder path (benchmarks/orchestration_store.py).
3. ``serve``: 4 replay sweeps submitted at once to one `sweepd serve` (benchmarks/orchestration_serve.py):
   the Ray instances under the service (must be 1), the peak of trials holding a CPU (never more
   than the cores), and each sweep's share while all 4 compete against its fair share.

A benchmark, not a test: it asserts nothing. The machine may be shared: the load average is
printed with each section. ``--trials 100`` gives a first reading in a few minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "orchestration.json"
TARGET_OVER_IDEAL = 1.15


def log(text: str) -> None:
    print(text, flush=True)


def loadavg() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


def over_ideal(wall_seconds: float, replay_seconds: list[float], concurrency: int) -> dict[str, float]:
    """Wall time against the ideal: every trial's replay time packed onto ``concurrency`` slots."""
    ideal = sum(replay_seconds) / concurrency
    return {"wall_seconds": round(wall_seconds, 2), "ideal_seconds": round(ideal, 2),
            "wall_over_ideal": round(wall_seconds / ideal, 3) if ideal > 0 else float("inf")}


def compare(sweepd: float, stock: float) -> dict[str, Any]:
    """sweepd's wall/ideal over stock's (below 1: sweepd is closer to ideal), and the verdicts."""
    ratio = sweepd / stock
    return {"sweepd_over_stock": round(ratio, 3),
            "sweepd_within_target": sweepd <= TARGET_OVER_IDEAL,
            "sweepd_not_worse_than_stock": ratio <= 1.0}


# ---- section 1: sweepd vs stock Ray Tune ------------------------------------------------------


def one_sweep(engine: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """One engine's sweep in a fresh process (its own Ray and environment)."""
    out = tmp / f"{engine}.json"
    cmd = [sys.executable, "-m", "benchmarks.orchestration_sweeps", engine, "--trials", str(args.trials),
           "--concurrency", str(args.concurrency), "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{engine} sweep failed:\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def sweeps_section(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """``--rounds`` paired runs, the order alternating (sweepd first, then stock first ...): on a
    shared machine one pair can differ by a third from the next. The verdict is on the medians."""
    out: dict[str, Any] = {"trials": args.trials, "concurrency": args.concurrency, "rounds": []}
    for round_ in range(args.rounds):
        engines = ("sweepd", "stock") if round_ % 2 == 0 else ("stock", "sweepd")
        pair: dict[str, Any] = {"order": list(engines)}
        for engine in engines:
            log(f"round {round_ + 1}/{args.rounds}, {engine}: {args.trials} replay trials, {args.concurrency} "
                f"at a time (load {loadavg()}) ...")
            pair[engine] = one_engine(engine, args, tmp)
        pair["sweepd_over_stock"] = round(pair["sweepd"]["wall_over_ideal"] / pair["stock"]["wall_over_ideal"], 3)
        log(f"  round {round_ + 1}: sweepd/stock {pair['sweepd_over_stock']:.3f}")
        out["rounds"].append(pair)
    for engine in ("sweepd", "stock"):
        out[engine] = {"wall_over_ideal_median": statistics.median(r[engine]["wall_over_ideal"] for r in out["rounds"]),
                       "wall_over_ideal_each": [r[engine]["wall_over_ideal"] for r in out["rounds"]]}
    out.update(compare(out["sweepd"]["wall_over_ideal_median"], out["stock"]["wall_over_ideal_median"]))
    log(f"  medians over {args.rounds} round(s): sweepd {out['sweepd']['wall_over_ideal_median']:.3f}, stock "
        f"{out['stock']['wall_over_ideal_median']:.3f}, sweepd/stock {out['sweepd_over_stock']:.3f} (sweepd within "
        f"{TARGET_OVER_IDEAL}x of ideal: {'yes' if out['sweepd_within_target'] else 'no'}; not worse than stock: "
        f"{'yes' if out['sweepd_not_worse_than_stock'] else 'no'})")
    return out


def one_engine(engine: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    run = one_sweep(engine, args, tmp)
    figures = {**over_ideal(run["wall_seconds"], run["replay_seconds"], args.concurrency),
               "trials": run["trials"], "stopped": run["stopped"], "cpus_per_trial": run["cpus_per_trial"]}
    if "points" in run:
        figures["points_stored"] = run["points"]
        figures["results_per_second"] = round(run["points"] / run["wall_seconds"], 1)
    log(f"  {engine}: wall {figures['wall_seconds']:.1f} s, ideal {figures['ideal_seconds']:.1f} s, "
        f"wall/ideal {figures['wall_over_ideal']:.3f} ({figures['stopped']} of {figures['trials']} trials "
        f"stopped by ASHA; load {loadavg()})")
    return figures


# ---- section 2: results per second into the store ---------------------------------------------


def store_section(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from benchmarks.orchestration_store import fresh_database, recorder_rate, sqlite_url
    from benchmarks.throwaway_postgres import with_postgres

    out: dict[str, Any] = {}

    def measure(backend: str, url: str) -> dict[str, Any]:
        log(f"{backend}: {args.store_results:,} results through the recorder (load {loadavg()}) ...")
        figures = recorder_rate(url, results=args.store_results, concurrency=args.concurrency)
        log(f"  {backend}: {figures['results_per_second']:,.0f} results/s ({figures['results']:,} results, "
            f"{figures['trials']} trials, {figures['seconds']:.1f} s; {figures['stored_points']:,} points stored)")
        return figures

    (tmp / "sqlite").mkdir()
    out["sqlite"] = measure("sqlite", sqlite_url(tmp / "sqlite"))
    if not args.no_postgres:
        out["postgresql"] = with_postgres(lambda pg: measure("postgresql", fresh_database(pg.url)), log)
    return out


# ---- section 3: concurrent sweeps through `sweepd serve` --------------------------------------


def serve_section(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from benchmarks.orchestration_serve import concurrent_sweeps_through_serve

    log(f"serve: 4 replay sweeps (6 trials of 10 s, cpus_per_worker 1) submitted at once to one "
        f"`sweepd serve` on {os.cpu_count()} cores (load {loadavg()}) ...")
    out = concurrent_sweeps_through_serve(tmp, sweeps=4, trials=6, steps=40)
    log(f"  Ray instances under the service: {out['ray_instances']} (must be [1], or [0, 1] before the first sweep)")
    log(f"  peak trial actors: {out['peak_trial_actors']} on {out['cores']} cores; peak slots granted: "
        f"{out['peak_granted_slots']}; exact trial counts: {out['exact_trial_counts']}; {out['wall_seconds']} s")
    for sweep_id, share in out["shares"].items():
        log(f"  sweep {sweep_id}: {share['got']} running trials on average while all 4 competed, fair share "
            f"{share['fair']}")
    out.pop("final", None)
    return out


SECTIONS: dict[str, Callable[[argparse.Namespace, Path], dict[str, Any]]] = {
    "sweeps": sweeps_section,
    "store": store_section,
    "serve": serve_section,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2, help="sweeps: paired sweepd/stock runs, the order alternating")
    ap.add_argument("--store-results", type=int, default=50_000)
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    doc: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "cpus": os.cpu_count(),
                           "python": platform.python_version(), "load_before": loadavg(), "args": vars(args) | {"out": str(args.out)}}
    with tempfile.TemporaryDirectory(prefix="sweepd-orchestration-") as tmp:
        for name in wanted:
            started = time.perf_counter()
            doc[name] = SECTIONS[name](args, Path(tmp))
            doc[name]["section_seconds"] = round(time.perf_counter() - started, 1)
    doc["load_after"] = loadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    log(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
