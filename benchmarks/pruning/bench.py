"""``make bench-pruning``: replay every bank through every pruner over many seeds (issues 7, 12).

    .venv/bin/python -m benchmarks.pruning.bench                   # every bank, 30 seeds
    .venv/bin/python -m benchmarks.pruning.bench --banks night2    # one bank (and its history)
    .venv/bin/python -m benchmarks.pruning.bench --quick           # 2 seeds, 2 sweep sizes (tests)

For each bank (``benchmarks/pruning/banks.py``) and pruner, sweeps of N = 4% ... 100% of the
bank's configs are replayed (``simulate.py``) for every seed, which gives a regret-vs-compute
curve: mean compute (samples trained / samples of every config at full budget) against mean
regret (the picked config's objective minus the bank's best, as a fraction of the bank's range),
with its standard error over the seeds. The table reads each curve at 5, 10, 20 and 30% compute
(linear between sweep sizes; a curve that cannot reach a compute level, even with every config,
is read at its end, and one that starts above it at its start, marked ``~``).

stdout: one line per bank and pruner, ``bank=B pruner=P r5=.. r10=.. r20=.. r30=..`` (regret
fractions at those computes), then ``default=NAME``. The rest (standard errors, the targets,
the rule's verdict) goes to stderr and ``<out>/pruning[_quick].json``; the figure (one panel per
bank) to ``<out>/pruning_regret_vs_compute[_quick].png``.

The default (``choose_default``): a pruner the service runs qualifies when, on every bank and at
every one of the four computes, its regret is at or below both ``none``'s and Ray's ASHA on
loss's within one standard error (of the difference of the two means). The learned signal is
preferred if it qualifies; otherwise the qualifier with the lowest mean regret over all banks
and computes; if nothing qualifies, the service-runnable pruner with the lowest mean regret.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from benchmarks.pruning.banks import BANKS, GRACE_FRACTION, BankCase, load_cases
from benchmarks.pruning.simulate import HISTORY_PRUNERS, PRUNERS, Settings, SweepResult, mean, simulate

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "benchmarks" / "results"
COMPUTES = (0.05, 0.10, 0.20, 0.30)  # the table's compute levels (fractions of the full grid)
TARGET_REGRET = 0.01
TINY_TARGET_COMPUTE, HISTORY_TARGET_COMPUTE = 0.20, 0.10  # <= 1% regret by then (issue 12)
CURVE_FRACTIONS = (0.04, 1 / 12, 1 / 6, 1 / 4, 1 / 3, 1 / 2, 2 / 3, 1.0)  # N as a share of the configs
REFERENCES = ("none", "asha_loss")  # the default must be at or below both
# pruners the service itself runs (sweepd's classes): the candidates for its default
SERVICE_PRUNERS = ("none", "asha_loss_sweepd", "grad_norm", "paper", "learned")
ASHA_SIGNALS = {"asha_loss_sweepd": "loss", "grad_norm": "grad_norm", "paper": "paper", "learned": "learned"}


def _se(xs) -> float:
    xs = list(xs)
    if len(xs) < 2:
        return math.nan
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs))


def summarize(results: list[SweepResult]) -> dict:
    return {
        "compute": mean(r.compute for r in results),
        "regret": mean(r.regret for r in results),
        "regret_frac": mean(r.regret_frac for r in results),
        "regret_frac_se": _se(r.regret_frac for r in results),  # standard error over the seeds
        "regret_frac_p90": sorted(r.regret_frac for r in results)[int(0.9 * (len(results) - 1))],
        "hit": mean(float(r.hit) for r in results),
        "pruned": mean(r.n_pruned for r in results),
        "makespan_s": mean(r.makespan for r in results),
        "seeds": len(results),
    }


def interp(curve: list[dict], x: float, key: str = "regret_frac") -> float:
    """``key`` at compute ``x`` on a curve of {"compute", key} points: linear between
    neighbours, the nearest end outside the curve's range."""
    pts = sorted((p["compute"], p[key]) for p in curve)
    if x <= pts[0][0]:
        return pts[0][1]
    if x >= pts[-1][0]:
        return pts[-1][1]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    raise AssertionError("unreachable")


def compute_to_reach(curve: list[dict], target: float) -> float | None:
    """The least compute at which the curve's regret is down to ``target`` (linear between
    points), or None when it never gets there."""
    pts = sorted((p["compute"], p["regret_frac"]) for p in curve)
    for i, (x, y) in enumerate(pts):
        if y <= target:
            if i == 0:
                return x
            x0, y0 = pts[i - 1]
            return x0 + (x - x0) * (y0 - target) / (y0 - y) if y0 != y else x
    return None


