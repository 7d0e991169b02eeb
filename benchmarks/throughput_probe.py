"""Pick each peer's batching for `trainer_throughput.py`: its fastest micro-batch split here.

Every peer keeps the effective batch (32 samples; TRL packing: 8 packed rows of 512 tokens, about
as many tokens) and tries its splits into micro-batches x accumulation steps, each for a short run,
the candidates interleaved over `--rounds` rounds so that load from other processes hits all of
them alike. Prints the median over rounds of each candidate's median per-step real tokens/s (robust
to bursts of load) and the best per peer; the defaults in `trainer_throughput.py` (HF_MICRO,
TRL_MICRO, PACK_ROWS / PACK_ACCUM) are what this gave (benchmarks/README.md).

Run: `.venv/bin/python benchmarks/throughput_probe.py [--steps 15] [--rounds 2]` (a few minutes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trainer_throughput as tt  # noqa: E402  (sets DS_ACCELERATOR, offline mode, sys.path)

from benchmarks.throughput_peers import describe_peer, run_peer  # noqa: E402

CANDIDATES = {
    "hf": [{"hf_micro": m} for m in (4, 8, 16, 32)],
    "trl_grouped": [{"trlg_micro": m} for m in (8, 16, 32)],
    "trl_pf": [{"trl_micro": m} for m in (2, 4, 8)],
    "trl_pack": [{"pack_rows": r, "pack_accum": 8 // r} for r in (1, 2, 4)],
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--peers", default=",".join(CANDIDATES))
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads; with 1 the candidates are ranked by real tokens per CPU-second "
                         "(robust to other processes' load), else by wall-clock median-step tokens/s")
    ap.add_argument("--out", default=None, help="also write the figures here (JSON)")
    args = ap.parse_args(argv)
    tt.cpu_world(args.threads)
    from trainer.synthetic import make_data

    base = tt.settings(argparse.Namespace(steps=args.steps, warmup=args.warmup, hf_micro=tt.HF_MICRO,
                                          trl_micro=tt.TRL_MICRO, trlg_micro=tt.TRLG_MICRO, pack_rows=tt.PACK_ROWS, pack_accum=tt.PACK_ACCUM))
    helpers = {"cpu_snapshot": tt.cpu_snapshot, "others_cores": tt.others_cores, "rate": tt.rate,
               "median_step_rate": tt.median_step_rate, "own_cpu_seconds": tt.own_cpu_seconds}
    todo = []
    for peer in args.peers.split(","):
        for cand in CANDIDATES[peer]:
            s = dict(base, **cand)
            s["hf_accum"] = tt.EFFECTIVE_BATCH // s["hf_micro"]
            s["trl_accum"] = tt.EFFECTIVE_BATCH // s["trl_micro"]
            s["trlg_accum"] = tt.EFFECTIVE_BATCH // s["trlg_micro"]
            todo.append((peer, describe_peer(peer, s), s))
    got: dict[str, list[float]] = {label: [] for _, label, _ in todo}
    got_cpu: dict[str, list[float]] = {label: [] for _, label, _ in todo}
    with tempfile.TemporaryDirectory(prefix="sweepd-probe-") as tmp:
        data_dir = Path(tmp) / "data"
        make_data(data_dir, seed=tt.SEED)
        for r in range(args.rounds):
            order = todo if r % 2 == 0 else todo[::-1]
            for peer, label, s in order:
                res = run_peer(peer, s, data_dir, Path(tmp) / "out", helpers)
                per_cpu = res["real_tokens_window"] / res["own_cpu_seconds"]
                got[label].append(res["tokens_per_s_median_step"])
                got_cpu[label].append(per_cpu)
                tt.log(f"  round {r + 1}: {label:<60} {res['tokens_per_s_median_step']:8.0f} tokens/s (median step), "
                       f"{per_cpu:8.0f} tokens/CPU-s, padding {res['padding_fraction']:.1%}, "
                       f"others {res['others_cpu_cores']}")
    tt.log("")
    table = {label: statistics.median(v) for label, v in got.items()}
    table_cpu = {label: statistics.median(v) for label, v in got_cpu.items()}
    rank = table_cpu if args.threads == 1 else table
    tt.log(f"{'candidate':<60} {'tokens/s':>8} {'tokens/CPU-s':>12}  (ranked by {'CPU' if rank is table_cpu else 'wall'})")
    for peer in args.peers.split(","):
        labels = [label for p, label, _ in todo if p == peer]
        best = max(labels, key=rank.get)
        for label in labels:
            tt.log(f"{label:<60} {table[label]:8.0f} {table_cpu[label]:12.0f}{'  <- best' if label == best else ''}")
    if args.out:
        Path(args.out).write_text(json.dumps({"threads": args.threads, "median_step_tokens_per_s": table,
                                              "tokens_per_cpu_s": table_cpu, "runs": got, "runs_cpu": got_cpu},
                                             indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
