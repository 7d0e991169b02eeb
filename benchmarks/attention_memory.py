"""Peak memory of one forward+backward: the dense 4D-mask attention vs the packed attention.

Issue 13, item 2. A micro-batch of `--tokens` tokens (default 8192 and 16384) is one packed row of
samples of realistic SFT lengths (300-1000 tokens, drawn with a fixed seed), the layout of
padding-free packing with max_seq_len = the micro-batch size. Two paths over the same tokens and
the same weights:

- dense:  `collate(..., dense_mask=True)`: the (rows, 1, L, L) block-diagonal bool mask, passed to
          transformers' SDPA attention (the trainer's path before this change);
- packed: `collate(...)`: attention_mask=None and per-sample position_ids, attention
          ``sweepd_packed`` (trainer/attention.py): causal SDPA inside each sample.

Each case runs in a fresh subprocess (so one case's allocator state cannot hide another's peak):
build the model (random weights, a Llama of builtin:tiny's shape unless told otherwise, fp32, CPU),
the samples, then measure from just before `collate` to the end of `backward()`:
peak RSS (getrusage ru_maxrss) minus the RSS before. The summed cross-entropy over the loss tokens
is the loss, as in the trainer. The table gives both paths, their ratio, and the wall time of the
measured step (one run: a shared machine makes the times rough; the memory figures are stable).

Run: `.venv/bin/python benchmarks/attention_memory.py [--tokens 8192 16384] [--hidden 64 --layers 2
--heads 4 --kv-heads 2]`. Prints the table; writes it with every case's details to
benchmarks/results/attention_memory.json. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "attention_memory.json"
PATHS = ("dense", "packed")


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def sample_lengths(tokens: int, seed: int, lo: int = 300, hi: int = 1000) -> list[int]:
    """Sample lengths in [lo, hi] that fill exactly `tokens` (the last one takes the remainder,
    merged into its predecessor if it would fall under lo)."""
    rng = random.Random(seed)
    out: list[int] = []
    while sum(out) < tokens:
        out.append(rng.randint(lo, hi))
    out[-1] -= sum(out) - tokens
    if out[-1] < lo and len(out) > 1:
        out[-2] += out.pop()
    return out


def run_case(path: str, tokens: int, args) -> dict:
    """One measured forward+backward in this process."""
    import torch
    import torch.nn.functional as F
    from transformers import LlamaForCausalLM

    from trainer import attention
    from trainer.batching import collate
    from trainer.data import IGNORE, Sample
    from trainer.models import tiny_config

    torch.set_num_threads(args.threads)
    cfg = tiny_config(320)
    cfg.hidden_size, cfg.num_hidden_layers = args.hidden, args.layers
    cfg.num_attention_heads, cfg.num_key_value_heads = args.heads, args.kv_heads
    cfg.intermediate_size = args.hidden * 11 // 4
    cfg._attn_implementation = attention.ATTN_IMPLEMENTATION if path == "packed" else "sdpa"
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).train()
    lengths = sample_lengths(tokens, args.seed)
    g = torch.Generator().manual_seed(args.seed)
    samples = []
    for n in lengths:
        ids = torch.randint(0, 256, (n,), generator=g).tolist()
        prompt = n // 3  # loss on the last two thirds, like an assistant reply
        samples.append(Sample(ids, [IGNORE] * prompt + ids[prompt:], "bench"))

    base_rss, peak_before = _rss_mib(), _peak_mib()
    t0 = time.perf_counter()
    batch = collate([samples], pad_id=0, dense_mask=path == "dense")
    logits = model(input_ids=batch.input_ids, position_ids=batch.position_ids,
                   attention_mask=batch.attention_mask, use_cache=False).logits.float()
    loss = F.cross_entropy(logits.view(-1, logits.size(-1)), batch.targets.view(-1), ignore_index=IGNORE,
                           reduction="sum")
    loss.backward()
    seconds = time.perf_counter() - t0
    peak = _peak_mib()
    return {
        "path": path, "tokens": tokens, "rows": int(batch.input_ids.shape[0]), "samples": len(lengths),
        "sample_lengths": lengths, "peak_delta_mib": round(peak - base_rss, 1), "base_rss_mib": round(base_rss, 1),
        "peak_before_mib": round(peak_before, 1), "seconds": round(seconds, 2), "loss": loss.item() / batch.loss_tokens,
        "mask_mib": round(batch.attention_mask.numel() / 2**20, 1) if batch.attention_mask is not None else 0.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, nargs="+", default=[8192, 16384])
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--case", nargs=2, metavar=("PATH", "TOKENS"), help=argparse.SUPPRESS)
    ap.add_argument("--no-save", action="store_true", help="print only, write no JSON")
    args = ap.parse_args()

    if args.case:  # the child: one case, a JSON line out
        print(json.dumps(run_case(args.case[0], int(args.case[1]), args)))
        return

    passthrough = ["--hidden", str(args.hidden), "--layers", str(args.layers), "--heads", str(args.heads),
                   "--kv-heads", str(args.kv_heads), "--threads", str(args.threads), "--seed", str(args.seed)]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "TRANSFORMERS_VERBOSITY": "error"}
    cases = []
    for tokens in args.tokens:
        for path in PATHS:
            proc = subprocess.run([sys.executable, __file__, "--case", path, str(tokens), *passthrough],
                                  capture_output=True, text=True, env=env, cwd=ROOT)
            if proc.returncode != 0:
                sys.exit(f"case {path} {tokens} failed:\n{proc.stderr[-3000:]}")
            cases.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"  ran {path:6} {tokens:6} tokens: {cases[-1]['peak_delta_mib']:8.1f} MiB "
                  f"{cases[-1]['seconds']:6.2f} s", file=sys.stderr, flush=True)

    lines = [f"model: Llama, hidden {args.hidden}, {args.layers} layers, {args.heads} heads "
             f"({args.kv_heads} kv), vocab 320, fp32, CPU, {args.threads} threads; one packed row per micro-batch",
             "",
             "| micro-batch tokens | samples | dense 4D mask: peak MiB | packed: peak MiB | dense / packed "
             "| dense s | packed s | loss dense / packed |",
             "|---:|---:|---:|---:|---:|---:|---:|---|"]
    for tokens in args.tokens:
        d, p = (next(c for c in cases if c["tokens"] == tokens and c["path"] == path) for path in PATHS)
        lines.append(f"| {tokens} | {d['samples']} | {d['peak_delta_mib']:.1f} | {p['peak_delta_mib']:.1f} "
                     f"| {d['peak_delta_mib'] / max(p['peak_delta_mib'], 0.1):.1f}x | {d['seconds']:.2f} "
                     f"| {p['seconds']:.2f} | {d['loss']:.6f} / {p['loss']:.6f} |")
    table = "\n".join(lines)
    print(table)
    if not args.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({"table": table, "cases": cases, "args": vars(args),
                                       "python": platform.python_version()}, indent=2) + "\n")
        print(f"\nwritten to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
