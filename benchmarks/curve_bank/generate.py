"""Make the curve bank (``make curve-bank``): pretrain a base model, then fine-tune it over the grid.

    .venv/bin/python -m benchmarks.curve_bank.generate            # the full bank (~40 min, 2 cores)
    .venv/bin/python -m benchmarks.curve_bank.generate --pilot    # 3 configs, short budgets
    .venv/bin/python -m benchmarks.curve_bank.generate --bank night  # night 1 + night 2 (issue 12)

1. Data: ``trainer.synthetic.make_data(seed=0)`` (default sizes) into the work folder.
2. Base model: ``builtin:tiny`` pretrained on ``knowledge_pretrain.jsonl`` (facts about made-up
   people) for a fixed budget, saved in Hugging Face format to ``<out>/base_model``.
3. Fine-tuning: every run of ``grid.all_runs()`` from the base model on ``knowledge_train.jsonl``
   + ``skills_train.jsonl`` (stacked), ``BUDGET_SAMPLES`` samples each, evaluated at the end on
   ``eval.jsonl``. Every optimizer step is recorded.

One process, one torch thread (the machine is shared); runs are appended to
``<work>/runs.jsonl`` as they finish, so an interrupted generation resumes where it stopped.
The bank is written to ``<out>/curve_bank.jsonl.gz``: a ``meta`` line, then one ``run`` line each.

``--bank night`` makes the night bank instead (``<out>/night_bank.jsonl.gz``, work folder
``runs/night_bank``): no pretraining (it fine-tunes the stored ``<out>/base_model``), data
``make_data(seed=0, n_train=NIGHT_POOL_TRAIN)`` whose knowledge questions and skill tasks are
split, after a seeded shuffle, into two disjoint halves of 600 + 1,000 samples (night 1, night 2),
both judged on that draw's ``eval.jsonl``; ``grid.night_runs()`` on each half.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")

from benchmarks.curve_bank import grid  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "benchmarks" / "data"
DEFAULT_WORK = ROOT / "runs" / "curve_bank"
BANK_NAME = "curve_bank.jsonl.gz"
NIGHT_BANK_NAME = "night_bank.jsonl.gz"
NIGHT_WORK = ROOT / "runs" / "night_bank"
NIGHT_POOL_TRAIN = 4000  # make_data n_train: 1,200 knowledge questions + 2,000 skill tasks
NIGHT_SPLIT_SEED = 0
FINETUNE_FILES = ("knowledge_train.jsonl", "skills_train.jsonl")
DATA_SEED = 0
PRETRAIN = {  # the base model's pretraining run
    "batch": 16,
    "lr": 3e-3,
    "warmup": 20,
    "schedule": "cosine",
    "samples": 16000,  # 40 passes over the 400 paragraphs
    "seed": 0,
}
STEP_KEYS = ("step", "samples", "tokens", "loss", "grad_norm", "lr", "seconds")


def _g(x, digits: int = 6):
    """A float kept to ``digits`` significant digits (None stays None): a smaller bank."""
    return None if x is None else float(f"{x:.{digits}g}")


def trial_config(model: str, data_dir: Path, train_files, batch: int, lr: float, warmup: int,
                 schedule: str, samples: int, seed: int, output_dir: Path | None = None,
                 with_eval: bool = True):
    from trainer.config import parse_trial_config

    raw = {
        "model": {"path": str(model)},
        "data": {
            "train": [{"path": str(data_dir / f)} for f in train_files],
            "eval": [{"path": str(data_dir / "eval.jsonl")}] if with_eval else [],
        },
        "hparams": {"effective_batch_size": batch, "learning_rate": lr,
                    "warmup_steps": warmup, "lr_scheduler": schedule},
        "budget": {"max_samples": samples},
        "resources": {"zero_stage": 2, "device": "cpu"},
        "seed": seed,
    }
    if output_dir is not None:
        raw["output_dir"] = str(output_dir)
    return parse_trial_config(raw, source="curve bank")


def run_one(cfg) -> tuple[list[dict], dict, float]:
    import torch

    from trainer.loop import run_trial
    from trainer.reporting import InMemoryReporter

    torch.set_num_threads(1)
    rep = InMemoryReporter()
    start = time.perf_counter()
    result = run_trial(cfg, rep)
    return rep.steps, result, time.perf_counter() - start


def pretrain_base(data_dir: Path, out_dir: Path, spec: dict) -> dict:
    cfg = trial_config("builtin:tiny", data_dir, ["knowledge_pretrain.jsonl"], spec["batch"],
                       spec["lr"], spec["warmup"], spec["schedule"], spec["samples"], spec["seed"],
                       output_dir=out_dir, with_eval=False)
    steps, result, wall = run_one(cfg)
    size = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    return {**spec, "steps": len(steps), "tokens": steps[-1]["tokens"],
            "first_loss": _g(steps[0]["loss"]), "final_loss": _g(steps[-1]["loss"]),
            "wall_seconds": round(wall, 1), "saved_bytes": size}


def record(run: dict, steps: list[dict], result: dict, wall: float) -> dict:
    cols = {k: [] for k in STEP_KEYS}
    for s in steps:
        cols["step"].append(s["step"])
        cols["samples"].append(s["samples"])
        cols["tokens"].append(s["tokens"])
        cols["loss"].append(_g(s["loss"]))
        cols["grad_norm"].append(_g(s["grad_norm"]))
        cols["lr"].append(_g(s["lr"], 4))
        cols["seconds"].append(round(s["seconds"], 3))
    final = {k: result.get(k) for k in ("status", "eval_loss", "exact_match", "mc_accuracy",
                                        "by_domain", "train_loss", "steps", "samples", "tokens")}
    final["train_seconds"] = result.get("seconds")
    final["wall_seconds"] = round(wall, 3)
    run_id, config_id = grid.ids_of(run)
    return {"kind": "run", "id": run_id, "config_id": config_id,
            "config": dict(run), "steps": cols, "final": final}


def versions() -> dict:
    import deepspeed
    import numpy
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "deepspeed": deepspeed.__version__,
            "numpy": numpy.__version__, "platform": platform.platform(),
            "cpus": os.cpu_count()}


def write_bank(path: Path, meta: dict, runs: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    # mtime=0: the same runs always give the same bytes
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=9) as f:
        f.write((json.dumps(meta) + "\n").encode())
        for r in runs:
            f.write((json.dumps(r, separators=(",", ":")) + "\n").encode())
    tmp.replace(path)


def make_night_data(work: Path) -> dict[int, Path]:
    """One larger draw of the synthetic data, its knowledge questions and skill tasks split into
    two disjoint halves (night 1, night 2), each written with the draw's eval set. -> night -> dir"""
    import random

    from trainer.synthetic import make_data

    pool = work / "pool"
    make_data(pool, seed=DATA_SEED, n_train=NIGHT_POOL_TRAIN)
    dirs = {}
    for night in grid.NIGHTS:
        dirs[night] = work / f"night{night}"
        dirs[night].mkdir(parents=True, exist_ok=True)
        shutil.copyfile(pool / "eval.jsonl", dirs[night] / "eval.jsonl")
    for name in FINETUNE_FILES:
        lines = (pool / name).read_text(encoding="utf-8").splitlines(keepends=True)
        random.Random(f"night-split:{NIGHT_SPLIT_SEED}:{name}").shuffle(lines)
        half = len(lines) // len(grid.NIGHTS)
        for i, night in enumerate(grid.NIGHTS):
            (dirs[night] / name).write_text("".join(lines[i * half:(i + 1) * half]), encoding="utf-8")
    return dirs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the bank and base model go")
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK, help="data and the resumable run log")
    ap.add_argument("--budget", type=int, default=grid.BUDGET_SAMPLES, help="fine-tuning samples per run")
    ap.add_argument("--pretrain-samples", type=int, default=PRETRAIN["samples"])
    ap.add_argument("--keep-base", action="store_true", help="reuse <out>/base_model if it is there")
    ap.add_argument("--fresh", action="store_true", help="forget finished runs in <work>/runs.jsonl")
    ap.add_argument("--pilot", action="store_true",
                    help="3 configs, budget 512, pretrain 800, written under <work>/pilot")
    ap.add_argument("--limit", type=int, default=None, help="stop after this many runs (testing)")
    ap.add_argument("--bank", choices=("grid", "night"), default="grid",
                    help="grid: the curve bank (pretrains the base model); night: night 1 + night 2 "
                         "from the stored base model (issue 12)")
    args = ap.parse_args(argv)
    if args.bank == "night":
        return main_night(args)

    from trainer.synthetic import make_data

    runs = grid.all_runs()
    if args.pilot:
        args.out = args.work / "pilot"
        args.budget, args.pretrain_samples = 512, 800
        runs = [r for r in runs if r["seed"] == 0 and r["warmup"] == 0 and r["schedule"] == "constant"
                and r["lr"] == 4e-3]
    if args.limit is not None:
        runs = runs[: args.limit]
    for r in runs:
        if args.budget % r["batch"]:
            raise SystemExit(f"budget {args.budget} is not a multiple of batch {r['batch']}")
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data_dir = args.work / "data"
    make_data(data_dir, seed=DATA_SEED)

    base_dir = args.out / "base_model"
    pretrain = {**PRETRAIN, "samples": args.pretrain_samples}
    log_path = args.work / ("pilot_runs.jsonl" if args.pilot else "runs.jsonl")
    base_info_path = args.work / ("pilot_base.json" if args.pilot else "base.json")
    if args.keep_base and (base_dir / "config.json").exists() and base_info_path.exists():
        base_info = json.loads(base_info_path.read_text())
        print(f"base model: reusing {base_dir}", flush=True)
    else:
        print(f"base model: pretraining builtin:tiny, {pretrain['samples']} samples ...", flush=True)
        if base_dir.exists():
            shutil.rmtree(base_dir)
        base_info = pretrain_base(data_dir, base_dir, pretrain)
        base_info_path.write_text(json.dumps(base_info))
        if log_path.exists():
            log_path.unlink()  # runs from another base model no longer count
        print(f"base model: {json.dumps(base_info)}", flush=True)

    done: dict[str, dict] = {}
    if log_path.exists() and not args.fresh:
        for line in log_path.read_text().splitlines():
            r = json.loads(line)
            if r["steps"]["samples"][-1] == args.budget:
                done[r["id"]] = r
    record_runs(runs, done, log_path, lambda run: data_dir, base_dir, args.budget)

    meta = {
        "kind": "meta",
        "made_by": "python -m benchmarks.curve_bank.generate" + (" --pilot" if args.pilot else ""),
        "data": {"generator": "trainer.synthetic.make_data", "seed": DATA_SEED,
                 "finetune_files": list(FINETUNE_FILES), "eval_file": "eval.jsonl"},
        "base_model": base_info,
        "budget_samples": args.budget,
        "grid": {"batch": list(grid.BATCH_SIZES), "lr": list(grid.LEARNING_RATES),
                 "warmup": list(grid.WARMUPS), "schedule": list(grid.SCHEDULES)},
        "trainer": {"optimizer": "AdamW (0.9, 0.95), weight decay 0, grad clip 1.0",
                    "zero_stage": 2, "precision": "fp32 (CPU)", "torch_threads": 1},
        "versions": versions(),
        "generation_wall_seconds_this_session": round(time.perf_counter() - t0, 1),
        "runs_wall_seconds": round(sum(r["final"]["wall_seconds"] for r in done.values()), 1),
    }
    ordered = [done[grid.ids_of(r)[0]] for r in runs if grid.ids_of(r)[0] in done]
    write_bank(args.out / BANK_NAME, meta, ordered)
    print(f"bank: {len(ordered)} runs -> {args.out / BANK_NAME} "
          f"({(args.out / BANK_NAME).stat().st_size / 1e3:.0f} kB)", flush=True)
    return 0


