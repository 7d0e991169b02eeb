"""`trainer_throughput.py`'s summary: which runs count, the medians, the ratio against the target,
printed as a table and returned for the JSON record."""

from __future__ import annotations

import statistics
from typing import Callable


def summarize(runs: dict[str, list[dict]], sides: list[str], peers: list[str], errors: dict[str, str], *,
              rounds: int, warmup: int, steps: int, labels: dict[str, str], target: float,
              contended_cores: float, log: Callable[[str], None]) -> dict:
    """Print the table and the verdict; return what the JSON record keeps."""
    # Runs during which other processes took the CPUs measure the machine, not the trainer: leave
    # them out when every side has at least one clean run.
    done = [side for side in sides if runs[side]]
    clean = {side: [x for x in runs[side] if not x["contended"]] for side in done}
    use_clean = bool(done) and all(clean[side] for side in done)
    used = {side: (clean[side] if use_clean else runs[side]) for side in done}

    def med(side: str, key: str) -> float | None:
        vals = [x[key] for x in used.get(side, []) if x.get(key) is not None]
        return statistics.median(vals) if vals else None

    summary_rows = {side: {"label": labels[side], "tokens_per_s": med(side, "tokens_per_s"),
                           "tokens_per_s_median_step": med(side, "tokens_per_s_median_step"),
                           "tokens_per_cpu_s": med(side, "tokens_per_cpu_s"),
                           "padding_fraction": med(side, "padding_fraction"),
                           "micro_batches_per_step": med(side, "micro_batches_per_step"),
                           "samples_per_step": med(side, "samples_per_step"),
                           "runs_used": len(used[side])}
                    for side in done}
    done_peers = [p for p in peers if p in done]
    best = max(done_peers, key=lambda p: summary_rows[p]["tokens_per_s"]) if done_peers else None
    sw = summary_rows.get("sweepd")
    ratio = sw["tokens_per_s"] / summary_rows[best]["tokens_per_s"] if sw and best else None
    ratio_step = (sw["tokens_per_s_median_step"] / summary_rows[best]["tokens_per_s_median_step"]
                  if sw and best else None)
    cpu_rates = {x: summary_rows[x]["tokens_per_cpu_s"] for x in done}
    best_cpu = max((p for p in done_peers if cpu_rates[p]), key=cpu_rates.get, default=None)
    ratio_cpu = (cpu_rates["sweepd"] / cpu_rates[best_cpu]
                 if sw and best_cpu and cpu_rates.get("sweepd") else None)
    per_round = []
    for r in range(1, rounds + 1):
        got = {side: next((x for x in runs[side] if x["round"] == r), None) for side in done}
        if sw and best and got.get("sweepd") and all(got.get(p) for p in done_peers):
            top = max(done_peers, key=lambda p: got[p]["tokens_per_s"])
            per_round.append({"round": r, "best_peer": top,
                              "ratio": got["sweepd"]["tokens_per_s"] / got[top]["tokens_per_s"],
                              "contended": any(got[side]["contended"] for side in done)})

    log("")
    n_used = ", ".join(f"{side} {len(used[side])}" for side in done)
    basis = (f"runs used: {n_used}"
             + (" (uncontended only)" if use_clean and any(len(clean[x]) < len(runs[x]) for x in done)
                else "" if use_clean else " (no uncontended run for every trainer, so all of them: these figures "
                "measure the machine's load as much as the trainers; run again on a quieter machine)"))
    log(f"medians over the timed steps {warmup + 1}..{steps}; {basis}")
    width = max(len(labels[x]) for x in done) if done else 10
    log(f"{'trainer':<{width}} | real tokens/s | tokens/CPU-s | padding | micro-batches/step | samples/step")
    log(f"{'-' * width}-|---------------|--------------|---------|--------------------|-------------")
    for side in done:
        row = summary_rows[side]
        pad = "n/a" if row["padding_fraction"] is None else f"{row['padding_fraction']:.1%}"
        mb = "n/a" if row["micro_batches_per_step"] is None else f"{row['micro_batches_per_step']:.1f}"
        cps = "n/a" if row["tokens_per_cpu_s"] is None else f"{row['tokens_per_cpu_s']:.0f}"
        log(f"{row['label']:<{width}} | {row['tokens_per_s']:13.0f} | {cps:>12} | {pad:>7} | {mb:>18} | "
            f"{row['samples_per_step']:12.1f}")
    for side, err in errors.items():
        log(f"{labels[side]:<{width}} | failed: {err}")
    if ratio is not None:
        holds = ratio >= target
        log(f"ratio          : {ratio:.2f}x sweepd / best peer ({labels[best]})  (target >= {target}x) "
            f"{'OK: holds' if holds else 'BELOW TARGET: does not hold'}")
        rounds_txt = ", ".join(f"{p['ratio']:.2f}x" + ("*" if p["contended"] else "") for p in per_round)
        log(f"                 per round: {rounds_txt}  (* = contended); median-step ratio {ratio_step:.2f}x")
        if ratio_cpu is not None:
            log(f"                 per CPU-second: {ratio_cpu:.2f}x (best peer by tokens/CPU-s: {best_cpu})")
        for side in done:  # an ablation of sweepd's own: how it compares, and what it costs sweepd
            if side != "sweepd" and side not in peers:
                x = summary_rows[side]["tokens_per_s"]
                log(f"                 {labels[side]}: {x / summary_rows[best]['tokens_per_s']:.2f}x the best "
                    f"peer; sweepd is {sw['tokens_per_s'] / x:.2f}x it")
    trial = runs["sweepd"][0]["trial"] if runs.get("sweepd") else None
    if trial:
        label = f"{trial['steps']}-step trial"
        busy = trial["others_cpu_cores"]
        log(f"{label:<15}: {trial['wall_seconds']:.1f} s wall (training loop {trial['train_loop_seconds']:.1f} s, "
            f"set-up + final eval {trial['setup_and_eval_seconds']:.1f} s; target < 60 s) "
            f"{'OK' if trial['wall_seconds'] < 60 else 'OVER'}"
            + ("" if busy is None else f"; other processes used {busy:.2f} cores meanwhile"
               + (" (CONTENDED: not a fair reading)" if busy > contended_cores else "")))
    return {"basis": basis, "trainers": summary_rows, "best_peer": best, "ratio": ratio,
            "ratio_median_step": ratio_step, "ratio_per_round": per_round, "target_ratio": target,
            "ratio_per_cpu_second": ratio_cpu, "best_peer_per_cpu_second": best_cpu,
            "target_holds": None if ratio is None else ratio >= target,
            "trial_steps": trial["steps"] if trial else None,
            "trial_wall_seconds": trial["wall_seconds"] if trial else None,
            "trial_train_loop_seconds": trial["train_loop_seconds"] if trial else None}
