"""The resolved plan of a sweep: what ``sweepd validate SPEC`` prints.

``describe_plan(spec)`` returns a JSON-ready dict:

- ``space``: each key, the trial-config field it sets, its domain in words;
- ``batches``: per effective batch size the sweep can use: workers x samples per worker per
  step x micro-batches per step, the micro-batch token budget (or the fixed micro_batch_size),
  optimizer steps per trial at full budget, samples and estimated tokens per trial, and the step
  at which each rung is reached. Micro-batches are estimated from the mean tokenized length of
  up to 500 train lines (the model's own tokenizer) unless ``micro_batch_size`` fixes them;
- ``pruner``: the rung schedule on its time axis (samples or steps);
- ``compute``: the maximum a sweep can spend: planned trials x the largest full budget, in
  samples and estimated tokens (no pruning at all).

With a data preflight report (``trainer/preflight.py``, see ``data_preflight``) the mean comes
from every train sample instead, and the plan carries the preflight's summary.

``validate_command(path)`` is what the CLI calls: ``(0, plan text + the preflight's per-file
table)`` or ``(2, every error)``: spec problems, or data errors as file:line: reason.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from sweepd.formatting import flatten
from sweepd.spec import Capacity, SpecError, SweepSpec, load_spec
from sweepd.spec.budget import tidy

SAMPLE_LINES = 500


def _tokenizer(model_path: str):
    """(ChatTokenizer, None) or (None, why not); never downloads anything."""
    from trainer.data import ChatTokenizer

    if model_path == "builtin:tiny":
        from trainer.models import build_tiny_tokenizer

        return ChatTokenizer(build_tiny_tokenizer()), None
    if not Path(model_path).is_dir():
        return None, f"cannot load the tokenizer: {model_path!r} is not a folder here"
    try:
        from transformers import AutoTokenizer

        from trainer.models import FALLBACK_CHAT_TEMPLATE

        tok = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    except Exception as err:  # a missing or unreadable model folder: the plan says so
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return None, f"cannot load the tokenizer of {model_path!r}: {first}"
    if not tok.chat_template:
        tok.chat_template = FALLBACK_CHAT_TEMPLATE
    return ChatTokenizer(tok), None


def measure_samples(spec: SweepSpec, limit: int = SAMPLE_LINES) -> dict[str, Any]:
    """Mean tokenized length of up to ``limit`` train lines (the first ones, file by file)."""
    if not spec.data.train:  # builtin:replay: recorded curves, no data
        return {"mean_tokens": None, "measured": 0, "note": "no data: the trials replay recorded curves"}
    chat, why = _tokenizer(spec.model.path)
    if chat is None:
        return {"mean_tokens": None, "measured": 0, "note": why}
    lengths: list[int] = []
    skipped = 0
    for f in spec.data.train:
        try:
            fh = open(f.path, encoding="utf-8")
        except OSError as err:
            return {"mean_tokens": None, "measured": 0, "note": f"cannot read {f.path}: {err.strerror}"}
        with fh:
            for line in fh:
                if len(lengths) + skipped >= limit:
                    break
                if not line.strip():
                    continue
                try:
                    ids, _ = chat.encode(json.loads(line)["messages"])
                    lengths.append(len(ids))
                except Exception:  # a bad line: the trainer reports it; here it is just not counted
                    skipped += 1
        if len(lengths) + skipped >= limit:
            break
    if not lengths:
        return {"mean_tokens": None, "measured": 0, "note": "no readable train lines"}
    out = {"mean_tokens": round(sum(lengths) / len(lengths), 1), "measured": len(lengths), "note": None}
    if skipped:
        out["note"] = f"{skipped} unreadable line(s) not counted"
    return out


def data_preflight(spec: SweepSpec) -> dict[str, Any]:
    """The data preflight of a spec's data with its model's tokenizer, cached under
    ``SWEEPD_HOME/preflight`` (trainer/preflight.py). ``report["errors"]`` empty: data is fine."""
    from sweepd.settings import get_settings
    from trainer.preflight import preflight

    return preflight(spec.data, spec.model.path, cache_dir=Path(get_settings().home) / "preflight")


def describe_plan(spec: SweepSpec, *, sample_limit: int = SAMPLE_LINES,
                  preflight: dict[str, Any] | None = None, capacity: Capacity | None = None) -> dict[str, Any]:
    from sweepd.pruners import make_pruner
    from trainer.batching import DEFAULT_MICRO_BATCH_TOKENS
    from trainer.preflight import summary

    res = spec.resources
    workers = res.workers_per_trial
    n_train = spec.train_samples()
    totals = (preflight or {}).get("totals") or {}
    if totals.get("train_samples"):  # every train sample, as trials will see them
        n_train = totals["train_samples"]
        measured = {"mean_tokens": round(totals["train_tokens"] / n_train, 1), "measured": n_train,
                    "note": None, "all": True}
    else:
        measured = measure_samples(spec, sample_limit)
    mean = measured["mean_tokens"]

    mbt_values = spec.candidates("resources.micro_batch_tokens")
    mbt = mbt_values[0] if mbt_values else res.micro_batch_tokens
    mbs_values = spec.candidates("resources.micro_batch_size")
    mbs = mbs_values[0] if mbs_values else res.micro_batch_size
    token_budget = DEFAULT_MICRO_BATCH_TOKENS if mbt in (None, "auto") else int(mbt)

    # rungs, where the pruner class puts them (every option resolved by the class)
    pruner_info: dict[str, Any] = {"type": spec.pruner.type}
    rungs: list[float] = []
    unit = spec.pruner_time_attr
    if spec.pruner.type != "none":
        pruner = make_pruner(spec.pruner_config())
        resolved = pruner.config()
        max_t = resolved["max_t"]
        rungs = pruner.rung_times() if max_t is not None else pruner.rung_times(upto=pruner.grace * 100)
        pruner_info.update({
            "signal": resolved["signal"], "time_attr": resolved["time_attr"], "grace": tidy(resolved["grace"]),
            "reduction_factor": resolved.get("reduction_factor"), "interval": resolved.get("interval"),
            "max_t": max_t, "rungs": [tidy(r) for r in rungs], "description": pruner.describe(),
        })  # fmt: skip

    batches = []
    for b in spec.batch_sizes():
        per_worker = math.ceil(b / workers)
        if mbs:
            micro, exact = math.ceil(per_worker / mbs), True
        elif mean is not None:
            micro, exact = max(1, math.ceil(per_worker * mean / token_budget)), False
        else:
            micro, exact = None, False
        steps = spec.full_budget(b, "steps")
        samples = spec.full_budget(b, "samples")
        row: dict[str, Any] = {
            "effective_batch_size": b,
            "workers": workers,
            "samples_per_worker": per_worker,
            "micro_batches": micro,
            "micro_batches_exact": exact,
            "micro_batch_size": mbs,
            "micro_batch_tokens": None if mbs else token_budget,
            "steps_per_trial": None if steps is None else int(steps),
            "samples_per_trial": None if samples is None else int(samples),
            "tokens_per_trial": None if samples is None or mean is None else int(samples * mean),
        }
        if rungs:
            row["rung_steps"] = [math.ceil(r / b) if unit == "samples" else int(math.ceil(r)) for r in rungs]
        batches.append(row)

    trials = spec.planned_trials
    per_trial = [r["samples_per_trial"] for r in batches]
    max_samples = None if not per_trial or any(v is None for v in per_trial) else trials * max(per_trial)
    return {
        "name": spec.name,
        "model": spec.model.path,
        "replay": spec.model.replay.model_dump(exclude_none=True) if spec.model.replay else None,
        "search": {
            "algorithm": spec.search.algorithm,
            "num_trials": spec.search.num_trials,
            "planned_trials": trials,
            "compute_budget": (spec.search.compute_budget.model_dump(exclude_none=True)
                               if spec.search.compute_budget is not None else None),
            "max_concurrent": spec.search.max_concurrent,
            "seed": spec.search.seed,
        },
        "space": [
            {"key": k, "path": p, "kind": d.kind, "domain": d.describe()} for k, (p, d) in spec.domains.items()
        ],
        "fixed": flatten(spec.fixed),
        "budget": spec.budget.model_dump(exclude_none=True),
        "objective": {"metric": spec.objective.metric, "mode": spec.objective.mode},
        "resources": {
            "workers_per_trial": workers,
            "cpus_per_trial": tidy(workers * res.cpus_per_worker),
            "gpus_per_trial": tidy(workers * res.gpus_per_worker),
            "zero_stage": res.zero_stage,
            "max_failures": res.max_failures,
            # a retry resumes from the trial's latest checkpoint (none: from step 0)
            "checkpoint_every": res.checkpoint_every.model_dump(exclude_none=True) if res.checkpoint_every else None,
        },
        "data": {
            "train_files": [f.path for f in spec.data.train],
            "eval_files": [f.path for f in spec.data.eval],
            "train_samples": n_train,
            "mean_sample_tokens": mean,
            "measured_lines": measured["measured"],
            "measured_all": measured.get("all", False),
            "note": measured["note"],
            "preflight": summary(preflight) if preflight else None,
        },
        "batches": batches,
        "pruner": pruner_info,
        "compute": {
            "max_samples": max_samples,
            "max_tokens": None if max_samples is None or mean is None else int(max_samples * mean),
        },
        "fit": fit_of(spec, capacity),
    }


def fit_of(spec: SweepSpec, capacity: Capacity | None = None) -> dict[str, Any] | None:
    """The memory estimate per GPU of the space's extremes (sweepd/spec/fit.py), as a dict."""
    from sweepd.spec.capacity import Context
    from sweepd.spec.fit import fit_report

    report = fit_report(spec, Context(capacity=capacity))
    return report.as_dict() if report is not None else None