def record_runs(runs: list[dict], done: dict[str, dict], log_path: Path, data_dir_of, model,
                budget: int) -> None:
    """Run every run not in ``done``, appending each to ``log_path`` as it finishes."""
    todo = [r for r in runs if grid.ids_of(r)[0] not in done]
    print(f"runs: {len(runs)} ({len(runs) - len(todo)} already in {log_path})", flush=True)
    walls = []
    for i, run in enumerate(todo):
        cfg = trial_config(model, data_dir_of(run), FINETUNE_FILES, run["batch"], run["lr"],
                           run["warmup"], run["schedule"], budget, run["seed"])
        steps, result, wall = run_one(cfg)
        rec = record(run, steps, result, wall)
        done[rec["id"]] = rec
        with open(log_path, "a") as f:
            f.write(json.dumps(rec, separators=(",", ":")) + "\n")
        walls.append(wall)
        eta = (len(todo) - i - 1) * sum(walls) / len(walls)
        fin = rec["final"]
        print(f"[{i + 1}/{len(todo)}] {rec['id']}: {wall:.1f}s eval_loss {fin['eval_loss']:.4f} "
              f"exact_match {fin['exact_match']:.3f} mc_accuracy {fin['mc_accuracy']:.3f} "
              f"(eta {eta / 60:.1f} min)", flush=True)


