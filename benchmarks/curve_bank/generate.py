"""Make the curve bank (``make curve-bank``): pretrain a base model, then fine-tune it over the grid.

    .venv/bin/python -m benchmarks.curve_bank.generate            # the full bank (~40 min, 2 cores)
    .venv/bin/python -m benchmarks.curve_bank.generate --pilot    # 3 configs, short budgets

1. Data: ``trainer.synthetic.make_data(seed=0)`` (default sizes) into the work folder.
2. Base model: ``builtin:tiny`` pretrained on ``knowledge_pretrain.jsonl`` (facts about made-up
   people) for a fixed budget, saved in Hugging Face format to ``<out>/base_model``.
3. Fine-tuning: every run of ``grid.all_runs()`` from the base model on ``knowledge_train.jsonl``
   + ``skills_train.jsonl`` (stacked), ``BUDGET_SAMPLES`` samples each, evaluated at the end on
   ``eval.jsonl``. Every optimizer step is recorded.

One process, one torch thread (the machine is shared); runs are appended to
``<work>/runs.jsonl`` as they finish, so an interrupted generation resumes where it stopped.
The bank is written to ``<out>/curve_bank.jsonl.gz``: a ``meta`` line, then one ``run`` line each.
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
    return {"kind": "run", "id": grid.run_id(**run),
            "config_id": grid.config_id(run["batch"], run["lr"], run["warmup"], run["schedule"]),
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
    args = ap.parse_args(argv)

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
    todo = [r for r in runs if grid.run_id(**r) not in done]
    print(f"runs: {len(runs)} ({len(runs) - len(todo)} already in {log_path})", flush=True)
    walls = []
    for i, run in enumerate(todo):
        cfg = trial_config(base_dir, data_dir, FINETUNE_FILES, run["batch"], run["lr"],
                           run["warmup"], run["schedule"], args.budget, run["seed"])
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
    ordered = [done[grid.run_id(**r)] for r in runs if grid.run_id(**r) in done]
    write_bank(args.out / BANK_NAME, meta, ordered)
    print(f"bank: {len(ordered)} runs -> {args.out / BANK_NAME} "
          f"({(args.out / BANK_NAME).stat().st_size / 1e3:.0f} kB)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
