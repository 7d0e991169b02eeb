"""`sweepd extend ID`: a finished sweep goes on with more trials or budget, optionally in a
narrowed space, keeping its Optuna study and its pruner's rung scores and learned state
(sweepd/service/extend.py says how).

Through a sweepd server (like `submit`, `status`, `cancel`) by default: the sweep is queued again
and the server's supervisor drives it. `--local` extends it in the local database and drives it
here, as `sweepd run` does; run `sweepd extend ID --local` again without an amount to resume an
extension whose driver died.

Exit codes: 0 queued (with --wait or --local: the sweep succeeded), 1 it failed or was cancelled,
or it is not finished (queued or running: nothing to extend yet), 2 the extension is invalid
(--local; a key outside the sweep's space is named), 3 the extension could not be asked for or
is invalid (server: bad token, unreachable server, 422), or no such sweep.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from sweepd.cli.remote import (
    EXIT_ERROR, EXIT_FAILED, EXIT_OK, BackoffOption, RetriesOption, ServerOption, SweepIdArgument, TokenOption, _connected,
    _die, _say,
)  # fmt: skip
from sweepd.client import DEFAULT_SERVER

EXIT_INVALID = 2


def extend(
    sweep_id: SweepIdArgument,
    trials: Annotated[Optional[int], typer.Option(
        "--trials", min=1, show_default=False, help="Run this many more trials.")] = None,
    budget: Annotated[Optional[float], typer.Option(
        "--budget", min=0.0, show_default=False,
        help="Add this much compute budget: samples (GPU hours for a gpu_hours budget). Alone, it lifts "
             "the trial cap: the budget decides.")] = None,
    space: Annotated[Optional[Path], typer.Option(
        "--space", show_default=False,
        help="YAML/JSON with search-space entries inside the sweep's own (bare, under space:, or a whole "
             "spec): they replace the sweep's; keys left out keep theirs.")] = None,
    local: Annotated[bool, typer.Option(
        "--local", help="Extend in the local database and drive it here, as `sweepd run` does (no server).")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the sweep until it ends (server).")] = False,
    out: Annotated[Optional[Path], typer.Option(
        "--out", show_default=False, help="With --local: write the result JSON here.")] = None,
    server: ServerOption = DEFAULT_SERVER,
    token: TokenOption = None,
    retries: RetriesOption = 5,
    backoff: BackoffOption = 0.5,
) -> None:
    """Extend a finished sweep: more trials (--trials) or budget (--budget), maybe a narrowed
    space (--space). The study, the pruner's rung scores and its learned state are kept."""
    from sweepd.client import ClientError, ConflictError, load_space

    if budget is not None and budget <= 0:
        raise _die(EXIT_ERROR, "error: --budget must be > 0")
    try:
        narrowed = load_space(space) if space is not None else None
    except ClientError as err:
        raise _die(EXIT_ERROR, f"error: {err}") from None
    if local:
        _extend_local(sweep_id, trials, budget, narrowed, out)
        return
    if trials is None and budget is None:
        raise _die(EXIT_ERROR, "error: say how much more to run: --trials N and/or --budget AMOUNT")
    with _connected(server, token, retries, backoff) as client:
        try:
            sweep = client.extend(sweep_id, trials=trials, budget=budget, space=narrowed)
        except ConflictError as err:
            raise _die(EXIT_FAILED, f"sweep {sweep_id} not extended: {err}") from None
        planned = (sweep.get("progress") or {}).get("planned")
        _say(f"sweep {sweep_id} extended ({planned} trials planned): {sweep.get('state')}")
        if not wait:
            return
        final = client.wait(sweep_id, on_update=lambda s: None)
    state = final.get("state")
    raise _die(EXIT_OK if state == "succeeded" else EXIT_FAILED,
               f"sweep {sweep_id} {state}: {(final.get('progress') or {}).get('finished', 0)} trials finished")


def _extend_local(sweep_id: str, trials: int | None, budget: float | None, space: dict | None,
                  out: Path | None) -> None:
    from rich.console import Console

    from sweepd.protocol import FINISHED_TRIAL_STATES, TRIAL_STATES, SweepState
    from sweepd.service.driver import extend_local
    from sweepd.service.extend import ExtendConflict
    from sweepd.spec import SpecError
    from sweepd.store.repo import NotFound

    console = Console(stderr=True)
    last: list = [None]

    def on_start(sid: str, spec, resumed: bool) -> None:
        console.print(f"{'resuming' if resumed else 'extended'} sweep {sid} ({spec.name}): "
                      f"{spec.planned_trials} trials planned", highlight=False)

    def on_progress(states: list[str]) -> None:
        done = sum(s in FINISHED_TRIAL_STATES for s in states)
        detail = " ".join(f"{k}={states.count(k)}" for k in TRIAL_STATES if states.count(k))
        if (done, detail) != last[0]:
            last[0] = (done, detail)
            console.print(f"sweep {sweep_id}: {done} trials finished ({detail})", highlight=False)

    try:
        result = extend_local(sweep_id, trials=trials, budget=budget, space=space,
                              on_progress=on_progress, on_start=on_start)
    except NotFound as err:
        raise _die(EXIT_ERROR, f"error: {err}") from None
    except ExtendConflict as err:
        raise _die(EXIT_FAILED, f"sweep {sweep_id} not extended: {err}") from None
    except SpecError as err:
        console.print(f"sweep {sweep_id}: invalid extension\n{err.format()}", highlight=False, markup=False)
        raise typer.Exit(EXIT_INVALID) from None
    text = json.dumps(result, indent=2, default=str)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    console.print(f"sweep {result['sweep_id']}: {result['state']}; {len(result['trials'])} trials", highlight=False)
    raise typer.Exit(EXIT_OK if result["state"] == SweepState.succeeded else EXIT_FAILED)


def register(app: typer.Typer) -> None:
    app.command("extend")(extend)