def _n(value: Any) -> str:
    if value is None:
        return "?"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


def _approx(value: Any) -> str:
    """An estimate in words: 1.2M, 35.0k."""
    if value is None:
        return "?"
    for div, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= div:
            return f"~{value / div:.1f}{unit}"
    return f"~{value:,.0f}"


def format_plan(plan: dict[str, Any]) -> str:
    s, res, data = plan["search"], plan["resources"], plan["data"]
    trials = f"{s['planned_trials']} trials" + (
        f" (num_trials {s['num_trials']}, capped by the grid)" if s["planned_trials"] != s["num_trials"] else ""
    )
    if s.get("compute_budget"):  # budget-first: trials are bought until the budget is spent
        spend = ", ".join(f"{_n(v)} {k.replace('_', ' ')}" for k, v in s["compute_budget"].items())
        trials = f"trials until {spend} are spent (at most {s['planned_trials']})"
    lines = [
        f"sweep {plan['name']}: model {plan['model']}" + _replay_words(plan.get("replay")),
        f"search: {s['algorithm']}, {trials}, {s['max_concurrent']} at a time, seed {s['seed']}",
        f"objective: {plan['objective']['mode']} {plan['objective']['metric']}",
        "",
        "space:",
    ]
    width = max([len(e["key"]) for e in plan["space"]] + [1])
    for e in plan["space"]:
        via = f"  ({e['path']})" if e["path"] != e["key"] else ""
        lines.append(f"  {e['key']:<{width}}  {e['domain']}{via}")
    if plan["fixed"]:
        lines.append("fixed: " + ", ".join(f"{k}={v}" for k, v in plan["fixed"].items()))
    budget = ", ".join(f"{k} {_n(v)}" for k, v in plan["budget"].items())
    lines += [
        f"budget per trial: {budget}",
        f"resources per trial: {res['workers_per_trial']} worker(s), {_n(res['cpus_per_trial'])} CPU(s), "
        f"{_n(res['gpus_per_trial'])} GPU(s), ZeRO stage {res['zero_stage']}, up to {res['max_failures']} retr"
        f"{'y' if res['max_failures'] == 1 else 'ies'}"
        + (_checkpoint_words(res.get("checkpoint_every")) if res["max_failures"] else ""),
        f"data: {_n(data['train_samples'])} train samples; mean "
        + (f"{_n(data['mean_sample_tokens'])} tokens over "
           + (f"all {_n(data['measured_lines'])} samples" if data.get("measured_all")
              else f"the first {data['measured_lines']} lines")
           if data["mean_sample_tokens"] is not None else "length unknown")
        + (f" ({data['note']})" if data["note"] else ""),
        "",
        "batches (per optimizer step: workers x samples per worker x micro-batches):",
    ]
    for r in plan["batches"]:
        if r["micro_batch_size"]:
            how = f"micro_batch_size {r['micro_batch_size']}"
        else:
            how = f"<= {_n(r['micro_batch_tokens'])} tokens per micro-batch"
        micro = "?" if r["micro_batches"] is None else ("" if r["micro_batches_exact"] else "~") + str(r["micro_batches"])
        tokens = _approx(r["tokens_per_trial"])
        lines.append(
            f"  batch {r['effective_batch_size']:>5}: {r['workers']} x {r['samples_per_worker']} x {micro} ({how}); "
            f"{_n(r['steps_per_trial'])} steps, {_n(r['samples_per_trial'])} samples, {tokens} tokens per trial"
        )
    p = plan["pruner"]
    lines.append("")
    if p["type"] == "none":
        lines.append("pruner: none (every trial runs its full budget)")
    else:
        lines.append(f"pruner: {p['description']}")
        rungs = ", ".join(_n(r) for r in p["rungs"]) or "(none below the budget: nothing can be stopped)"
        lines.append(f"  rungs ({p['time_attr']}): {rungs}" + (f" < max_t {_n(p['max_t'])}" if p["max_t"] else ""))
        if p["time_attr"] == "samples" and p["rungs"]:
            for r in plan["batches"]:
                lines.append(f"    batch {r['effective_batch_size']:>5}: at steps {', '.join(map(str, r['rung_steps']))}")
    c = plan["compute"]
    if s.get("compute_budget"):
        lines += ["", "maximum compute: the compute budget (no trial starts unless its full budget still fits)"]
    else:
        lines += [
            "",
            f"maximum compute (every trial at full budget): {_n(c['max_samples'])} samples, "
            f"{_approx(c['max_tokens'])} tokens",
        ]
    if plan.get("fit"):
        from sweepd.spec.fit import format_fit

        lines += ["", *format_fit(plan["fit"])]
    return "\n".join(lines)


