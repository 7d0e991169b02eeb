"""`python -m trainer run TRIAL.yaml --metrics-out FILE.jsonl` and `python -m trainer make-data DIR`.

`run --checkpoint-dir DIR` writes checkpoints there on the config's `resources.checkpoint_every`
(default DIR: `checkpoints/` beside the metrics file); `run --resume-from PATH` continues from a
checkpoint (or the newest in a folder of them; none there: from the start), keeping the metrics
file's lines up to the checkpoint's step."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys


def _cmd_run(args: argparse.Namespace) -> int:
    from .config import ConfigError, input_problems, load_trial_config

    try:
        cfg = load_trial_config(args.trial)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if problems := input_problems(cfg):  # before torch and DeepSpeed load (seconds)
        print("error: " + "\nerror: ".join(problems), file=sys.stderr)
        return 2
    resume_step = None
    if args.resume_from:  # before any worker starts: a bad path or checkpoint is one message
        from .checkpoint import CheckpointError, find_latest, read_state

        try:
            if not os.path.exists(args.resume_from):
                raise CheckpointError(f"{args.resume_from}: no such checkpoint or folder")
            found = find_latest(args.resume_from)
            resume_step = read_state(found).step if found is not None else None
        except CheckpointError as err:
            print(f"error: --resume-from: {err}", file=sys.stderr)
            return 2
        if found is None and os.environ.get("RANK", "0") == "0":
            print(f"note: no checkpoint in {args.resume_from}: starting from step 0", file=sys.stderr)
    if cfg.resources.num_workers > 1 and not os.environ.get("SWEEPD_TRAINER_WORKER"):
        from .distributed import launch_local

        return launch_local(cfg.resources.num_workers, sys.argv[1:])

    from .data import DataError
    from .reporting import JsonlReporter, StopFlag

    stop = StopFlag()
    signal.signal(signal.SIGTERM, stop.request)
    signal.signal(signal.SIGINT, stop.request)
    out = args.metrics_out if os.environ.get("RANK", "0") == "0" else os.devnull
    reporter = JsonlReporter(out, stop=stop, keep_through_step=resume_step)
    checkpoint_dir = args.checkpoint_dir
    if checkpoint_dir is None and cfg.resources.checkpoint_every is not None:
        checkpoint_dir = os.path.join(os.path.dirname(os.path.abspath(args.metrics_out)), "checkpoints")
    try:
        result = _train_or_replay(cfg, reporter, checkpoint_dir, args.resume_from)
    except (DataError, _TrialInputError) as err:  # a replay's bad curves too (ReplayError is a DataError)
        print(f"error: {err}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") == "0":
        shown = {k: v for k, v in result.items() if k != "by_domain"}
        print(json.dumps(shown))
    return 0 if result["status"] in ("completed", "stopped") else 3


class _TrialInputError(Exception):
    """The trial cannot run as configured (model, settings): one line, exit 2."""


def _train_or_replay(cfg, reporter, checkpoint_dir, resume_from) -> dict:
    from .replay_config import REPLAY_MODEL

    if cfg.model.path == REPLAY_MODEL:  # recorded curves: no torch import (seconds per trial)
        from .replay import replay_trial

        return replay_trial(cfg, reporter)
    from .loop import TrialError, run_trial
    from .models import ModelLoadError

    try:
        return run_trial(cfg, reporter, checkpoint_dir=checkpoint_dir, resume_from=resume_from)
    except (TrialError, ModelLoadError) as err:
        raise _TrialInputError(str(err)) from err


def _cmd_make_data(args: argparse.Namespace) -> int:
    from .synthetic import make_data

    try:
        summary = make_data(args.dir, seed=args.seed)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in summary.items() if k == "files"}, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer", description="Run one SFT trial.")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run one trial from a YAML file")
    r.add_argument("trial")
    r.add_argument("--metrics-out", default="metrics.jsonl", help="JSONL: one line per step, then a final line")
    r.add_argument("--checkpoint-dir", default=None,
                   help="where resources.checkpoint_every writes checkpoints (default: checkpoints/ "
                        "beside the metrics file)")
    r.add_argument("--resume-from", default=None,
                   help="continue from this checkpoint, or the newest in this folder (none: from the start)")
    r.set_defaults(fn=_cmd_run)
    d = sub.add_parser("make-data", help="write the built-in synthetic instruction set")
    d.add_argument("dir")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(fn=_cmd_make_data)
    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
