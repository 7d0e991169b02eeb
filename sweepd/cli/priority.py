"""`sweepd priority ID {low,normal,high}`: change a sweep's priority on a sweepd server (PATCH
/api/v1/sweeps/{id}). A queued sweep moves in the queue at once; a running one's share of the
cluster follows at the supervisor's next round. Also how `sweepd status` describes a sweep's
priority, share and what it waits for (``share_lines``).

Exit codes: 0 changed, 1 the sweep has already finished, 3 a bad priority, no such sweep, a bad
token or an unreachable server; always with a one-line reason on stderr.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from sweepd.cli.remote import (
    EXIT_ERROR, EXIT_FAILED, BackoffOption, RetriesOption, ServerOption, SweepIdArgument, TokenOption, _connected,
    _die, _say,
)  # fmt: skip
from sweepd.client import DEFAULT_SERVER, TERMINAL_STATES
from sweepd.protocol import PRIORITIES

PriorityArgument = Annotated[str, typer.Argument(
    show_default=False, help=f"{', '.join(PRIORITIES)}: the sweep's weight in the cluster's fair share and its "
                             "place in the queue.")]


def set_priority(
    sweep_id: SweepIdArgument,
    priority: PriorityArgument,
    server: ServerOption = DEFAULT_SERVER,
    token: TokenOption = None,
    retries: RetriesOption = 5,
    backoff: BackoffOption = 0.5,
) -> None:
    """Change a sweep's priority: low, normal or high. Exit 1 if it has already finished."""
    from sweepd.client import ConflictError

    if priority not in PRIORITIES:  # checked here: a one-line error rather than click's usage box
        raise _die(EXIT_ERROR, f"error: priority must be one of {', '.join(PRIORITIES)}, got {priority!r}")
    with _connected(server, token, retries, backoff) as client:
        try:
            sweep = client.set_priority(sweep_id, priority)
        except ConflictError as err:
            raise _die(EXIT_FAILED, f"sweep {sweep_id} priority not changed: {err}") from None
    where = f"; queue position {sweep['queue_position']}" if sweep.get("queue_position") else ""
    _say(f"sweep {sweep_id} ({sweep.get('name')}): priority {sweep.get('priority', priority)}{where}")


def share_lines(sweep: dict[str, Any]) -> list[str]:
    """`sweepd status`'s lines on sharing the cluster: the priority, the place in the queue or
    the running trials against the share, and what the sweep waits for (none for a finished sweep,
    which shares nothing any more, nor from a server that does not send these fields)."""
    if sweep.get("priority") is None or sweep.get("state") in TERMINAL_STATES:
        return []
    parts = [f"priority: {sweep['priority']}"]
    if sweep.get("queue_position") is not None:
        parts.append(f"queue position {sweep['queue_position']}")
    if sweep.get("state") == "running":
        running, limit = sweep.get("running_trials", 0), sweep.get("trial_limit")
        if limit is None:
            parts.append(f"running {running} of up to {sweep.get('max_concurrent', '?')} trials at once")
        else:
            parts.append(f"share: {running} of {limit} trial slots running")
    lines = ["  " + "; ".join(parts)]
    if sweep.get("waiting_for"):
        lines.append(f"  waiting for {sweep['waiting_for']}")
    return lines


def register(app: typer.Typer) -> None:
    app.command("priority")(set_priority)