def validate_command(
    path: str | Path, *, check_paths: bool = True, capacity: Capacity | None = None
) -> tuple[int, str]:
    """For ``sweepd validate SPEC``: (0, the plan) or (2, every problem, one per line)."""
    try:
        spec = load_spec(Path(path), check_paths=check_paths, capacity=capacity)
    except SpecError as err:
        return 2, err.format()
    if not check_paths:  # a spec for another machine: its data is not here to read
        return 0, format_plan(describe_plan(spec, capacity=capacity))
    from trainer.preflight import format_report

    report = data_preflight(spec)
    if report["errors"]:
        return 2, f"{path}: the data would fail every trial\n" + format_report(report)
    return 0, format_plan(describe_plan(spec, preflight=report, capacity=capacity)) + "\n\n" + format_report(report)


def _replay_words(replay: dict | None) -> str:
    """builtin:replay: ", replaying builtin:curve_bank at 100x the recorded pace, ..." (trainer/replay.py)."""
    if not replay:
        return ""
    pace = (f"a step every {_n(replay['seconds_per_step'])} s" if "seconds_per_step" in replay
            else f"{replay['speed']:g}x the recorded pace")
    run = f"run {replay['run']}" if "run" in replay else "the run nearest each trial"
    most = f", at most {_n(replay['max_reports'])} steps reported" if "max_reports" in replay else ""
    return f", replaying {run} of {replay['curves']} at {pace}{most}"


def _checkpoint_words(every: dict | None) -> str:
    """How a retried trial resumes: ", from a checkpoint every 2,048 samples", or from step 0."""
    if not every:
        return " (from step 0: no checkpoint_every)"
    if "samples" in every:
        return f", from a checkpoint every {_n(every['samples'])} samples"
    return f", from a checkpoint every {_n(every['minutes'])} minutes"