def main_night(args) -> int:
    """The night bank: grid.night_runs() from the stored base model on two halves of the data."""
    from benchmarks.curve_bank.bank import load_bank

    out = args.out
    work = NIGHT_WORK if args.work == DEFAULT_WORK else args.work
    budget = grid.NIGHT_BUDGET_SAMPLES if args.budget == grid.BUDGET_SAMPLES else args.budget
    base_dir = out / "base_model"
    if not (base_dir / "config.json").exists():
        raise SystemExit(f"no base model in {base_dir}: make the curve bank first (make curve-bank)")
    runs = grid.night_runs()
    if args.limit is not None:
        runs = runs[: args.limit]
    for r in runs:
        if budget % r["batch"]:
            raise SystemExit(f"budget {budget} is not a multiple of batch {r['batch']}")
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    dirs = make_night_data(work)
    log_path = work / "runs.jsonl"
    done: dict[str, dict] = {}
    if log_path.exists() and not args.fresh:
        for line in log_path.read_text().splitlines():
            r = json.loads(line)
            if r["steps"]["samples"][-1] == budget:
                done[r["id"]] = r
    record_runs(runs, done, log_path, lambda run: dirs[run["night"]], base_dir, budget)

    base_info = load_bank(out / BANK_NAME).meta.get("base_model", {}) if (out / BANK_NAME).exists() else {}
    meta = {
        "kind": "meta",
        "bank": "night",
        "made_by": "python -m benchmarks.curve_bank.generate --bank night",
        "data": {"generator": "trainer.synthetic.make_data", "seed": DATA_SEED,
                 "n_train": NIGHT_POOL_TRAIN, "split_seed": NIGHT_SPLIT_SEED,
                 "finetune_files": list(FINETUNE_FILES), "eval_file": "eval.jsonl",
                 "nights": {str(n): {f: sum(1 for _ in open(dirs[n] / f)) for f in FINETUNE_FILES}
                            for n in grid.NIGHTS},
                 "how": "the draw's knowledge questions and skill tasks, shuffled with the split "
                        "seed and cut into disjoint halves: night 1 = the first, night 2 = the "
                        "second; both evaluated on the draw's eval.jsonl"},
        "base_model": {"path": "benchmarks/data/base_model", **base_info},
        "budget_samples": budget,
        "grid": {"night": list(grid.NIGHTS), "batch": list(grid.NIGHT_BATCH_SIZES),
                 "lr": list(grid.NIGHT_LEARNING_RATES), "warmup": [0], "schedule": ["constant"],
                 "seed": [0]},
        "trainer": {"optimizer": "AdamW (0.9, 0.95), weight decay 0, grad clip 1.0",
                    "zero_stage": 2, "precision": "fp32 (CPU)", "torch_threads": 1},
        "versions": versions(),
        "generation_wall_seconds_this_session": round(time.perf_counter() - t0, 1),
        "runs_wall_seconds": round(sum(r["final"]["wall_seconds"] for r in done.values()), 1),
    }
    ordered = [done[grid.ids_of(r)[0]] for r in runs if grid.ids_of(r)[0] in done]
    write_bank(out / NIGHT_BANK_NAME, meta, ordered)
    print(f"bank: {len(ordered)} runs -> {out / NIGHT_BANK_NAME} "
          f"({(out / NIGHT_BANK_NAME).stat().st_size / 1e3:.0f} kB)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
