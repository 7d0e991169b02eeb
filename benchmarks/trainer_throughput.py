"""Trainer throughput: sweepd's trainer against transformers' own `Trainer`, same run, same process.

Both sides train `builtin:tiny` (fp32, CPU) on the built-in synthetic variable-length chat data with
an effective batch of 32 samples, AdamW (0.9, 0.95), weight decay 0, gradient clipping 1.0, a
constant LR and DeepSpeed ZeRO stage 2:

1. sweepd: `trainer.loop.run_trial` (packed, padding-free micro-batches of up to 4096 tokens).
   The run is a whole `--trial-steps` trial (default 200, final evaluation included), which also
   gives the wall time the issue asks for; throughput is read from its per-step reports.
2. Hugging Face: `transformers.Trainer` with the HF DeepSpeed integration (`deepspeed=` a dict),
   per_device_train_batch_size 8 x gradient_accumulation_steps 4, `DataCollatorForSeq2Seq`
   padding each micro-batch to its longest sample (the typical user setup, no group_by_length),
   on the same tokenized samples (`trainer.data.load_samples`, labels -100 off the assistant turns).

Throughput is real (non-padding) tokens per second over the same optimizer steps on both sides:
from the end of step `--warmup` to the end of step `--steps`. The two alternate for `--rounds`
rounds (sweepd, HF | HF, sweepd | ...) so that load from other processes on a shared machine hits
both alike; the summary gives the median of each side, their ratio and the per-round ratios.
sweepd's figure comes from its per-step cumulative `tokens` / `seconds` (the first sweepd run is
the long trial: its steps up to `--steps` are the ones compared; later ones run `--steps` steps
without evaluation). The Trainer's comes from a forward pre-hook that counts attention_mask.sum()
of every micro-batch the model actually consumed and a TrainerCallback that timestamps each
optimizer step. Padding: sweepd's is replayed from its pure step planner
(`trainer.batching.plan_step` + `padding_waste`); the Trainer's is 1 - real / padded tokens.

The HF side keeps `use_cpu=False`: with `use_cpu=True` accelerate silently drops DeepSpeed. With
DS_ACCELERATOR=cpu and the process group that sweepd's trainer already initialised (gloo, world 1,
RANK/WORLD_SIZE/LOCAL_RANK in the environment), accelerate picks DistributedType.DEEPSPEED on the
CPU and the Trainer builds a real DeepSpeedEngine with ZeRO-2's DeepSpeedZeroOptimizer (recorded
in the JSON).

Run: `make bench` (or `.venv/bin/python benchmarks/trainer_throughput.py`). Prints a summary and
writes benchmarks/results/trainer_throughput.json. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# DeepSpeed picks its accelerator at import time; on a machine without CUDA make it the CPU one.
os.environ.setdefault("DS_ACCELERATOR", "cpu")

import torch  # noqa: E402

EFFECTIVE_BATCH = 32
MICRO_BATCH, GRAD_ACCUM = 8, 4  # the HF side: 8 x 4 = 32
LEARNING_RATE = 3e-4
BETAS = (0.9, 0.95)
WEIGHT_DECAY = 0.0
GRAD_CLIP = 1.0
MAX_SEQ_LEN = 512
ZERO_STAGE = 2
SEED = 0
TARGET = 1.3


def log(msg: str) -> None:
    print(msg, flush=True)


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
CONTENDED_CORES = 0.25  # other processes using more CPU than this during a run mark it "contended"


def cpu_snapshot() -> tuple[float, int, int] | None:
    """(wall clock, busy jiffies of the whole machine, jiffies of this process) from /proc; None off Linux."""
    try:
        with open("/proc/stat") as fh:
            v = [int(x) for x in fh.readline().split()[1:]]
        busy = sum(v[:8]) - v[3] - v[4]  # user nice system idle iowait irq softirq steal (guest is in user)
        with open("/proc/self/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        own = int(fields[11]) + int(fields[12])  # utime + stime, all threads
        return time.perf_counter(), busy, own
    except (OSError, ValueError, IndexError):
        return None


def others_cores(a, b) -> float | None:
    """CPU cores that other processes kept busy, on average, between two snapshots."""
    if a is None or b is None or b[0] <= a[0]:
        return None
    return round(max(0.0, ((b[1] - a[1]) - (b[2] - a[2])) / CLK_TCK / (b[0] - a[0])), 3)


def wait_for_quiet(max_wait: float) -> float:
    """Wait (up to max_wait s) until other processes leave the CPUs alone for a second; return the wait."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_wait:
        a = cpu_snapshot()
        time.sleep(1.0)
        busy = others_cores(a, cpu_snapshot())
        if busy is None or busy < CONTENDED_CORES:
            break
    return round(time.perf_counter() - t0, 1)


