"""Data preflight cost (issue 14): one 100k-sample JSONL file read with builtin:tiny's tokenizer and
chat template, then read again (the cache hit a resubmitted or nightly sweep gets).

The file is the built-in synthetic train set (`trainer.synthetic.make_data`, 2,000 lines) repeated
to `--samples` lines, in a temporary folder. Measured: wall seconds of `trainer.preflight.preflight`
(cold, cache empty), seconds per million tokens read, the process's peak RSS (resource.getrusage,
torch and transformers included), the wall seconds of the second call (the cache hit, which still
hashes the file), and the peak of Python allocations (tracemalloc, on a tenth of the file, not
timed: the file streams, only one int per sample is kept).

Run: `make bench` or `.venv/bin/python benchmarks/preflight.py`. Writes
benchmarks/results/preflight.json. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainer.config import DataConfig  # noqa: E402
from trainer.preflight import load_chat_tokenizer, preflight  # noqa: E402
from trainer.synthetic import make_data  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--max-seq-len", type=int, default=512)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "preflight.json"))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_data(tmp / "src", seed=0)
        lines = (tmp / "src" / "train.jsonl").read_bytes().splitlines(keepends=True)
        big = tmp / "train_100k.jsonl"
        with open(big, "wb") as fh:
            for i in range(args.samples):
                fh.write(lines[i % len(lines)])
        size_mb = big.stat().st_size / 1e6
        cfg = DataConfig(train=[{"path": str(big)}], max_seq_len=args.max_seq_len)
        chat = load_chat_tokenizer("builtin:tiny")  # built once; not part of the file's cost

        t0 = time.perf_counter()
        cold = preflight(cfg, "builtin:tiny", cache_dir=tmp / "cache", chat=chat)
        cold_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        warm = preflight(cfg, "builtin:tiny", cache_dir=tmp / "cache", chat=chat)
        warm_s = time.perf_counter() - t0

        # Python allocations on a tenth of the file (tracemalloc slows the run down, so it is not
        # on the timed one): streaming keeps them flat, one int per sample aside.
        small = tmp / "train_10k.jsonl"
        with open(big, "rb") as src, open(small, "wb") as dst:
            for _ in range(args.samples // 10):
                dst.write(src.readline())
        tracemalloc.start()
        preflight(DataConfig(train=[{"path": str(small)}], max_seq_len=args.max_seq_len), "builtin:tiny", chat=chat)
        _, peak_py = tracemalloc.get_traced_memory()
        tracemalloc.stop()

    tokens = cold["totals"]["tokens_read"]
    result = {
        "samples": cold["totals"]["train_samples"] + cold["totals"]["dropped_overlong"],
        "file_mb": round(size_mb, 1),
        "tokens_read": tokens,
        "max_seq_len": args.max_seq_len,
        "dropped_overlong": cold["totals"]["dropped_overlong"],
        "cold_seconds": round(cold_s, 2),
        "seconds_per_million_tokens": round(cold_s / (tokens / 1e6), 2),
        "peak_python_alloc_mb_10pct_file": round(peak_py / 1e6, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "cache_hit": warm["cached"],
        "cache_hit_seconds": round(warm_s, 3),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_1m": round(os.getloadavg()[0], 2)},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"preflight of {result['samples']:,} samples ({result['file_mb']} MB, {tokens / 1e6:.1f}M tokens): "
          f"{result['cold_seconds']} s cold = {result['seconds_per_million_tokens']} s per million tokens; "
          f"process peak RSS {result['peak_rss_mb']} MB (peak Python allocations on a 10% file: "
          f"{result['peak_python_alloc_mb_10pct_file']} MB); "
          f"second run: cache hit={result['cache_hit']} in {result['cache_hit_seconds']} s")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
