#!/usr/bin/env python3
"""`make gpu-check`: a ~1B model through the real trainer on a CUDA machine, ZeRO-2 and ZeRO-3.

What it does, with nothing downloaded:

1. builds a Llama-shaped model with random weights (``--size 1b``: hidden 2048, 16 layers, 32
   heads, 8 KV heads, MLP 8192, vocab 32000, untied head: 1.10B parameters) and the byte-level
   tokenizer of ``builtin:tiny``, and saves both (bf16) into a work folder;
2. writes synthetic chat samples (random words, 1/8 to 7/8 of ``--max-seq-len`` bytes each, the
   assistant turn trained on), enough for every step;
3. runs ``trainer.loop.run_trial`` with a ``TrialConfig`` on that folder and data for each ZeRO
   stage (``--stages``, default 2,3) and worker count (1, and 2 when two GPUs exist; NCCL), each
   run in fresh processes (so peak memory is the run's own), ``--steps`` optimizer steps each;
4. prints one line per run (stage, workers, tokens/s, MFU, peak memory, first-step loss), then a
   verdict. Exit 1 when a run failed, a loss was not finite, or the first-step losses disagree
   (every run starts from the same weights on the same batch: ``--rtol``, default 2e-2, the bf16
   tolerance). ``--out FILE`` also writes everything as JSON.

Tokens/s and MFU are the medians over the steps after the first (the first one pays for CUDA's
warm-up); peak memory is the largest of the steps (see trainer/throughput.py for what each means).

On a machine without a CUDA GPU (and no ``--device cpu``) it prints one line saying so and exits 0.
``--size tiny --device cpu --steps 2`` runs the same path on a CPU in seconds (the tests do).
``--count-params`` prints the model's parameter count (by arithmetic and from a model built on the
meta device: no memory, no DeepSpeed) and exits.

It needs torch, transformers, tokenizers, pyyaml, pydantic and deepspeed importable (a project
venv is not needed: the repository root is put on ``sys.path``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Model shapes. "1b" is TinyLlama-like in width with fewer, wider-MLP layers: 1.10B parameters.
SIZES = {
    "1b": {"hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
           "intermediate_size": 8192, "vocab_size": 32000, "tie_word_embeddings": False},
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "intermediate_size": 176, "vocab_size": 320, "tie_word_embeddings": False},
}
# Per-size defaults of the run's shape (each can be overridden on the command line).
RUN_DEFAULTS = {
    "1b": {"max_seq_len": 2048, "micro_batch_tokens": 8192, "batch": 32},
    "tiny": {"max_seq_len": 256, "micro_batch_tokens": 512, "batch": 8},
}
REQUIRED = ("torch", "transformers", "tokenizers", "yaml", "pydantic", "deepspeed")
WORDS = ("the", "model", "learns", "a", "batch", "of", "tokens", "while", "gradient", "norm", "falls",
         "and", "loss", "rises", "slowly", "under", "warm", "cosine", "schedule", "with", "data", "from",
         "many", "small", "files", "packed", "into", "rows", "quickly", "zero", "stage", "three", "shards",
         "every", "parameter", "across", "workers", "bright", "river", "stone", "seven", "orange", "hill")


def say(line: str) -> None:
    print(line, flush=True)


# ---- the model ----------------------------------------------------------------------------------


def llama_config(size: str, max_seq_len: int = 2048):
    from transformers import LlamaConfig

    return LlamaConfig(**SIZES[size], max_position_embeddings=max(2048, max_seq_len), rms_norm_eps=1e-5,
                       initializer_range=0.02)


def analytic_params(shape: dict) -> int:
    """Embedding, per layer (q, k, v, o, gate/up/down, 2 norms), final norm, head."""
    h, n, v, f = shape["hidden_size"], shape["num_hidden_layers"], shape["vocab_size"], shape["intermediate_size"]
    kv = h // shape["num_attention_heads"] * shape["num_key_value_heads"]
    layer = h * h + 2 * h * kv + h * h + 3 * h * f + 2 * h
    head = 0 if shape["tie_word_embeddings"] else v * h
    return v * h + n * layer + h + head


def meta_params(size: str) -> int:
    """Parameters of the model transformers builds, on the meta device (no memory used)."""
    import torch
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(llama_config(size))
    return sum(p.numel() for p in model.parameters())


def build_model(size: str, folder: Path, device: str, max_seq_len: int, seed: int = 0) -> int:
    """Random weights (seeded), bf16, saved with the byte-level tokenizer; returns the parameter count."""
    import torch
    from transformers import LlamaForCausalLM

    from trainer.models import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    cfg = llama_config(size, max_seq_len)
    assert len(tok) <= cfg.vocab_size, (len(tok), cfg.vocab_size)
    cfg.pad_token_id, cfg.eos_token_id, cfg.bos_token_id = tok.pad_token_id, tok.eos_token_id, None
    torch.manual_seed(seed)
    with torch.device(device):  # initialising 1.1B weights is seconds on a GPU, minutes on a CPU
        model = LlamaForCausalLM(cfg)
    model.to(torch.bfloat16)
    n = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return n


# ---- the data -----------------------------------------------------------------------------------


def write_data(path: Path, count: int, max_seq_len: int, seed: int = 0) -> None:
    """Chat samples of random words: a user turn, an assistant turn (trained on), one per line; each
    sample 1/8 to 7/8 of max_seq_len bytes (the byte tokenizer: about as many tokens)."""
    rng = random.Random(seed)

    def text(n_bytes: int) -> str:
        out, size = [], 0
        while size < n_bytes:
            w = rng.choice(WORDS)
            out.append(w)
            size += len(w) + 1
        return " ".join(out)[:n_bytes]

    with path.open("w", encoding="utf-8") as fh:
        for _ in range(count):
            total = rng.randint(max_seq_len // 8, max_seq_len * 7 // 8)
            user = max(8, total // 4)
            fh.write(json.dumps({"messages": [{"role": "user", "content": text(user)},
                                              {"role": "assistant", "content": text(max(8, total - user))}]}) + "\n")


# ---- one run ------------------------------------------------------------------------------------


def trial_dict(args, model_dir: Path, data: Path, stage: int, workers: int) -> dict:
    return {
        "model": {"path": str(model_dir)},
        "data": {"train": [{"path": str(data)}], "max_seq_len": args.max_seq_len},
        "hparams": {"effective_batch_size": args.batch, "learning_rate": args.lr, "warmup_steps": 0,
                    "lr_scheduler": "constant"},
        "budget": {"max_steps": args.steps},
        "resources": {"num_workers": workers, "zero_stage": stage, "micro_batch_tokens": args.micro_batch_tokens,
                      "device": args.device},
        "seed": 0,
    }


def worker_main(trial_path: str, metrics_path: str) -> int:
    """One worker of one run (``--worker``): the real trainer, its step lines as JSONL (rank 0)."""
    from trainer.config import parse_trial_config
    from trainer.loop import run_trial
    from trainer.reporting import JsonlReporter

    cfg = parse_trial_config(json.loads(Path(trial_path).read_text()))
    rank = int(os.environ.get("RANK", "0"))
    rep = JsonlReporter(metrics_path if rank == 0 else os.devnull)
    result = run_trial(cfg, rep)
    return 0 if result["status"] == "completed" else 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    keep = [x for x in text if x.strip()][-lines:]
    return "\n".join(keep)


def launch(args, trial: dict, run_dir: Path, workers: int) -> tuple[list[int], Path, Path, float]:
    """Start the run's worker processes (own process group each), wait up to --run-timeout."""
    run_dir.mkdir(parents=True, exist_ok=True)
    trial_path, metrics, log = run_dir / "trial.json", run_dir / "metrics.jsonl", run_dir / "log.txt"
    trial_path.write_text(json.dumps(trial, indent=1))
    base = dict(os.environ, PYTHONUNBUFFERED="1")
    base["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    if args.device == "cpu":
        base["DS_ACCELERATOR"] = "cpu"
    port = str(_free_port())
    procs = []
    t0 = time.perf_counter()
    with log.open("w") as fh:
        for rank in range(workers):
            env = dict(base)
            if workers > 1:
                env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(workers), MASTER_ADDR="127.0.0.1",
                           MASTER_PORT=port, SWEEPD_TRAINER_WORKER="1")
            procs.append(subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", str(trial_path),
                                           str(metrics)], env=env, stdout=fh, stderr=subprocess.STDOUT,
                                          cwd=str(run_dir), start_new_session=True))
        codes = []
        deadline = time.monotonic() + args.run_timeout
        for p in procs:
            try:
                codes.append(p.wait(timeout=max(1.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                codes.append(-9)
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, 9)
                except ProcessLookupError:
                    pass
                p.wait()
    return codes, metrics, log, time.perf_counter() - t0


def summarise(stage: int, workers: int, codes: list[int], metrics: Path, log: Path, wall: float, args) -> dict:
    run = {"stage": stage, "workers": workers, "ok": False, "error": None, "exit_codes": codes,
           "wall_seconds": round(wall, 1), "log": str(log)}
    lines = []
    if metrics.exists():
        for x in metrics.read_text().splitlines():
            try:
                lines.append(json.loads(x))
            except json.JSONDecodeError:
                pass
    steps = [x for x in lines if "event" not in x]
    final = next((x for x in lines if x.get("event") == "final"), None)
    losses = [x.get("loss") for x in steps]
    timed = steps[1:] or steps  # the first step pays for CUDA's warm-up

    def med(key):
        vals = [x[key] for x in timed if isinstance(x.get(key), (int, float))]
        return statistics.median(vals) if vals else None

    run.update(
        steps=len(steps), losses=losses, first_loss=losses[0] if losses else None,
        last_loss=losses[-1] if losses else None, grad_norms=[x.get("grad_norm") for x in steps],
        tokens_per_second=med("tokens_per_second"), mfu=med("mfu"),
        peak_memory_gb=max((x["peak_memory_gb"] for x in steps if x.get("peak_memory_gb") is not None), default=None),
        tokens=steps[-1]["tokens"] if steps else 0, train_seconds=final.get("seconds") if final else None,
        status=final.get("status") if final else None,
    )
    run["fit_estimate_gb"] = fit_estimate(metrics.parent / "trial.json")
    if any(c != 0 for c in codes):
        why = "timed out" if -9 in codes else f"exit codes {codes}"
        run["error"] = f"{why}; last lines of {log}:\n{_tail(log)}"
    elif len(steps) != args.steps or final is None:
        run["error"] = f"{len(steps)} of {args.steps} steps reported, final line {'present' if final else 'missing'}"
    elif not all(isinstance(v, (int, float)) and math.isfinite(v) for v in losses):
        run["error"] = f"non-finite loss: {losses}"
    elif not all(isinstance(v, (int, float)) and math.isfinite(v) for v in run["grad_norms"]):
        run["error"] = f"non-finite grad norm: {run['grad_norms']}"
    else:
        run["ok"] = True
    return run


def fit_estimate(trial_path: Path) -> dict | None:
    """trainer/fit.py's estimate for the run's trial config, beside what the run measured: the
    whole estimate and the part the CUDA allocator sees (without the fixed CUDA/NCCL overhead)."""
    try:
        from trainer.config import parse_trial_config
        from trainer.fit import estimate_trial

        est = estimate_trial(parse_trial_config(json.loads(trial_path.read_text())))
        return {"total": round(est.gib, 2), "allocated": round(est.gib - est.parts["overhead"] / 2**30, 2)}
    except Exception as err:  # noqa: BLE001 - the estimate is a figure to report, never a reason to fail
        return {"error": f"{type(err).__name__}: {err}"}


def fmt(v, spec: str, none: str = "n/a") -> str:
    return none if v is None else format(v, spec)


def run_line(run: dict) -> str:
    mfu = run.get("mfu")
    return (f"zero-{run['stage']} workers={run['workers']} tokens/s={fmt(run.get('tokens_per_second'), ',.0f')} "
            f"mfu={'n/a' if mfu is None else f'{100 * mfu:.1f}%'} peak_mem_gb={fmt(run.get('peak_memory_gb'), '.2f')} "
            f"first_loss={fmt(run.get('first_loss'), '.4f')} last_loss={fmt(run.get('last_loss'), '.4f')} "
            f"fit_estimate_gb={(run.get('fit_estimate_gb') or {}).get('allocated', 'n/a')} "
            f"steps={run.get('steps', 0)} wall={run.get('wall_seconds', 0):.0f}s "
            f"{'ok' if run['ok'] else 'FAILED'}")


# ---- the whole check ----------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default="1b", help="model shape (default: 1b, 1.10B params)")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                   help="auto: CUDA if present, else print one line and exit 0")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps per run (default 20)")
    p.add_argument("--stages", default="2,3", help="ZeRO stages, comma-separated (default 2,3)")
    p.add_argument("--workers", default="auto", help="worker counts, comma-separated; auto: 1, and 2 when 2 GPUs exist")
    p.add_argument("--batch", type=int, help="effective batch size in samples (1b: 32, tiny: 8)")
    p.add_argument("--micro-batch-tokens", type=int, help="tokens per micro-batch (1b: 8192, tiny: 512)")
    p.add_argument("--max-seq-len", type=int, help="longest sample, tokens (1b: 2048, tiny: 256)")
    p.add_argument("--lr", type=float, default=1e-4, help="constant learning rate (default 1e-4)")
    p.add_argument("--rtol", type=float, default=2e-2, help="first-step losses must agree within this (default 2e-2)")
    p.add_argument("--run-timeout", type=float, default=170.0,
                   help="seconds one run may take, start-up included (default 170: two runs and the build "
                        "stay within 6 minutes)")
    p.add_argument("--out", help="also write the results as JSON here")
    p.add_argument("--workdir", help="where the model, data and run logs go (default: a temp folder, removed)")
    p.add_argument("--count-params", action="store_true", help="print the model's parameter count and exit")
    p.add_argument("--worker", nargs=2, metavar=("TRIAL_JSON", "METRICS_JSONL"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for k, v in RUN_DEFAULTS[args.size].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


def write_out(path: str | None, doc: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(doc, indent=1) + "\n")


def versions() -> dict:
    """From the packages' metadata: nothing is imported (DeepSpeed's import is slow and chatty)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for name in ("torch", "transformers", "deepspeed", "pydantic"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(*args.worker)
    if args.count_params:
        shape = SIZES[args.size]
        n_arith, n_meta = analytic_params(shape), meta_params(args.size)
        say(f"gpu-check: --size {args.size}: {n_arith:,} parameters by arithmetic, {n_meta:,} as built "
            f"({n_meta / 1e9:.3f}B)")
        return 0 if n_arith == n_meta else 1

    import importlib.util

    try:
        import torch
    except ImportError as err:
        say(f"gpu-check: torch is not importable ({err}); nothing checked")
        write_out(args.out, {"ok": False, "error": f"torch is not importable: {err}"})
        return 1
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if args.device == "auto":
        if gpus == 0:
            say(f"gpu-check: no CUDA GPU on this machine (torch {torch.__version__}); nothing checked")
            write_out(args.out, {"ok": True, "skipped": "no CUDA GPU", "versions": versions()})
            return 0
        args.device = "cuda"
    if args.device == "cuda" and gpus == 0:
        say("gpu-check: --device cuda but torch sees no CUDA GPU")
        write_out(args.out, {"ok": False, "error": "--device cuda but no CUDA GPU"})
        return 1
    missing = [m for m in REQUIRED if importlib.util.find_spec(m) is None]
    if missing:
        say(f"gpu-check: missing Python packages: {', '.join(missing)} (put them on PYTHONPATH); nothing checked")
        write_out(args.out, {"ok": False, "error": f"missing packages: {missing}", "versions": versions()})
        return 1

    from trainer.throughput import peak_flops

    stages = [int(s) for s in args.stages.split(",") if s.strip()]
    if args.workers == "auto":
        workers = [1, 2] if (args.device == "cuda" and gpus >= 2) else [1]
    else:
        workers = [int(w) for w in args.workers.split(",") if w.strip()]
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    doc: dict = {
        "ok": False, "device": device_name, "gpus": gpus, "peak_bf16_flops": peak_flops(device_name)
        if args.device == "cuda" else None, "versions": versions(),
        "settings": {k: getattr(args, k) for k in ("size", "steps", "batch", "micro_batch_tokens", "max_seq_len",
                                                   "lr", "rtol")} | {"stages": stages, "workers": workers},
        "model": {"shape": SIZES[args.size]}, "runs": [], "failures": [],
    }
    say(f"gpu-check: {device_name} x{gpus if args.device == 'cuda' else 1}, torch {doc['versions']['torch']}, "
        f"deepspeed {doc['versions']['deepspeed']}, transformers {doc['versions']['transformers']}; "
        f"size {args.size}, {args.steps} steps, stages {stages}, workers {workers}")

    tmp = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="sweepd-gpu-check-"))
    tmp.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    try:
        t0 = time.perf_counter()
        model_dir, data = tmp / f"model-{args.size}", tmp / "train.jsonl"
        try:
            n_params = build_model(args.size, model_dir, args.device, args.max_seq_len)
        except Exception as err:  # noqa: BLE001 - said, and the check fails
            say(f"gpu-check: building the model failed: {type(err).__name__}: {err}")
            doc["failures"].append(f"model build: {type(err).__name__}: {err}\n{traceback.format_exc()}")
            return 1
        write_data(data, args.steps * args.batch, args.max_seq_len)
        doc["model"].update(params=n_params, build_seconds=round(time.perf_counter() - t0, 1))
        say(f"gpu-check: model {n_params / 1e9:.3f}B params ({n_params:,}) built and saved in "
            f"{time.perf_counter() - t0:.0f}s; {args.steps * args.batch} samples written")

        for w in workers:
            for stage in stages:
                trial = trial_dict(args, model_dir, data, stage, w)
                try:
                    codes, metrics, log, wall = launch(args, trial, tmp / f"run-zero{stage}-w{w}", w)
                    run = summarise(stage, w, codes, metrics, log, wall, args)
                except Exception as err:  # noqa: BLE001 - one run's failure does not stop the others
                    run = {"stage": stage, "workers": w, "ok": False,
                           "error": f"{type(err).__name__}: {err}\n{traceback.format_exc()}"}
                doc["runs"].append(run)
                say(run_line(run))
                if run["error"]:
                    doc["failures"].append(f"zero-{stage} workers={w}: {run['error']}")
                    for line in str(run["error"]).splitlines():
                        say(f"    {line}")

        firsts = [(r["stage"], r["workers"], r["first_loss"]) for r in doc["runs"]
                  if r.get("ok") and r.get("first_loss") is not None]
        if len(firsts) >= 2:
            ref = firsts[0][2]
            worst = max(abs(x - ref) / abs(ref) for _, _, x in firsts)
            agree = worst <= args.rtol
            doc["first_loss_check"] = {"losses": firsts, "max_relative_difference": worst, "rtol": args.rtol,
                                       "ok": agree}
            say(f"gpu-check: first-step losses {', '.join(f'zero-{s}/w{w} {x:.5f}' for s, w, x in firsts)}: "
                f"largest relative difference {worst:.2e} ({'within' if agree else 'OUTSIDE'} rtol {args.rtol:g})")
            if not agree:
                doc["failures"].append(f"first-step losses disagree: {firsts} (rtol {args.rtol})")
        doc["ok"] = not doc["failures"] and bool(doc["runs"]) and all(r.get("ok") for r in doc["runs"])
        return 0 if doc["ok"] else 1
    finally:
        doc["seconds"] = round(time.perf_counter() - t_all, 1)
        if doc["runs"] or doc["failures"]:
            say(f"gpu-check: {'PASS' if doc['ok'] else 'FAIL'} in {doc['seconds']:.0f}s"
                + ("" if doc["ok"] else f" ({len(doc['failures'])} problem(s))"))
        write_out(args.out, doc)
        if not args.workdir:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