def median_step_rate(points: list[tuple[int, int, float]], start: int, end: int) -> float:
    """Median over the steps start+1..end of each step's own tokens/s: robust to bursts of load."""
    by_step = {s: (tok, sec) for s, tok, sec in points}
    rates = [(by_step[k][0] - by_step[k - 1][0]) / (by_step[k][1] - by_step[k - 1][1])
             for k in range(start + 1, end + 1) if by_step[k][1] > by_step[k - 1][1]]
    return statistics.median(rates)


def rate(points: list[tuple[int, int, float]], start: int, end: int) -> float:
    """tokens/s between the end of step `start` and the end of step `end`; points are (step, tokens, seconds)."""
    by_step = {s: (tok, sec) for s, tok, sec in points}
    t0, s0 = by_step[start]
    t1, s1 = by_step[end]
    return (t1 - t0) / (s1 - s0)


# ---- sweepd -------------------------------------------------------------------------------------

def run_sweepd(data_dir: Path, trial_steps: int, warmup: int, steps: int, with_eval: bool = True) -> dict:
    from trainer.batching import padding_waste, plan_step, sample_order
    from trainer.config import parse_trial_config
    from trainer.data import ChatTokenizer, load_samples
    from trainer.loop import run_trial
    from trainer.models import load_model
    from trainer.reporting import InMemoryReporter

    raw = {
        "model": {"path": "builtin:tiny"},
        "data": {"train": [{"path": str(data_dir / "train.jsonl")}],
                 "eval": [{"path": str(data_dir / "eval.jsonl")}] if with_eval else [],
                 "max_seq_len": MAX_SEQ_LEN},
        "hparams": {"effective_batch_size": EFFECTIVE_BATCH, "learning_rate": LEARNING_RATE,
                    "warmup_steps": 0, "lr_scheduler": "constant"},
        "budget": {"max_steps": trial_steps},
        "resources": {"num_workers": 1, "zero_stage": ZERO_STAGE, "micro_batch_tokens": "auto"},
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

    # Padding of the micro-batches the trainer formed, replayed from its pure step planner.
    tok = load_model("builtin:tiny", seed=SEED).tokenizer
    samples = load_samples([str(data_dir / "train.jsonl")], ChatTokenizer(tok), MAX_SEQ_LEN)
    order = sample_order([len(samples)], trial_steps, EFFECTIVE_BATCH, SEED, "stacked")
    pad = total = 0
    micro_per_step = []
    for step in range(warmup, steps):  # 0-based: steps warmup+1 .. steps
        plan = plan_step(order, step, EFFECTIVE_BATCH, samples, rank=0, world=1, max_seq_len=MAX_SEQ_LEN,
                         micro_batch_tokens=None, micro_batch_size=None)
        lengths = {i: len(samples[i]) for row_group in plan.micro for row in row_group for i in row}
        p, t = padding_waste(plan.micro, lengths)
        pad, total = pad + p, total + t
        micro_per_step.append(plan.num_micro_steps)

    train_s = result["seconds"]
    last_step_s = points[-1][2]
    return {
        "tokens_per_s": rate(points, warmup, steps),
        "tokens_per_s_median_step": median_step_rate(points, warmup, steps),
        "tokens_per_s_whole_trial": rate(points, warmup, points[-1][0]),
        "others_cpu_cores": others_cores(rep.cpu.get(warmup), rep.cpu.get(steps)),
        "padding_fraction": pad / total,
        "micro_batches_per_step": sum(micro_per_step) / len(micro_per_step),
        "window_seconds": dict((s, sec) for s, _, sec in points)[steps] - dict((s, sec) for s, _, sec in points)[warmup],
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


# ---- transformers.Trainer -----------------------------------------------------------------------

def hf_deepspeed_config() -> dict:
    """What a user hands the HF DeepSpeed integration for the same set-up; "auto" is filled from TrainingArguments."""
    return {
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "train_batch_size": "auto",
        "gradient_clipping": GRAD_CLIP,
        "zero_optimization": {"stage": ZERO_STAGE},
        "bf16": {"enabled": False},
        "fp16": {"enabled": False},
        "zero_allow_untested_optimizer": True,  # the Trainer's own torch AdamW, as sweepd uses
        "steps_per_print": 10**12,
        "wall_clock_breakdown": False,
    }


def run_hf(data_dir: Path, warmup: int, steps: int, out_dir: Path) -> dict:
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments
    from transformers.utils import logging as hf_logging

    from trainer.data import ChatTokenizer, load_samples
    from trainer.models import load_model

    hf_logging.set_verbosity_error()
    lm = load_model("builtin:tiny", seed=SEED)
    model, tok = lm.model, lm.tokenizer
    samples = load_samples([str(data_dir / "train.jsonl")], ChatTokenizer(tok), MAX_SEQ_LEN)

    class SampleDataset(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(samples)

        def __getitem__(self, i: int) -> dict:
            return {"input_ids": samples[i].input_ids, "labels": samples[i].labels}

    counts = {"real": 0, "total": 0, "micro": 0}

    def count_tokens(_module, args, kwargs):
        if _module.training:
            mask = kwargs.get("attention_mask")
            ids = kwargs.get("input_ids", args[0] if args else None)
            counts["real"] += int(mask.sum()) if mask is not None else ids.numel()
            counts["total"] += ids.numel()
            counts["micro"] += 1

    model.register_forward_pre_hook(count_tokens, with_kwargs=True)

    points: list[tuple[int, int, float]] = []
    totals: dict[int, int] = {}
    cpu: dict[int, tuple | None] = {}

    class StepClock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            points.append((0, 0, time.perf_counter()))
            totals[0] = 0
            cpu[0] = cpu_snapshot()

        def on_step_end(self, args, state, control, **kw):
            points.append((state.global_step, counts["real"], time.perf_counter()))
            totals[state.global_step] = counts["total"]
            cpu[state.global_step] = cpu_snapshot()

    args = TrainingArguments(
        output_dir=str(out_dir),
        max_steps=steps,
        per_device_train_batch_size=MICRO_BATCH,
        gradient_accumulation_steps=GRAD_ACCUM,
        learning_rate=LEARNING_RATE,
        adam_beta1=BETAS[0],
        adam_beta2=BETAS[1],
        weight_decay=WEIGHT_DECAY,
        max_grad_norm=GRAD_CLIP,
        lr_scheduler_type="constant",
        warmup_steps=0,
        optim="adamw_torch",
        deepspeed=hf_deepspeed_config(),
        use_cpu=False,  # use_cpu=True makes accelerate drop DeepSpeed; DS_ACCELERATOR=cpu keeps it on the CPU
        bf16=False,
        fp16=False,
        seed=SEED,
        data_seed=SEED,
        report_to=[],
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        dataloader_num_workers=0,
        train_sampling_strategy="random",  # the default: shuffled, no length grouping
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=SampleDataset(),
        data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100),
        callbacks=[StepClock()],
    )
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the Trainer prints its own metrics dict at the end
        out = trainer.train()
    wall = time.perf_counter() - t0

    engine = trainer.model_wrapped
    ds_info = {
        "deepspeed_engine": type(engine).__name__,
        "zero_stage": engine.zero_optimization_stage() if hasattr(engine, "zero_optimization_stage") else None,
        "optimizer": type(getattr(engine, "optimizer", None)).__name__,
        "accelerate_distributed_type": str(trainer.accelerator.state.distributed_type),
        "device": str(args.device),
    }
    rel = [(s, tok_, t - points[0][2]) for s, tok_, t in points]
    win_real = rel[steps][1] - rel[warmup][1]
    win_total = totals[steps] - totals[warmup]
    return {
        "tokens_per_s": rate(rel, warmup, steps),
        "tokens_per_s_median_step": median_step_rate(rel, warmup, steps),
        "others_cpu_cores": others_cores(cpu.get(warmup), cpu.get(steps)),
        "padding_fraction": 1 - win_real / win_total,
        "micro_batches_per_step": counts["micro"] / steps,
        "window_seconds": rel[steps][2] - rel[warmup][2],
        "train_wall_seconds": round(wall, 2),
        "final_train_loss": out.training_loss,
        **ds_info,
    }


# ---- main ---------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=60, help="optimizer steps per timed run on each side")
    ap.add_argument("--warmup", type=int, default=5, help="steps excluded from the timing")
    ap.add_argument("--rounds", type=int, default=5,
                    help="sweepd/HF pairs, order alternating (the first sweepd run is the long trial)")
    ap.add_argument("--trial-steps", type=int, default=200, help="length of the sweepd trial whose wall time is reported")
    ap.add_argument("--max-wait", type=float, default=10.0,
                    help="before each run, wait up to this many seconds for other processes to leave the CPUs")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "trainer_throughput.json"))
    args = ap.parse_args(argv)
    if not 0 < args.warmup < args.steps:
        ap.error("need 0 < --warmup < --steps")
    if args.rounds < 1:
        ap.error("need --rounds >= 1")
    trial_steps = max(args.trial_steps, args.steps)

    warnings.filterwarnings("ignore")
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    # accelerate warns that DeepSpeed's gradient_accumulation_steps (4) replaces its plugin's (1): expected.
    logging.getLogger("accelerate").setLevel(logging.ERROR)
    from trainer.synthetic import make_data

    threads = torch.get_num_threads()
    load_start = loadavg()
    log(f"torch {torch.__version__}, {threads} intra-op threads (the default, used by both), "
        f"{os.cpu_count()} CPUs, load average {load_start}")
    log(f"builtin:tiny, fp32 CPU, effective batch {EFFECTIVE_BATCH}, ZeRO-{ZERO_STAGE}; timed steps "
        f"{args.warmup + 1}..{args.steps} of each run; {args.rounds} round(s), order alternating")
    sweepd_runs: list[dict] = []
    hf_runs: list[dict] = []
    hf_error = None
    t_all = time.perf_counter()

    def describe(res: dict) -> str:
        busy = res["others_cpu_cores"]
        flag = "" if busy is None else (f"; other processes used {busy:.2f} cores"
                                         + (" -> CONTENDED, left out of the summary" if res["contended"] else ""))
        return (f"           {res['tokens_per_s']:.0f} tokens/s (median step {res['tokens_per_s_median_step']:.0f})"
                f"{flag}")

    with tempfile.TemporaryDirectory(prefix="sweepd-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        make_data(data_dir, seed=SEED)

        def sweepd_run(r: int) -> None:
            first = not sweepd_runs
            n = trial_steps if first else args.steps
            what = f"a {n}-step trial, final eval included" if first else f"{n} steps, no eval"
            waited = wait_for_quiet(args.max_wait)
            log(f"  round {r + 1}: sweepd trainer ({what}) ...")
            res = run_sweepd(data_dir, n, args.warmup, args.steps, with_eval=first)
            res.update(round=r + 1, waited_for_quiet_s=waited, load_average_after=loadavg(),
                       contended=(res["others_cpu_cores"] or 0.0) > CONTENDED_CORES)
            log(describe(res))
            sweepd_runs.append(res)

        def hf_run(r: int) -> None:
            nonlocal hf_error
            if hf_error:
                return
            waited = wait_for_quiet(args.max_wait)
            log(f"  round {r + 1}: transformers.Trainer + DeepSpeed ({args.steps} steps, "
                f"{MICRO_BATCH} x {GRAD_ACCUM} padded micro-batches) ...")
            try:
                res = run_hf(data_dir, args.warmup, args.steps, Path(tmp) / f"hf{r}")
            except Exception as err:  # noqa: BLE001 - report it; the sweepd half is still worth printing
                hf_error = f"{type(err).__name__}: {err}"
                log(f"           failed: {hf_error}")
                return
            res.update(round=r + 1, waited_for_quiet_s=waited, load_average_after=loadavg(),
                       contended=(res["others_cpu_cores"] or 0.0) > CONTENDED_CORES)
            log(describe(res))
            hf_runs.append(res)

        for r in range(args.rounds):
            for run in ((sweepd_run, hf_run) if r % 2 == 0 else (hf_run, sweepd_run)):
                run(r)
    total_s = time.perf_counter() - t_all
    threads_end = torch.get_num_threads()

    import deepspeed
    import transformers

    # Runs during which other processes took the CPUs measure the machine, not the trainer: leave
    # them out when both sides have at least one clean run.
    clean_sw = [x for x in sweepd_runs if not x["contended"]]
    clean_hf = [x for x in hf_runs if not x["contended"]]
    use_clean = bool(clean_sw and clean_hf)
    sw_used = clean_sw if use_clean else sweepd_runs
    hf_used = clean_hf if use_clean else hf_runs

    def med(runs: list[dict], key: str) -> float | None:
        return statistics.median(x[key] for x in runs) if runs else None

    sw_rate, hf_rate = med(sw_used, "tokens_per_s"), med(hf_used, "tokens_per_s")
    sw_step, hf_step = med(sw_used, "tokens_per_s_median_step"), med(hf_used, "tokens_per_s_median_step")
    sw_pad, hf_pad = med(sw_used, "padding_fraction"), med(hf_used, "padding_fraction")
    ratio = sw_rate / hf_rate if hf_rate else None
    ratio_step = sw_step / hf_step if hf_step else None
    by_round = {}
    for x in sweepd_runs:
        by_round.setdefault(x["round"], {})["sweepd"] = x
    for x in hf_runs:
        by_round.setdefault(x["round"], {})["hf"] = x
    pair_ratios = [{"round": r, "ratio": p["sweepd"]["tokens_per_s"] / p["hf"]["tokens_per_s"],
                    "contended": p["sweepd"]["contended"] or p["hf"]["contended"]}
                   for r, p in sorted(by_round.items()) if "sweepd" in p and "hf" in p]
    trial = sweepd_runs[0]["trial"]

    log("")
    basis = (f"{len(sw_used)} sweepd and {len(hf_used)} HF run(s)"
             + (" (uncontended only)" if use_clean and (len(clean_sw) < len(sweepd_runs) or len(clean_hf) < len(hf_runs))
                else "" if use_clean else " (no uncontended run on both sides, so all of them: these figures "
                "measure the machine's load as much as the trainers; run again on a quieter machine)"))
    log(f"medians over {basis}, steps {args.warmup + 1}..{args.steps}:")
    log(f"sweepd trainer : {sw_rate:8.0f} tokens/s (padding {sw_pad:5.1%}, "
        f"{med(sw_used, 'micro_batches_per_step'):.1f} micro-batches/step)")
    if hf_runs:
        h0 = hf_runs[0]
        log(f"HF Trainer     : {hf_rate:8.0f} tokens/s (padding {hf_pad:5.1%}, {h0['micro_batches_per_step']:.1f} "
            f"micro-batches/step; {h0['deepspeed_engine']} ZeRO-{h0['zero_stage']}, {h0['optimizer']})")
        log(f"ratio          : {ratio:.2f}x  (target >= {TARGET}x) {'OK' if ratio >= TARGET else 'BELOW TARGET'}")
        rounds_txt = ", ".join(f"{p['ratio']:.2f}x" + ("*" if p["contended"] else "") for p in pair_ratios)
        log(f"                 per round: {rounds_txt}  (* = contended); median-step ratio {ratio_step:.2f}x")
    else:
        log(f"HF Trainer     : failed: {hf_error}")
    label = f"{trial['steps']}-step trial"
    busy = trial["others_cpu_cores"]
    log(f"{label:<15}: {trial['wall_seconds']:.1f} s wall (training loop {trial['train_loop_seconds']:.1f} s, "
        f"set-up + final eval {trial['setup_and_eval_seconds']:.1f} s; target < 60 s) "
        f"{'OK' if trial['wall_seconds'] < 60 else 'OVER'}"
        + ("" if busy is None else f"; other processes used {busy:.2f} cores meanwhile"
           + (" (CONTENDED: not a fair reading)" if busy > CONTENDED_CORES else "")))
    log(f"(threads {threads} -> {threads_end}; load average {load_start} -> {loadavg()}; benchmark took {total_s:.0f} s)")

    record = {
        "benchmark": "trainer_throughput",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "torch_threads": threads, "load_average_start": load_start, "load_average_end": loadavg()},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "deepspeed": deepspeed.__version__},
        "setup": {"model": "builtin:tiny", "dtype": "fp32", "device": "cpu", "effective_batch": EFFECTIVE_BATCH,
                  "hf_micro_batch": MICRO_BATCH, "hf_grad_accum": GRAD_ACCUM, "zero_stage": ZERO_STAGE,
                  "learning_rate": LEARNING_RATE, "lr_scheduler": "constant", "betas": list(BETAS),
                  "weight_decay": WEIGHT_DECAY, "grad_clip": GRAD_CLIP, "max_seq_len": MAX_SEQ_LEN,
                  "timed_steps": [args.warmup + 1, args.steps], "rounds": args.rounds,
                  "contended_above_cores": CONTENDED_CORES,
                  "data": "trainer.synthetic.make_data(seed=0)", "hf_deepspeed_config": hf_deepspeed_config()},
        "summary": {"basis": basis, "sweepd_tokens_per_s": sw_rate, "sweepd_padding": sw_pad,
                    "hf_tokens_per_s": hf_rate, "hf_padding": hf_pad, "ratio": ratio,
                    "ratio_median_step": ratio_step, "ratio_per_round": pair_ratios, "target_ratio": TARGET,
                    "trial_steps": trial["steps"], "trial_wall_seconds": trial["wall_seconds"],
                    "trial_train_loop_seconds": trial["train_loop_seconds"], "benchmark_seconds": round(total_s, 1)},
        "sweepd_runs": sweepd_runs,
        "hf_trainer_runs": hf_runs,
        "hf_error": hf_error,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    log(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0 if hf_runs else 1


if __name__ == "__main__":
    sys.exit(main())