def read_curve(curve: list[dict]) -> dict:
    """The curve at each of ``COMPUTES``: regret, its standard error, and where it was read."""
    lo, hi = min(p["compute"] for p in curve), max(p["compute"] for p in curve)
    out = {}
    for x in COMPUTES:
        out[f"{x:.2f}"] = {"regret": interp(curve, x), "se": interp(curve, x, "regret_frac_se"),
                           "read": "below_curve" if x < lo - 1e-9 else "above_curve" if x > hi + 1e-9
                           else "on_curve"}
    return out


def curve_sizes(n_configs: int, fractions=CURVE_FRACTIONS) -> list[int]:
    return sorted({min(n_configs, max(2, round(f * n_configs))) for f in fractions})


REPORT_KEYS = ("step", "samples", "loss", "grad_norm")  # what a history curve's reports hold


def _curve_upto(run, samples: float) -> list[dict]:
    return [{k: run.steps[k][i] for k in REPORT_KEYS if k in run.steps}
            for i in range(run.n_steps) if run.steps["samples"][i] <= samples]


def history_of(result: SweepResult, runs_by_id: dict) -> list[dict]:
    """An earlier sweep as the service hands it to a pruner: each trial's reports up to where it
    stopped (step, samples, loss, grad norm) and its objective (None when it was stopped)."""
    trials = []
    for t in result.trials:
        run = runs_by_id[t.config_id]
        trials.append({"curve": _curve_upto(run, t.samples),
                       "objective": t.value if t.state == "complete" else None})
    return trials


def history_of_bank(runs, objective: str) -> list[dict]:
    """Every run of an earlier bank, whole, with its final objective."""
    return [{"curve": _curve_upto(r, r.budget), "objective": r.objective(objective)} for r in runs]


def _replay_one(case: BankCase, name: str, sizes: list[int], seeds: range, workers: int,
                reduction_factor: float, earlier: dict | None) -> tuple[str, dict, float]:
    """One pruner on one bank, every size and seed -> (name, (name, N) -> results, seconds)."""
    t0 = time.perf_counter()
    out: dict[tuple[str, int], list[SweepResult]] = {}
    for n in sizes:
        s = Settings(n_trials=n, workers=workers, sampler=case.sampler, objective=case.objective,
                     grace=case.grace, reduction_factor=reduction_factor)
        rs = []
        for seed in seeds:
            history = None
            if name == "learned_history":  # night 1's curves, every config run to the end
                history = earlier["whole"]
            elif name == "learned_history_sweep":  # night 1's sweep of the same seed and size
                prev = earlier["results"][("learned", n)]
                history = history_of(next(r for r in prev if r.seed == seed), earlier["by_id"])
            r = simulate(case.runs, name, seed, s, history=history)
            r.decisions = []  # not needed here; keeps results small across processes
            rs.append(r)
        out[(name, n)] = rs
    return name, out, time.perf_counter() - t0


def run_bank(case: BankCase, pruners: list[str], seeds: range, sizes: list[int], workers: int,
             reduction_factor: float, earlier: dict | None = None, log=None,
             jobs: int = 1) -> tuple[dict, dict]:
    """-> (curves: pruner -> [point per N], results: (pruner, N) -> [SweepResult per seed]).
    ``earlier``: the history bank's results and runs, for ``HISTORY_PRUNERS``; ``jobs`` > 1
    replays the pruners in that many processes."""
    args = (sizes, seeds, workers, reduction_factor)
    if jobs > 1 and len(pruners) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(_replay_one, case, name, *args, earlier) for name in pruners]
            done = [f.result() for f in futures]
    else:
        done = []
        for name in pruners:
            done.append(_replay_one(case, name, *args, earlier))
            if log:
                log(f"#   {case.name:10s} {name:22s} {done[-1][2]:6.1f} s")
    curves: dict[str, list[dict]] = {}
    results: dict[tuple[str, int], list[SweepResult]] = {}
    for name, out, _ in done:
        results.update(out)
        curves[name] = [{"n_trials": n, **summarize(out[(name, n)])} for n in sizes]
    return curves, results


def bank_table(curves: dict[str, list[dict]]) -> dict:
    """pruner -> the curve read at ``COMPUTES``, the compute at which it reaches 1%, its N range."""
    return {name: {"at": read_curve(c), "compute_to_1pct": compute_to_reach(c, TARGET_REGRET),
                   "compute_range": [min(p["compute"] for p in c), max(p["compute"] for p in c)]}
            for name, c in curves.items()}


