"""``builtin:replay``: a trial that replays a recorded training run instead of training.

The trial's hyperparameters pick the nearest recorded run (``model.replay.run`` fixes one), and
its steps are reported through the same ``Reporter`` as the real trainer's, with the same keys
(trainer/reporting.py STEP_KEYS), at the recorded pace times ``speed`` (or every
``seconds_per_step``), then the final result with the run's recorded objective metrics. So the
whole orchestration path (Ray Tune, the searcher, the pruner, the store, the dashboard) runs for
real, in seconds, with no model, no data and no torch.

- ``seconds`` is the replay's clock: when each step was due (recorded seconds / speed, or
  k x seconds_per_step), and ``tokens_per_second`` the recorded tokens over that clock;
  ``mfu`` and ``peak_memory_gb`` are None (nothing ran).
- The trial's budget cuts the curve (``budget.max_steps`` / ``max_samples``: whole recorded
  steps within it); ``max_reports`` then keeps at most that many evenly spaced steps, the
  last one always. A run cut short by its budget still ends with the objective the recorded
  run reached (no evaluation was recorded earlier); ``replay_cut_at_step`` says so.
- A stop (the reporter's ``should_stop``, or Ray Tune ending the trial inside its report) ends
  the replay at once, like the trainer's loop.

``python -m trainer.replay runs CURVES`` lists a bank's runs (``builtin:curve_bank`` or a file).
"""

from __future__ import annotations

import math
import sys
import time
from typing import Callable

from .replay_bank import Curve, ReplayError, budget_end, load_curves, resample
from .replay_config import BUILTIN_CURVES, ReplayConfig
from .reporting import Reporter


def pick_run(cfg, replay: ReplayConfig) -> Curve:
    """The recorded run a trial replays: the one the spec fixes, else the nearest to its
    hyperparameters (trainer/replay_bank.py ``CurveBank.nearest``)."""
    bank = load_curves(replay.curves_path())
    if replay.run is not None:
        return bank.run(replay.run)
    h = cfg.hparams
    return bank.nearest(h.effective_batch_size, h.learning_rate, h.warmup_steps, h.lr_scheduler, cfg.seed)


def replay_plan(cfg, curve: Curve, replay: ReplayConfig) -> tuple[list[int], list[float]]:
    """(indices of the recorded steps to report, when each is due in seconds from the start)."""
    if cfg.budget.epochs is not None:
        raise ReplayError("budget.epochs: a replay reads no data to count epochs in; "
                          "give budget.max_samples or budget.max_steps")
    end = budget_end(curve, cfg.budget.max_steps, cfg.budget.max_samples)
    indices = resample(end, replay.max_reports)
    seconds = curve.column("seconds")
    if replay.seconds_per_step is None and seconds is None:
        raise ReplayError(f"model.replay: run {curve.id!r} recorded no seconds; set model.replay.seconds_per_step")
    recorded = [float(seconds[i]) for i in indices] if seconds is not None else [0.0] * len(indices)
    return indices, replay.pace(recorded)


def step_metrics(curve: Curve, i: int, due: float, previous: tuple[float, float] | None) -> dict:
    """The trainer's step report for recorded step ``i``, due at ``due`` seconds."""
    col = curve.column
    tokens = col("tokens")[i] if col("tokens") else None
    rate = None
    if tokens is not None:
        last_tokens, last_due = previous or (0, 0.0)
        rate = (tokens - last_tokens) / (due - last_due) if due > last_due else None
    return {"step": int(curve.steps["step"][i]), "samples": int(curve.steps["samples"][i]),
            "tokens": None if tokens is None else int(tokens), "loss": _finite(curve.steps["loss"][i]),
            "grad_norm": _finite(col("grad_norm")[i]) if col("grad_norm") else None,
            "lr": col("lr")[i] if col("lr") else None, "seconds": round(due, 4),
            "tokens_per_second": None if rate is None else round(rate, 1), "mfu": None, "peak_memory_gb": None}


def _finite(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def replay_trial(cfg, reporter: Reporter, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> dict:
    """One replayed trial (``cfg``: a TrialConfig whose model is builtin:replay). Returns the
    final result it reported. ReplayError: the curves or the settings cannot be used."""
    replay = cfg.model.replay or ReplayConfig()
    curve = pick_run(cfg, replay)
    indices, due = replay_plan(cfg, curve, replay)
    status, reason, last, previous = "completed", None, None, None
    start = clock()
    for k, i in enumerate(indices):
        wait = start + due[k] - clock()
        if wait > 0:
            sleep(wait)
        last = step_metrics(curve, i, due[k], previous)
        if last["tokens"] is not None:
            previous = (last["tokens"], due[k])
        reporter.step(last)
        if last["loss"] is None or (curve.column("grad_norm") and last["grad_norm"] is None):
            status, reason = "diverged", f"non-finite loss or grad norm recorded at step {last['step']}"
            break
        if reporter.should_stop():
            status, reason = "stopped", f"stop requested after step {last['step']}"
            break
    result = final_result(curve, indices, last, status, reason)
    reporter.final(result)
    return result


def final_result(curve: Curve, indices: list[int], last: dict, status: str, reason: str | None) -> dict:
    """What the trainer's final report holds, from the recorded run: its objective metrics when
    the replay ended normally (none when stopped or diverged), the run's id, where it was cut."""
    planned_end = indices[-1]
    result = {"status": status, "steps": last["step"], "samples": last["samples"], "tokens": last["tokens"],
              "seconds": last["seconds"], "train_loss": last["loss"], "planned_steps": int(curve.steps["step"][planned_end]),
              "replayed_run": curve.id}
    if reason:
        result["reason"] = reason
    if status == "completed":
        result.update(curve.final)
        if planned_end < curve.n_steps - 1:  # the budget ended it before the recorded end
            result["replay_cut_at_step"] = last["step"]
            result["train_loss"] = last["loss"]
    return result


def list_runs(curves: str) -> str:
    """One line per recorded run: id, hyperparameters, objective metrics."""
    bank = load_curves(ReplayConfig(curves=curves).curves_path())
    lines = [f"{bank.path}: {len(bank.curves)} runs"]
    for c in bank.curves:
        hp = " ".join(f"{k}={v}" for k, v in c.hparams.items() if v is not None)
        fin = " ".join(f"{k}={v:.4g}" for k, v in c.final.items())
        lines.append(f"  {c.id}  {hp}  ({c.n_steps} steps; {fin})")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "runs":
        print(f"usage: python -m trainer.replay runs CURVES   (CURVES: {', '.join(BUILTIN_CURVES)} or a file)",
              file=sys.stderr)
        return 2
    try:
        print(list_runs(argv[1]))
    except (ReplayError, ValueError) as err:
        print(str(err), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
