"""`sweepd validate SPEC` and `sweepd run SPEC`: sweeps on this machine, no server."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer


def _capacity():
    """This machine's CPUs and GPUs bound a local sweep; on a Ray cluster (SWEEPD_RAY_ADDRESS)
    the cluster does, and Ray itself refuses what it can never place."""
    from sweepd.settings import get_settings
    from sweepd.spec import Capacity

    return Capacity.unlimited() if get_settings().ray_address else None


def validate(
    spec: Annotated[Path, typer.Argument(help="Sweep spec, YAML or JSON.")],
    no_check_paths: Annotated[bool, typer.Option(
        "--no-check-paths", help="Structure and memory fit only, for a spec whose data and model live on a "
                                 "cluster: no data roots, file or data preflight checks, no limit on CPUs and "
                                 "GPUs (the model's shape: its config.json if here, else sweepd's table of "
                                 "known models).")] = False,
) -> None:
    """Check a spec and print the resolved plan; exit 2 with every problem listed."""
    from sweepd.spec import Capacity
    from sweepd.spec.plan import validate_command

    capacity = Capacity.unlimited() if no_check_paths else _capacity()
    code, text = validate_command(str(spec), check_paths=not no_check_paths, capacity=capacity)
    typer.echo(text, err=code != 0)
    raise typer.Exit(code)


def run(
    spec: Annotated[Path, typer.Argument(help="Sweep spec, YAML or JSON.")],
    out: Annotated[Optional[Path], typer.Option("--out", help="Write the result JSON here.")] = None,
    new: Annotated[bool, typer.Option("--new", help="Start a fresh sweep even if an unfinished one matches.")] = False,
) -> None:
    """Run a whole sweep locally (resuming an unfinished one with the same spec)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from sweepd.spec import SpecError, load_spec

    console = Console(stderr=True)
    try:
        parsed = load_spec(str(spec), capacity=_capacity())
    except SpecError as err:
        console.print(f"[red]{spec}: invalid spec[/red]\n{err}", markup=True, highlight=False)
        raise typer.Exit(2)

    from sweepd.spec.plan import data_preflight
    from trainer.preflight import format_report, summary

    report = data_preflight(parsed)  # before any trial: bad data fails here, not in every trial
    if report["errors"]:
        console.print(f"{spec}: the data would fail every trial; no trial started\n{format_report(report)}",
                      markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    data_summary = summary(report)

    from sweepd.protocol import FINISHED_TRIAL_STATES, TRIAL_STATES, SweepState
    from sweepd.service.driver import run_local

    total = parsed.planned_trials
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=console,
                        disable=not console.is_terminal)
    task = progress.add_task(parsed.name, total=total, detail="")

    def on_progress(states: list[str]) -> None:
        done = sum(s in FINISHED_TRIAL_STATES for s in states)
        detail = " ".join(f"{k}={states.count(k)}" for k in TRIAL_STATES if states.count(k))
        progress.update(task, completed=done, detail=detail)
        if not console.is_terminal:
            console.print(f"{parsed.name}: {done}/{total} trials finished ({detail})", highlight=False)

    def on_start(sweep_id: str, resumed: bool) -> None:
        console.print(f"{'resuming' if resumed else 'started'} sweep {sweep_id} ({parsed.name}, {total} trials)",
                      highlight=False)

    try:
        with progress:
            result = run_local(parsed, new=new, on_progress=on_progress, on_start=on_start,
                               preflight=data_summary)
    except SpecError as err:  # search.warm_start names a sweep that cannot be used
        console.print(f"[red]{spec}: invalid spec[/red]\n{err}", markup=True, highlight=False)
        raise typer.Exit(2)
    result["data_preflight"] = data_summary
    totals = data_summary["totals"]
    text = json.dumps(result, indent=2, default=str)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    best = result.get("best")
    ledger = result.get("ledger") or {}
    if result["state"] != SweepState.succeeded and result.get("error"):  # one line: why it failed
        console.print(f"sweep {result['sweep_id']} ({parsed.name}) {result['state']}: "
                      + " ".join(str(result["error"]).split()), highlight=False, markup=False, soft_wrap=True)
    else:
        console.print(f"sweep {result['sweep_id']}: {result['state']}; "
                      + (f"best trial {best['number']} {parsed.objective.metric}={best['objective']:.4g} "
                         f"{best['config']}" if best else "no best trial")
                      + f"; compute saved {ledger.get('fraction_saved', 0):.0%}"
                      + f"; data: {totals['train_samples']:,} samples, {totals['dropped_overlong']:,} over-long "
                        f"dropped, {totals['truncated']:,} truncated", highlight=False, soft_wrap=True)
    if not out:
        sys.stdout.write(text + "\n")
    raise typer.Exit(0 if result["state"] == SweepState.succeeded else 1)


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)
    app.command("run")(run)