def not_worse(table: dict, name: str, ref: str, x: str) -> tuple[bool, float]:
    """``name``'s regret at compute ``x`` is at or below ``ref``'s within one standard error of
    the difference; -> (verdict, margin = regret - ref's regret - that standard error)."""
    a, b = table[name]["at"][x], table[ref]["at"][x]
    se = math.sqrt((a["se"] if math.isfinite(a["se"]) else 0.0) ** 2
                   + (b["se"] if math.isfinite(b["se"]) else 0.0) ** 2)
    margin = a["regret"] - b["regret"] - se
    return margin <= 1e-12, margin


def qualification(tables: dict[str, dict], name: str) -> dict:
    """Where ``name`` is not at or below a reference within one standard error, and by how much."""
    misses = []
    for bank, table in tables.items():
        if name not in table:
            continue
        for x in table[name]["at"]:
            for ref in REFERENCES:
                if ref == name or ref not in table:
                    continue
                ok, margin = not_worse(table, name, ref, x)
                if not ok:
                    misses.append({"bank": bank, "compute": float(x), "reference": ref,
                                   "regret": table[name]["at"][x]["regret"],
                                   "reference_regret": table[ref]["at"][x]["regret"],
                                   "excess_beyond_1se": margin})
    return {"qualifies": not misses, "misses": misses}


def overall_regret(tables: dict[str, dict], name: str) -> float:
    """Mean regret over every bank and every one of ``COMPUTES``."""
    vals = [p["regret"] for t in tables.values() if name in t for p in t[name]["at"].values()]
    return mean(vals)


def _pick(tables: dict[str, dict], candidates: list[str], prefer: str = "learned") -> dict:
    quals = {n: qualification(tables, n) for n in candidates}
    overall = {n: overall_regret(tables, n) for n in candidates}
    qualifying = [n for n in candidates if quals[n]["qualifies"]]
    if prefer in qualifying:
        return {"pick": prefer, "rule": f"{prefer} qualifies (preferred)", "qualifying": qualifying}
    if qualifying:
        pick = min(qualifying, key=lambda n: overall[n])
        return {"pick": pick, "rule": "the qualifier with the lowest mean regret", "qualifying": qualifying}
    pick = min(candidates, key=lambda n: overall[n])
    return {"pick": pick, "rule": "nothing qualifies: the lowest mean regret over every bank and compute",
            "qualifying": []}


def choose_default(tables: dict[str, dict]) -> dict:
    """The service default (see the module docstring) and the default ASHA signal (the same rule
    among sweepd's ASHA signals), with why, and every pruner's standing."""
    names = sorted({n for t in tables.values() for n in t}, key=lambda n: (n not in PRUNERS, n))
    candidates = [n for n in SERVICE_PRUNERS if all(n in t for t in tables.values())]
    chosen = _pick(tables, candidates)
    asha = _pick(tables, [n for n in candidates if n in ASHA_SIGNALS])
    rows = {n: {"mean_regret": overall_regret(tables, n), **qualification(tables, n)} for n in names}
    best = chosen["pick"]
    q = rows[best]
    why = (f"{best} ({chosen['rule']}): mean regret {q['mean_regret']:.2%} over {len(tables)} banks at "
           f"{', '.join(f'{x:.0%}' for x in COMPUTES)} compute; "
           + ("at or below none and Ray's ASHA on loss within one standard error everywhere"
              if q["qualifies"] else f"{len(q['misses'])} bank x compute x reference cells above "
              f"one standard error (worst +{max(m['excess_beyond_1se'] for m in q['misses']):.2%} "
              "beyond it)"))
    return {"default": best, "rule": chosen["rule"], "qualifying": chosen["qualifying"], "why": why,
            "asha_signal": ASHA_SIGNALS[asha["pick"]], "asha_signal_rule": asha["rule"],
            "candidates": candidates, "rows": rows}


def check_targets(tables: dict[str, dict], cases: dict[str, BankCase], default: str) -> dict:
    """The issue's Must-show targets for the default (and for the learned signal with history)."""
    q = qualification(tables, default)
    out = {"default_vs_references": {"met": q["qualifies"], "misses": q["misses"]}}
    tiny = {}
    for bank, case in cases.items():
        if case.tiny and default in tables[bank]:
            c = tables[bank][default]["compute_to_1pct"]
            tiny[bank] = {"compute_to_1pct": c, "met": c is not None and c <= TINY_TARGET_COMPUTE}
    out["tiny_1pct_by_20pct"] = {"met": all(v["met"] for v in tiny.values()) if tiny else None, "banks": tiny}
    for name in HISTORY_PRUNERS:
        for bank, t in tables.items():
            if name in t:
                c = t[name]["compute_to_1pct"]
                out[f"{name}_1pct_by_10pct"] = {"bank": bank, "compute_to_1pct": c,
                                                "met": c is not None and c <= HISTORY_TARGET_COMPUTE}
    return out


