"""Trainer throughput: sweepd's trainer against the Hugging Face trainers set up as a careful user would.

Every trainer trains the same model (fp32, CPU; `--model`: `builtin:tiny`, or `llama1b-mix`, Llama-3.2-1B's
proportions scaled down, `benchmarks/bench_models.py`) on the built-in synthetic variable-length chat
data (`trainer.synthetic.make_data(seed=0)`, 19-372 tokens a sample, mean 133) with the same loss
masking (assistant turns' content and end marker; `pretraining` content in full), an effective
batch of 32 samples, AdamW (0.9, 0.95), weight decay 0, gradient clipping 1.0, a constant LR and
DeepSpeed ZeRO stage 2, for the same number of optimizer steps:

1. sweepd: `trainer.loop.run_trial` (padding-free: a micro-batch is one row of its samples back
   to back; `micro_batch_tokens` 16384, so each step is one micro-batch, as the peers' fastest
   split is: memory is no constraint at this size; its own packed attention). The first run is a
   whole `--trial-steps` trial (default 200, final evaluation included), which also gives the
   wall time issue 2 asks for; throughput is read from its per-step reports (cumulative real `tokens` and `seconds`).
2. The peers (`benchmarks/throughput_peers.py`), each through the HF DeepSpeed integration
   (`deepspeed=` a dict), with transformers' default attention (SDPA), each at its fastest
   micro-batch split here (`benchmarks/throughput_probe.py`):
   - `transformers.Trainer`, `train_sampling_strategy="group_by_length"` (transformers 4's
     `group_by_length=True`), `DataCollatorForSeq2Seq` padding each micro-batch to its longest
     sample, on sweepd's own tokenized samples (`trainer.data.load_samples`);
   - TRL `SFTTrainer`, `assistant_only_loss=True` (a chat template with generation markers that
     tokenizes to exactly sweepd's input_ids and labels: checked), padded per batch with
     `group_by_length`, and with `packing=True, packing_strategy="bfd"`, `max_length=512` (8
     packed rows per step, about the tokens of 32 samples); `--peers` adds `trl_pf`,
     `padding_free=True` without packing (no faster than packing here, so not run by default).
   Padding-free batches are correct on the CPU with SDPA: transformers builds a block-diagonal
   causal mask from the restarting `position_ids` (checked on each run).

"Real tokens" are the non-padding tokens the model consumed in training forwards, the same
definition for all: sweepd's reported `tokens`; for the peers a forward pre-hook sums
`attention_mask` (padded batches) or the non-pad tokens of the flattened row (padding-free).
Throughput is real tokens per second from the end of step `--warmup` to the end of step
`--steps`. The trainers run in turn for `--rounds` rounds, the order rotating each round, so that
load from other processes on a shared machine hits all alike; a run during which other processes
kept more than 0.25 of a core busy is "contended" and left out when every trainer has a clean run.
The table gives each trainer's median real tokens/s, padding fraction (sweepd's replayed from its
step planner, `trainer.batching.plan_step` + `padding_waste`; the peers' 1 - real / padded tokens
seen by the model), micro-batches and samples per step, and the ratio sweepd / best peer against
the target of 1.3x, with whether it holds. It also gives real tokens per CPU-second of the
process (all threads, from /proc): with `--threads 1` a figure that other processes' load
disturbs much less than wall-clock time (with 2 threads it counts OpenMP spin-waits too).

The peers keep `use_cpu=False`: with `use_cpu=True` accelerate silently drops DeepSpeed. With
DS_ACCELERATOR=cpu and a gloo process group of one (made here with `trainer.distributed.setup`,
as sweepd's trainer makes it), accelerate picks DistributedType.DEEPSPEED on the CPU and the
Trainer builds a real DeepSpeedEngine with ZeRO-2's DeepSpeedZeroOptimizer (recorded in the JSON).

`--ablation` adds a run of sweepd per round with `trainer/last_layer.py` switched off (the last
layer's MLP on every token), printed beside the rest but never counted as a peer: what that
trim buys on this model.

Run: `make bench` (or `.venv/bin/python benchmarks/trainer_throughput.py`; TRL comes with
`pip install -c constraints.txt -e '.[bench]'`). Prints the table and writes
benchmarks/results/trainer_throughput.json. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# DeepSpeed picks its accelerator at import time; on a machine without CUDA make it the CPU one.
os.environ.setdefault("DS_ACCELERATOR", "cpu")
# Nothing is downloaded: the model is built here, the data made here, TRL's template given.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402

from benchmarks.bench_models import MODELS, head_share, model_path  # noqa: E402
from benchmarks.cpu_clock import (CONTENDED_CORES, cpu_snapshot, loadavg, median_step_rate, others_cores,  # noqa: E402
                                  own_cpu_seconds, rate, wait_for_quiet)
from benchmarks.throughput_summary import summarize  # noqa: E402
from trainer import last_layer  # noqa: E402
from benchmarks.throughput_peers import DEFAULT_PEERS, PEERS, TRL_TEMPLATE, deepspeed_config, describe_peer, run_peer  # noqa: E402

EFFECTIVE_BATCH = 32
# The peers' batching, each its fastest split here by benchmarks/throughput_probe.py (figures in
# benchmarks/README.md): samples per micro-batch (x EFFECTIVE_BATCH / that accumulation steps) for
# transformers.Trainer, TRL padded and TRL padding-free; packed rows of MAX_SEQ_LEN tokens per
# micro-batch x micro-batches per step for TRL packing (8 rows: about the tokens of 32 samples).
HF_MICRO = 32
TRLG_MICRO = 32
TRL_MICRO = 4
PACK_ROWS, PACK_ACCUM = 1, 8
LEARNING_RATE = 3e-4
BETAS = (0.9, 0.95)
WEIGHT_DECAY = 0.0
GRAD_CLIP = 1.0
MAX_SEQ_LEN = 512
SWEEPD_MICRO_BATCH_TOKENS = 16384  # a step's samples (32 x at most 372 tokens) in one micro-batch
ZERO_STAGE = 2
SEED = 0
TARGET = 1.3
ABLATION = "sweepd_full_mlp"  # --ablation: sweepd with trainer/last_layer.py switched off


def log(msg: str) -> None:
    print(msg, flush=True)


# ---- sweepd -------------------------------------------------------------------------------------

def sweepd_padding(data_dir: Path, trial_steps: int, warmup: int, steps: int) -> tuple[float | None, float | None]:
    """(padding fraction, micro-batches per step) of the window, replayed from sweepd's pure step
    planner (`trainer.batching.plan_step` + `padding_waste`); (None, None) if the planner's
    interface has moved on (the trainer is being worked on; the benchmark should still run)."""
    try:
        from trainer.batching import one_row, padding_waste, plan_step, sample_order
        from trainer.data import ChatTokenizer, load_samples
        from trainer.models import load_model

        tok = load_model("builtin:tiny", seed=SEED).tokenizer
        samples = load_samples([str(data_dir / "train.jsonl")], ChatTokenizer(tok), MAX_SEQ_LEN)
        order = sample_order([len(samples)], trial_steps, EFFECTIVE_BATCH, SEED, "stacked")
        pad = total = 0
        micro = []
        for step in range(warmup, steps):  # 0-based: steps warmup+1 .. steps
            plan = plan_step(order, step, EFFECTIVE_BATCH, samples, rank=0, world=1, max_seq_len=MAX_SEQ_LEN,
                             micro_batch_tokens=SWEEPD_MICRO_BATCH_TOKENS, micro_batch_size=None)
            lengths = {i: len(samples[i]) for row_group in plan.micro for row in row_group for i in row}
            p, t = padding_waste([one_row(rows) for rows in plan.micro], lengths)  # as the loop feeds them
            pad, total = pad + p, total + t
            micro.append(plan.num_micro_steps)
        return pad / total, sum(micro) / len(micro)
    except Exception as err:  # noqa: BLE001
        log(f"           (padding replay unavailable: {type(err).__name__}: {err})")
        return None, None


def run_sweepd(data_dir: Path, trial_steps: int, warmup: int, steps: int, with_eval: bool = True,
               model: str = "builtin:tiny") -> dict:
    from trainer.config import parse_trial_config
    from trainer.loop import run_trial
    from trainer.reporting import InMemoryReporter

    raw = {
        "model": {"path": model},
        "data": {"train": [{"path": str(data_dir / "train.jsonl")}],
                 "eval": [{"path": str(data_dir / "eval.jsonl")}] if with_eval else [],
                 "max_seq_len": MAX_SEQ_LEN},
        "hparams": {"effective_batch_size": EFFECTIVE_BATCH, "learning_rate": LEARNING_RATE,
                    "warmup_steps": 0, "lr_scheduler": "constant"},
        "budget": {"max_steps": trial_steps},
        "resources": {"num_workers": 1, "zero_stage": ZERO_STAGE, "micro_batch_tokens": SWEEPD_MICRO_BATCH_TOKENS},
        "optimizer": {"betas": list(BETAS), "weight_decay": WEIGHT_DECAY, "grad_clip": GRAD_CLIP},
        "seed": SEED,
        "output_dir": None,
    }
    cfg = parse_trial_config(raw)

    class ClockedReporter(InMemoryReporter):
        """Also notes how busy the machine was (other processes) at the end of every step."""

        def __init__(self) -> None:
            super().__init__()
            self.cpu: dict[int, tuple | None] = {}

        def step(self, metrics: dict) -> None:
            super().step(metrics)
            if "tokens" in metrics:
                self.cpu[metrics["step"]] = cpu_snapshot()

    rep = ClockedReporter()
    before = cpu_snapshot()
    t0 = time.perf_counter()
    result = run_trial(cfg, rep)
    wall = time.perf_counter() - t0
    after = cpu_snapshot()
    if result["status"] != "completed":
        raise RuntimeError(f"sweepd trial did not complete: {result}")
    points = [(m["step"], m["tokens"], m["seconds"]) for m in rep.steps if "tokens" in m]

    pad_frac, micro_per_step = sweepd_padding(data_dir, trial_steps, warmup, steps)
    train_s = result["seconds"]
    last_step_s = points[-1][2]
    return {
        "tokens_per_s": rate(points, warmup, steps),
        "tokens_per_s_median_step": median_step_rate(points, warmup, steps),
        "tokens_per_s_whole_trial": rate(points, warmup, points[-1][0]),
        "others_cpu_cores": others_cores(rep.cpu.get(warmup), rep.cpu.get(steps)),
        "own_cpu_seconds": own_cpu_seconds(rep.cpu.get(warmup), rep.cpu.get(steps)),
        "padding_fraction": pad_frac,
        "micro_batches_per_step": micro_per_step,
        "samples_per_step": EFFECTIVE_BATCH,
        "window_seconds": dict((s, sec) for s, _, sec in points)[steps] - dict((s, sec) for s, _, sec in points)[warmup],
        "real_tokens_window": dict((s, t) for s, t, _ in points)[steps] - dict((s, t) for s, t, _ in points)[warmup],
        "trial": {
            "steps": result["steps"],
            "wall_seconds": round(wall, 2),
            "train_loop_seconds": train_s,
            "setup_and_eval_seconds": round(wall - last_step_s, 2),
            "others_cpu_cores": others_cores(before, after),
            "final_train_loss": result["train_loss"],
            "eval_loss": result.get("eval_loss"),
        },
        "first_step_loss": rep.steps[0]["loss"],
        "loss_at_window_end": dict((m["step"], m["loss"]) for m in rep.steps if "loss" in m)[steps],
    }


# ---- main ---------------------------------------------------------------------------------------

def settings(args) -> dict:
    """Everything the peers need to be set up like sweepd (and the timing window)."""
    for flag, micro in (("--hf-micro", args.hf_micro), ("--trl-micro", args.trl_micro),
                        ("--trlg-micro", args.trlg_micro)):
        if micro < 1 or EFFECTIVE_BATCH % micro:
            raise SystemExit(f"{flag} must divide the effective batch {EFFECTIVE_BATCH}")
    return {
        "steps": args.steps, "warmup": args.warmup, "seed": SEED, "learning_rate": LEARNING_RATE,
        "betas": list(BETAS), "weight_decay": WEIGHT_DECAY, "grad_clip": GRAD_CLIP, "zero_stage": ZERO_STAGE,
        "max_seq_len": MAX_SEQ_LEN, "model_path": "builtin:tiny",
        "hf_micro": args.hf_micro, "hf_accum": EFFECTIVE_BATCH // args.hf_micro,
        "trl_micro": args.trl_micro, "trl_accum": EFFECTIVE_BATCH // args.trl_micro,
        "trlg_micro": args.trlg_micro, "trlg_accum": EFFECTIVE_BATCH // args.trlg_micro,
        "pack_rows": args.pack_rows, "pack_accum": args.pack_accum,
    }


LABELS = {"sweepd": "sweepd (trainer.loop.run_trial)",
          ABLATION: "sweepd, last layer's MLP on every token (ablation, not a peer)"}


def cpu_world(threads: int | None) -> None:
    """Quiet logs, a gloo world of one as sweepd's trainer makes it (accelerate then picks DeepSpeed
    on the CPU for the HF peers too, whichever side runs first), and the torch thread count."""
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" / "Writing model shards" bars
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    # accelerate warns that DeepSpeed's gradient_accumulation_steps replaces its plugin's (1): expected.
    logging.getLogger("accelerate").setLevel(logging.ERROR)
    from trainer.distributed import setup as dist_setup

    dist_setup("cpu")
    if threads:
        torch.set_num_threads(threads)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=60, help="optimizer steps per timed run of every trainer")
    ap.add_argument("--warmup", type=int, default=5, help="steps excluded from the timing")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds of one run per trainer, order rotating (the first sweepd run is the long trial)")
    ap.add_argument("--trial-steps", type=int, default=200, help="length of the sweepd trial whose wall time is reported")
    ap.add_argument("--peers", default=",".join(DEFAULT_PEERS),
                    help=f"comma-separated peers among {', '.join(PEERS)} (default: {','.join(DEFAULT_PEERS)})")
    ap.add_argument("--no-sweepd", action="store_true", help="peers only (to probe their settings)")
    ap.add_argument("--ablation", action="store_true",
                    help="also run sweepd with its last layer's MLP on every token (trainer/last_layer.py off)")
    ap.add_argument("--hf-micro", type=int, default=HF_MICRO, help="transformers.Trainer: samples per micro-batch")
    ap.add_argument("--trl-micro", type=int, default=TRL_MICRO, help="TRL padding_free: samples per micro-batch")
    ap.add_argument("--trlg-micro", type=int, default=TRLG_MICRO,
                    help="TRL group_by_length (padded): samples per micro-batch")
    ap.add_argument("--pack-rows", type=int, default=PACK_ROWS, help="TRL packing: packed rows per micro-batch")
    ap.add_argument("--pack-accum", type=int, default=PACK_ACCUM, help="TRL packing: micro-batches per step")
    ap.add_argument("--max-wait", type=float, default=3.0,
                    help="before each run, wait up to this many seconds for other processes to leave the CPUs")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads for every trainer (default: torch's own default); with 1 "
                         "thread the tokens per CPU-second are robust to other processes' load")
    ap.add_argument("--model", default="tiny", choices=MODELS,
                    help="tiny: builtin:tiny; llama1b-mix: Llama-3.2-1B's proportions scaled down (benchmarks/bench_models.py)")
    ap.add_argument("--out", default=None,
                    help="default benchmarks/results/trainer_throughput.json (tiny), trainer_throughput_<model>.json otherwise")
    args = ap.parse_args(argv)
    if not 0 < args.warmup < args.steps:
        ap.error("need 0 < --warmup < --steps")
    if args.rounds < 1:
        ap.error("need --rounds >= 1")
    peers = [p for p in args.peers.split(",") if p]
    if unknown := [p for p in peers if p not in PEERS]:
        ap.error(f"unknown peer(s) {unknown}; choose among {PEERS}")
    sides = ([] if args.no_sweepd else ["sweepd"]) + ([ABLATION] if args.ablation else []) + peers
    if not sides:
        ap.error("nothing to run")
    trial_steps = max(args.trial_steps, args.steps)
    s = settings(args)
    for p in PEERS:
        LABELS[p] = describe_peer(p, s)

    cpu_world(args.threads)
    from trainer.synthetic import make_data

    threads = torch.get_num_threads()
    load_start = loadavg()
    log(f"torch {torch.__version__}, {threads} intra-op threads ({'--threads' if args.threads else 'the default'}, used by all), "
        f"{os.cpu_count()} CPUs, load average {load_start}")
    log(f"{args.model}, fp32 CPU, effective batch {EFFECTIVE_BATCH} samples, ZeRO-{ZERO_STAGE}; timed steps "
        f"{args.warmup + 1}..{args.steps} of each run; {args.rounds} round(s), order rotating")
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    errors: dict[str, str] = {}
    helpers = {"cpu_snapshot": cpu_snapshot, "others_cores": others_cores, "rate": rate,
               "median_step_rate": median_step_rate, "own_cpu_seconds": own_cpu_seconds}
    t_all = time.perf_counter()

    def describe(res: dict) -> str:
        busy = res["others_cpu_cores"]
        flag = "" if busy is None else (f"; other processes used {busy:.2f} cores"
                                         + (" -> CONTENDED" if res["contended"] else ""))
        pad = res.get("padding_fraction")
        return (f"           {res['tokens_per_s']:.0f} real tokens/s (median step {res['tokens_per_s_median_step']:.0f}"
                + ("" if pad is None else f", padding {pad:.1%}") + f"){flag}")

    with tempfile.TemporaryDirectory(prefix="sweepd-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        make_data(data_dir, seed=SEED)
        s["model_path"] = model_path(args.model, Path(tmp), SEED)
        from trainer.models import load_model

        share = head_share(load_model(s["model_path"], seed=SEED).model)
        log(f"model {args.model} ({s['model_path']}): output head {share:.1%} of the matmul weights")

        def one_run(side: str, r: int) -> None:
            if side in errors:
                return
            waited = wait_for_quiet(args.max_wait)
            try:
                if side == "sweepd":
                    first = not runs["sweepd"]
                    n = trial_steps if first else args.steps
                    what = f"a {n}-step trial, final eval included" if first else f"{n} steps, no eval"
                    log(f"  round {r + 1}: {LABELS[side]} ({what}) ...")
                    res = run_sweepd(data_dir, n, args.warmup, args.steps, with_eval=first, model=s["model_path"])
                elif side == ABLATION:
                    log(f"  round {r + 1}: {LABELS[side]} ({args.steps} steps, no eval) ...")
                    with last_layer.switched_off():
                        res = run_sweepd(data_dir, args.steps, args.warmup, args.steps, with_eval=False,
                                         model=s["model_path"])
                else:
                    log(f"  round {r + 1}: {LABELS[side]} ({args.steps} steps) ...")
                    res = run_peer(side, s, data_dir, Path(tmp) / f"{side}{r}", helpers)
            except Exception as err:  # noqa: BLE001 - report it; the other trainers are still worth printing
                errors[side] = f"{type(err).__name__}: {err}"
                log(f"           failed: {errors[side]}")
                return
            cpu_s = res.get("own_cpu_seconds")
            res["tokens_per_cpu_s"] = res["real_tokens_window"] / cpu_s if cpu_s else None
            res.update(round=r + 1, waited_for_quiet_s=waited, load_average_after=loadavg(),
                       contended=(res["others_cpu_cores"] or 0.0) > CONTENDED_CORES)
            log(describe(res))
            runs[side].append(res)

        for r in range(args.rounds):
            k = r % len(sides)
            for side in sides[k:] + sides[:k]:
                one_run(side, r)
    total_s = time.perf_counter() - t_all
    threads_end = torch.get_num_threads()

    import deepspeed
    import transformers

    try:
        import trl
        trl_version = trl.__version__
    except ImportError:
        trl_version = None

    summary = summarize(runs, sides, peers, errors, rounds=args.rounds, warmup=args.warmup, steps=args.steps,
                        labels=LABELS, target=TARGET, contended_cores=CONTENDED_CORES, log=log)
    log(f"(threads {threads} -> {threads_end}; load average {load_start} -> {loadavg()}; benchmark took {total_s:.0f} s)")

    record = {
        "benchmark": "trainer_throughput",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "torch_threads": threads, "load_average_start": load_start, "load_average_end": loadavg()},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "deepspeed": deepspeed.__version__, "trl": trl_version},
        "setup": {"model": args.model, "model_head_share": share, "dtype": "fp32", "device": "cpu", "effective_batch": EFFECTIVE_BATCH,
                  "zero_stage": ZERO_STAGE, "learning_rate": LEARNING_RATE, "lr_scheduler": "constant",
                  "betas": list(BETAS), "weight_decay": WEIGHT_DECAY, "grad_clip": GRAD_CLIP,
                  "max_seq_len": MAX_SEQ_LEN, "timed_steps": [args.warmup + 1, args.steps], "rounds": args.rounds,
                  "contended_above_cores": CONTENDED_CORES, "data": "trainer.synthetic.make_data(seed=0)",
                  "peers": {p: LABELS[p] for p in peers}, "peer_settings": s,
                  "hf_deepspeed_config": deepspeed_config(GRAD_CLIP, ZERO_STAGE), "trl_chat_template": TRL_TEMPLATE,
                  "real_tokens": "non-padding tokens the model consumed in training forwards (sweepd: its "
                                 "reported `tokens`; peers: a forward pre-hook)"},
        "summary": {**summary, "benchmark_seconds": round(total_s, 1)},
        "runs": runs,
        "errors": errors,
    }
    out = Path(args.out or ROOT / "benchmarks" / "results" / (
        "trainer_throughput.json" if args.model == "tiny" else f"trainer_throughput_{args.model.replace('-', '_')}.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    log(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
