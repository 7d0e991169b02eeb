"""Convert the MLCommons AlgoPerf leaderboard curves into banks the pruning replay reads (issue 12).

    .venv/bin/python -m benchmarks.curve_bank.algoperf      # reads ../shared/curves/algoperf

Source: ``<src>/vit_conformer_trials.csv`` (one row per trial), ``vit_conformer_train_curves.csv.gz``
(training loss and grad norm every 100 steps) and ``vit_conformer_eval_curves.csv.gz`` (validation
loss on a wall-clock schedule); see the README there. Apache-2.0: the licence file is copied
beside the banks.

One bank per workload in ``WORKLOADS``, each written to ``benchmarks/data/algoperf/<name>.jsonl.gz``
in the curve bank's format (a ``meta`` line, then one ``run`` line per trial):

- **Trials kept**: those with a grad norm, a training curve that reaches the workload's common
  step budget ``budget_steps`` (a trial that ended earlier cannot be compared there), finite loss
  and grad norm up to it, a finite objective at it, and not diverged (objective at most the
  loss at step 0, i.e. better than the untrained model). Submissions that log only the first 100
  steps (``amos``, ``generalized_adam``) fail the reach test; ``lawa_*`` (broken ``global_step``)
  are dropped by name.
- **Curves**: the logged points up to the budget, every ``every``-th one (every 500 steps by
  default: 100-200 reports per trial keep the replay fast); ``step`` = global step,
  ``samples`` = step x the workload's fixed batch size, ``loss``/``grad_norm`` as logged (one
  minibatch, no smoothing), ``seconds`` = step / 100: every trial is taken to run at the same
  speed (the logs' wall-clock times come from different hardware and frameworks).
- **Objective** (``final``): ``val_loss`` = validation loss at the budget (linear between the
  two evaluations around it) where the workload has evaluations (ViT); otherwise (the Conformer
  logs hold no evaluations) ``train_loss_at_budget`` = the mean of the last 10 logged training
  losses up to the budget (1,000 steps).
- **Configs**: every trial is its own config (submission x study x hyperparameter point): these
  banks are not grids, so the replay samples them at random (``sampler: random`` in the meta).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import math
import shutil
import sys
from collections import defaultdict
from pathlib import Path

from benchmarks.curve_bank.generate import write_bank

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SRC = ROOT.parent / "shared" / "curves" / "algoperf"
DEFAULT_OUT = ROOT / "benchmarks" / "data" / "algoperf"
LICENSE = "LICENSE_Apache-2.0.md"
TRIALS, TRAIN, EVAL = ("vit_conformer_trials.csv", "vit_conformer_train_curves.csv.gz",
                       "vit_conformer_eval_curves.csv.gz")
DROP_SUBMISSIONS = ("lawa_ema", "lawa_queue")  # broken global_step (the source README)

# bank name -> workload, its fixed batch size, the common step budget, the objective
WORKLOADS = {
    "vit": {"workload": "imagenet_vit_jax", "batch_size": 1024, "budget_steps": 70_000},
    "conformer": {"workload": "librispeech_conformer_jax", "batch_size": 256, "budget_steps": 50_000},
}
EVERY = 5  # keep every 5th logged point (logged every 100 steps -> every 500 steps)
TRAIN_LOSS_TAIL = 10  # logged points averaged for train_loss_at_budget


def _f(x: str) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _g(x: float, digits: int = 6) -> float:
    return float(f"{x:.{digits}g}")


def read_source(src: Path, workloads: set[str]) -> tuple[list[dict], dict, dict]:
    """(trial rows, trial_id -> [(step, loss, grad_norm)], trial_id -> [(step, val_loss)])."""
    with open(src / TRIALS, newline="", encoding="utf-8") as f:
        trials = [r for r in csv.DictReader(f) if r["workload"] in workloads]
    ids = {r["trial_id"] for r in trials}
    train: dict[str, list] = defaultdict(list)
    with gzip.open(src / TRAIN, "rt", newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if r["trial_id"] in ids:
                train[r["trial_id"]].append((int(r["global_step"]), _f(r["loss"]), _f(r["grad_norm"])))
    evals: dict[str, list] = defaultdict(list)
    if (src / EVAL).exists():
        with gzip.open(src / EVAL, "rt", newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                if r["trial_id"] in ids:
                    evals[r["trial_id"]].append((int(r["global_step"]), _f(r["validation/loss"])))
    for d in (train, evals):
        for v in d.values():
            v.sort()
    return trials, train, evals


def value_at(points: list[tuple[int, float]], step: int) -> float | None:
    """Linear between the two points around ``step``; None outside the points."""
    for (s0, v0), (s1, v1) in zip(points, points[1:]):
        if s0 <= step <= s1:
            return v0 if s1 == s0 else v0 + (v1 - v0) * (step - s0) / (s1 - s0)
    if points and points[-1][0] == step:
        return points[-1][1]
    return None


def convert_trial(row: dict, train: list, evals: list, spec: dict, every: int = EVERY) -> tuple[dict | None, str]:
    """One trial -> a bank run, or (None, why it was dropped)."""
    budget = spec["budget_steps"]
    if row["submission"] in DROP_SUBMISSIONS:
        return None, "lawa (broken global_step)"
    if row.get("has_grad_norm", "True") != "True" or not train:
        return None, "no grad norm"
    if train[-1][0] < budget - 100:
        return None, "ends before the budget"
    upto = [p for p in train if p[0] <= budget]
    if not all(math.isfinite(v) for p in upto for v in p[1:]):
        return None, "non-finite loss or grad norm"
    if evals:
        objective_key, value = "val_loss", value_at([e for e in evals if math.isfinite(e[1])], budget)
    else:
        objective_key = "train_loss_at_budget"
        value = sum(p[1] for p in upto[-TRAIN_LOSS_TAIL:]) / len(upto[-TRAIN_LOSS_TAIL:])
    if value is None or not math.isfinite(value):
        return None, "no objective at the budget"
    if value > upto[0][1]:
        return None, "diverged (objective above the step-0 loss)"
    kept = [p for i, p in enumerate(upto) if i % every == every - 1 or p is upto[-1]]
    kept = [p for p in kept if p[0] > 0]
    steps = {
        "step": [p[0] for p in kept],
        "samples": [p[0] * spec["batch_size"] for p in kept],
        "loss": [_g(p[1]) for p in kept],
        "grad_norm": [_g(p[2]) for p in kept],
        "seconds": [p[0] / 100 for p in kept],
    }
    hparams = json.loads(row.get("hparams") or "{}")
    cid = "/".join((row["leaderboard"], row["ruleset"], row["submission"], row["study"], row["trial"]))
    final = {objective_key: _g(value), "budget_steps": budget, "trial_max_step": int(row["max_step"]),
             "wall_seconds": budget / 100 + 1.0}
    return {"kind": "run", "id": cid, "config_id": cid,
            "config": {"submission": row["submission"], "ruleset": row["ruleset"], "study": row["study"], "trial": row["trial"],
                       "leaderboard": row["leaderboard"], "hparams": hparams, "seed": 0},
            "steps": steps, "final": final}, "kept"


def convert(src: Path, out: Path, names: list[str] | None = None, every: int = EVERY,
            workloads: dict | None = None) -> dict[str, dict]:
    """Write one bank per workload (and the licence and a provenance note); -> name -> summary."""
    workloads = workloads or WORKLOADS
    names = names or list(workloads)
    trials, train, evals = read_source(src, {workloads[n]["workload"] for n in names})
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / LICENSE, out / LICENSE)
    summaries = {}
    for name in names:
        spec = workloads[name]
        runs, dropped = [], defaultdict(int)
        for row in trials:
            if row["workload"] != spec["workload"]:
                continue
            run, why = convert_trial(row, train.get(row["trial_id"], []),
                                     evals.get(row["trial_id"], []), spec, every)
            if run is None:
                dropped[why] += 1
            else:
                runs.append(run)
        objective = next(iter(k for k in runs[0]["final"] if k in ("val_loss", "train_loss_at_budget")))
        values = [r["final"][objective] for r in runs]
        meta = {
            "kind": "meta", "bank": f"algoperf_{name}",
            "made_by": "python -m benchmarks.curve_bank.algoperf",
            "source": "MLCommons AlgoPerf leaderboard logs (submissions_algorithms, "
                      "previous_leaderboards/algoperf_v05 and algoperf_v06), as flattened in "
                      "../shared/curves/algoperf; Apache-2.0 (LICENSE_Apache-2.0.md beside this file)",
            "workload": spec["workload"], "batch_size": spec["batch_size"],
            "budget_steps": spec["budget_steps"], "budget_samples": spec["budget_steps"] * spec["batch_size"],
            "every_steps": 100 * every, "objective": objective, "mode": "min", "sampler": "random",
            "time_axis": "seconds = step / 100 (every trial at the same speed)",
            "kept": len(runs), "dropped": dict(dropped),
            "objective_range": [min(values), max(values)],
        }
        write_bank(out / f"{name}.jsonl.gz", meta, runs)
        summaries[name] = {k: meta[k] for k in ("workload", "budget_steps", "objective", "kept", "dropped",
                                                 "objective_range")}
    return summaries


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=DEFAULT_SRC)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--every", type=int, default=EVERY, help="keep every N-th logged point")
    args = ap.parse_args(argv)
    for name, s in convert(args.src, args.out, every=args.every).items():
        size = (args.out / f"{name}.jsonl.gz").stat().st_size
        print(f"{name}: {s['workload']} at {s['budget_steps']} steps, {s['kept']} trials kept "
              f"(dropped {s['dropped']}), {s['objective']} {s['objective_range'][0]:.4f} .. "
              f"{s['objective_range'][1]:.4f} -> {args.out / (name + '.jsonl.gz')} ({size / 1e3:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