def plot(tables, curves_by_bank: dict, cases: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(curves_by_bank)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 4.6 * rows), squeeze=False)
    for ax, (bank, curves) in zip(axes.flat, curves_by_bank.items()):
        ax.axvline(TINY_TARGET_COMPUTE if cases[bank].tiny else 0.30, ls=":", color="grey", lw=0.8)
        ax.axhline(100 * TARGET_REGRET, ls=":", color="grey", lw=0.8)
        for x in COMPUTES:
            ax.axvline(x, color="k", alpha=0.06, lw=4)
        for name, curve in curves.items():
            pts = sorted((p["compute"], 100 * p["regret_frac"], 100 * p["regret_frac_se"]) for p in curve)
            xs, ys, es = ([p[i] for p in pts] for i in range(3))
            style = "--" if name in ("none", "asha_loss", "median_loss", "hyperband_loss") else "-"
            lw = 2.2 if name.startswith("learned") else 1.2
            line = ax.plot(xs, ys, style, marker=".", lw=lw, label=name, color=COLORS.get(name))[0]
            ax.fill_between(xs, [y - e for y, e in zip(ys, es)], [y + e for y, e in zip(ys, es)],
                            color=line.get_color(), alpha=0.08)
        ax.set_title(cases[bank].label, fontsize=9)
        ax.set_xlim(0, 0.6)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("compute (fraction of every config at full budget)", fontsize=8)
        ax.set_ylabel("regret, % of the bank's range (± s.e.)", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


COLORS = {"learned": "black", "learned_history": "tab:olive", "learned_history_sweep": "tab:cyan"}


def _fmt_cell(p: dict) -> str:
    mark = "~" if p["read"] != "on_curve" else ""
    return f"{mark}{p['regret']:.2%}±{p['se']:.2%}" if math.isfinite(p["se"]) else f"{mark}{p['regret']:.2%}"


def learned_available() -> str | None:
    """None when the learned signal can be built; else why not."""
    try:
        from sweepd.pruners import make_pruner

        pruner = make_pruner({"type": "asha", "signal": "learned"})
        if not callable(getattr(pruner, "add_history", None)):
            return "the ASHA pruner has no add_history"
    except Exception as exc:  # not written yet, or broken: the rest of the benchmark still runs
        return f"{type(exc).__name__}: {exc}"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Replay every bank through every pruner.")
    ap.add_argument("--banks", default=",".join(BANKS), help=f"comma-separated, of {', '.join(BANKS)}")
    ap.add_argument("--pruners", default="", help="comma-separated subset (default: all)")
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--sampler", choices=("tpe", "random"), default="tpe", help="for the grid banks")
    ap.add_argument("--reduction-factor", type=float, default=3)
    ap.add_argument("--grace-fraction", type=float, default=GRACE_FRACTION,
                    help="first rung as a fraction of each bank's budget (default 1/16)")
    ap.add_argument("--fractions", default="", help="sweep sizes as shares of the configs (default: "
                    + ",".join(f"{f:.3g}" for f in CURVE_FRACTIONS) + ")")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--jobs", type=int, default=1, help="processes (pruners of a bank in parallel)")
    ap.add_argument("--quick", action="store_true", help="2 seeds, sweeps of 1/6 and 1/3 of the configs")
    args = ap.parse_args(argv)
    fractions = tuple(float(f) for f in args.fractions.split(",") if f.strip()) or CURVE_FRACTIONS
    if args.quick:
        args.seeds, fractions = 2, (1 / 6, 1 / 3)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    cases = {c.name: c for c in load_cases([b.strip() for b in args.banks.split(",") if b.strip()],
                                           sampler=args.sampler, grace_fraction=args.grace_fraction)}
    if not cases:
        raise SystemExit("no bank found (make curve-bank, generate --bank night, curve_bank.algoperf)")
    missing_learned = learned_available()
    pruners = [p for p in (args.pruners.split(",") if args.pruners else PRUNERS + HISTORY_PRUNERS) if p]
    skipped = {}
    if missing_learned:
        skipped = {p: missing_learned for p in pruners if p.startswith("learned")}
        pruners = [p for p in pruners if p not in skipped]
        log(f"# learned signal not available ({missing_learned}): left out")
    seeds = range(args.first_seed, args.first_seed + args.seeds)

    curves_by_bank: dict[str, dict] = {}
    results_by_bank: dict[str, dict] = {}
    for name, case in cases.items():
        sizes = curve_sizes(len(case.runs), fractions)
        names = [p for p in pruners if p not in HISTORY_PRUNERS]
        earlier = None
        if case.history_from in results_by_bank and case.history_from in cases:
            prev = cases[case.history_from]
            earlier = {"results": results_by_bank[case.history_from],
                       "by_id": {r.config_id: r for r in prev.runs},
                       "whole": history_of_bank(prev.runs, prev.objective)}
            for p in pruners:
                if p == "learned_history_sweep" and not all(("learned", n) in earlier["results"] for n in sizes):
                    log(f"# {p} needs learned on {case.history_from}: left out")
                elif p in HISTORY_PRUNERS:
                    names.append(p)
        log(f"# {name}: {len(case.runs)} configs, {case.sampler}, {case.objective}, budget {case.budget} "
            f"samples, first rung {case.grace:g}; N = {sizes}; {len(seeds)} seeds")
        t_bank = time.perf_counter()
        curves, results = run_bank(case, names, seeds, sizes, args.workers, args.reduction_factor,
                                   earlier, log, jobs=args.jobs)
        log(f"#   {name}: {time.perf_counter() - t_bank:.0f} s")
        curves_by_bank[name] = curves
        results_by_bank[name] = results

    tables = {b: bank_table(c) for b, c in curves_by_bank.items()}
    choice = choose_default({b: {n: t for n, t in tab.items() if n not in HISTORY_PRUNERS}
                             for b, tab in tables.items()})
    targets = check_targets(tables, cases, choice["default"])

    for bank, table in tables.items():
        for n, row in table.items():
            print(f"bank={bank} pruner={n} " + " ".join(
                f"r{round(100 * float(x))}={p['regret']:.4f}" for x, p in row["at"].items()))
    print(f"default={choice['default']}")
    sys.stdout.flush()

    head = "compute".ljust(10)
    for bank, table in tables.items():
        c = cases[bank]
        best = min(c.runs, key=lambda r: r.objective(c.objective) if r.objective(c.objective) is not None
                   else math.inf)
        log(f"# {bank}: {c.label}; best {best.config_id} = {best.objective(c.objective):.4f}")
        log("#   " + "pruner".ljust(17) + "".join(f"{x:>16.0%}" for x in COMPUTES) + "   1% reached at"
            .rjust(18) + "  " + head)
        for n, row in table.items():
            reach = row["compute_to_1pct"]
            log("#   " + n.ljust(17) + "".join(f"{_fmt_cell(p):>16}" for p in row["at"].values())
                + (f"{reach:>18.1%}" if reach is not None else "never".rjust(18))
                + f"  {row['compute_range'][0]:.3f}-{row['compute_range'][1]:.3f}")
    log(f"# default: {choice['why']}; default ASHA signal: {choice['asha_signal']} ({choice['asha_signal_rule']})")
    log(f"# qualifying: {choice['qualifying'] or 'none'}")
    for key, t in targets.items():
        log(f"# target {key}: {'n/a' if t['met'] is None else 'met' if t['met'] else 'NOT met'}")

    args.out.mkdir(parents=True, exist_ok=True)
    suffix = ("_quick" if args.quick else "") + ("" if args.sampler == "tpe" else f"_{args.sampler}")
    if args.grace_fraction != GRACE_FRACTION:
        suffix += f"_g{args.grace_fraction:g}"
    png = args.out / f"pruning_regret_vs_compute{suffix}.png"
    plot(tables, curves_by_bank, cases, png)
    report = {
        "settings": {"seeds": list(seeds), "workers": args.workers, "reduction_factor": args.reduction_factor,
                     "grid_sampler": args.sampler, "curve_fractions": list(fractions),
                     "computes": list(COMPUTES), "first_rung_fraction": args.grace_fraction,
                     "window": Settings().window},
        "banks": {b: {"label": c.label, "path": c.path, "configs": len(c.runs), "sampler": c.sampler,
                      "objective": c.objective, "budget_samples": c.budget, "grace": c.grace,
                      "tiny": c.tiny, "history_from": c.history_from,
                      "best_value": min(v for r in c.runs if (v := r.objective(c.objective)) is not None),
                      "value_range": (lambda vs: max(vs) - min(vs))(
                          [v for r in c.runs if (v := r.objective(c.objective)) is not None]),
                      "table": tables[b], "curves": curves_by_bank[b]}
                  for b, c in cases.items()},
        "skipped": skipped,
        "choice": choice,
        "targets": targets,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    out = args.out / f"pruning{suffix}.json"
    out.write_text(json.dumps(report, indent=1, default=float) + "\n")
    log(f"# wrote {out} and {png} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
