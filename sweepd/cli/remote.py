"""`sweepd submit`, `status`, `cancel`: talk to a sweepd server over REST (`extend` in extend.py and
`priority` in priority.py too; `sweepd token ...` works on the local database, in tokens.py).

`sweepd submit SPEC --wait` is made for CI jobs. Exit codes:

    0  the sweep succeeded (and, with --baseline, did not regress)
    1  the sweep failed (its data preflight on the server too: the reason is its file:line) or
       was cancelled
    2  --baseline given and the best objective regressed beyond --tolerance
    3  the sweep did not run or could not be followed: invalid spec, bad token, unreachable
       server (after retries), unusable baseline file

Every exit comes with a one-line reason on stderr; the sweep id goes to stdout.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from sweepd.client import DEFAULT_SERVER
from sweepd.protocol import FINISHED_TRIAL_STATES, SWEEP_STATE_LABELS, TRIAL_STATES, TrialState

if TYPE_CHECKING:
    from sweepd.client import SweepdClient

EXIT_OK, EXIT_FAILED, EXIT_REGRESSED, EXIT_ERROR = 0, 1, 2, 3

SweepIdArgument = Annotated[str, typer.Argument(help="The sweep's id.", show_default=False)]
ServerOption = Annotated[str, typer.Option(
    "--server", envvar="SWEEPD_SERVER", help="The sweepd server (env SWEEPD_SERVER).")]
TokenOption = Annotated[Optional[str], typer.Option(
    "--token", envvar="SWEEPD_TOKEN", show_default=False,
    help="API token (env SWEEPD_TOKEN); create one with `sweepd token create NAME`.")]
RetriesOption = Annotated[int, typer.Option(
    "--retries", min=0, help="Retries on connection errors and 502/503/504, with exponential backoff.")]
BackoffOption = Annotated[float, typer.Option(
    "--backoff", min=0.0, help="First retry delay in seconds (doubles each retry).")]
DashboardOption = Annotated[Optional[str], typer.Option(
    "--dashboard-url", envvar="SWEEPD_DASHBOARD_URL", show_default=False,
    help="Base URL of the dashboard for links (default: the server URL).")]


def _say(line: str) -> None:
    """A one-line message on stderr."""
    typer.echo(" ".join(str(line).split()), err=True)


def _die(code: int, reason: str) -> typer.Exit:
    _say(reason)
    return typer.Exit(code)


def _client(server: str, token: str | None, retries: int, backoff: float) -> SweepdClient:
    from sweepd.client import SweepdClient

    try:
        return SweepdClient(server, token or None, retries=retries, backoff=backoff)
    except ValueError as err:
        raise _die(EXIT_ERROR, f"error: {err}") from None


@contextmanager
def _connected(server: str, token: str | None, retries: int, backoff: float) -> Iterator[SweepdClient]:
    """A client for one command; a request that fails for good is exit 3 with its reason."""
    from sweepd.client import ClientError

    with _client(server, token, retries, backoff) as client:
        try:
            yield client
        except ClientError as err:
            raise _die(EXIT_ERROR, f"error: {err}") from None


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _spec_metric(spec: Path) -> str | None:
    """The objective metric named in a spec file, if it can be read without validating."""
    import yaml

    try:
        data = yaml.safe_load(spec.read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 - the server will say what is wrong with it
        return None
    obj = data.get("objective") if isinstance(data, dict) else None
    metric = obj.get("metric") if isinstance(obj, dict) else None
    return metric if isinstance(metric, str) else None


class _Progress:
    """Progress of a sweep on stderr: a rich progress bar on a terminal, otherwise one plain
    line whenever something changed (state, trials finished, best objective)."""

    def __init__(self, sweep_id: str, name: str) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.sweep_id, self.name = sweep_id, name
        self.bar = None
        self.task = None
        self.last: tuple | None = None
        if self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[detail]}"), TimeElapsedColumn(),
                                console=self.console)

    def __enter__(self) -> "_Progress":
        if self.bar is not None:
            self.bar.start()
            self.task = self.bar.add_task(f"{self.name} ({self.sweep_id})", total=None, detail="submitted")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()

    def update(self, sweep: dict[str, Any]) -> None:
        from sweepd.formatting import fmt_num
        from sweepd.report import objective_of

        p = sweep.get("progress") or {}
        planned = p.get("planned") or None
        finished = int(p.get("finished") or 0)
        state = SWEEP_STATE_LABELS.get(sweep.get("state"), sweep.get("state"))  # "validating data"
        parts = [f"{k}={p[k]}" for k in (TrialState.running.value, *FINISHED_TRIAL_STATES) if p.get(k)]
        best = sweep.get("best") or {}
        metric, _ = objective_of(sweep)
        if best.get("objective") is not None:
            parts.append(f"best {metric}={fmt_num(best['objective'])}")
        detail = " ".join(parts)
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, total=planned, completed=finished, detail=f"{state} {detail}".strip())
            return
        key = (state, finished, planned, detail)
        if key != self.last:
            self.last = key
            of = f"/{planned}" if planned else ""
            self.console.print(f"sweep {self.sweep_id} ({self.name}): {state}, {finished}{of} trials finished"
                               + (f" ({detail})" if detail else ""), highlight=False, markup=False,
                               soft_wrap=True)


# -------------------------------------------------------------------------------------- submit


def submit(
    spec: Annotated[Path, typer.Argument(help="Sweep spec, YAML or JSON.", show_default=False)],
    server: ServerOption = DEFAULT_SERVER,
    token: TokenOption = None,
    wait: Annotated[bool, typer.Option(
        "--wait", help="Follow the sweep until it ends; the exit code says how it went.")] = False,
    baseline: Annotated[Optional[Path], typer.Option(
        "--baseline", show_default=False,
        help="Baseline JSON (from --write-baseline): exit 2 if the best objective regressed. "
             "A missing file is noted and skipped (the first night has none).")] = None,
    tolerance: Annotated[float, typer.Option(
        "--tolerance", min=0.0, help="Allowed relative regression vs the baseline.")] = 0.02,
    junit: Annotated[Optional[Path], typer.Option(
        "--junit", show_default=False, help="Write a JUnit XML report, one test case per trial.")] = None,
    summary: Annotated[Optional[Path], typer.Option(
        "--summary", show_default=False, help="Write a Markdown summary (for $GITHUB_STEP_SUMMARY).")] = None,
    write_baseline: Annotated[Optional[Path], typer.Option(
        "--write-baseline", show_default=False,
        help="Write the finished sweep's best as a new baseline (only when the exit code is 0).")] = None,
    dashboard_url: DashboardOption = None,
    poll: Annotated[float, typer.Option("--poll", min=0.05, help="Seconds between status polls.")] = 2.0,
    retries: RetriesOption = 5,
    backoff: BackoffOption = 0.5,
) -> None:
    """Submit a sweep to a sweepd server (prints its id); --wait follows it to the end.

    Exit codes with --wait: 0 succeeded, 1 failed or cancelled, 2 the best objective regressed
    beyond --tolerance vs --baseline, 3 invalid spec, bad token or unreachable server; always
    with a one-line reason on stderr. --baseline, --junit, --summary and --write-baseline
    imply --wait.
    """
    from sweepd import report
    from sweepd.cli import ci
    from sweepd.client import ClientError
    from sweepd.formatting import fmt_num

    wait = wait or any(x is not None for x in (baseline, junit, summary, write_baseline))
    notes: list[str] = []

    def fail_early(reason: str) -> typer.Exit:
        """Exit 3, leaving a summary and a JUnit report that say why (CI shows them)."""
        try:
            if summary is not None:
                _write(summary, report.error_summary(reason, spec=str(spec)))
            if junit is not None:
                _write(junit, ci.error_junit(reason))
        except OSError as err:
            _say(f"warning: cannot write the report: {err}")
        return _die(EXIT_ERROR, f"error: {reason}")

    if not spec.is_file():
        raise fail_early(f"cannot read spec {str(spec)!r}: no such file")
    base_data: dict[str, Any] | None = None
    if baseline is not None:
        if not baseline.exists():
            notes.append(f"No baseline at {baseline}: nothing to compare with "
                         f"(write one with --write-baseline).")
            _say(f"note: no baseline at {baseline}; the comparison is skipped")
        else:
            try:
                base_data = ci.load_baseline(baseline)
            except ci.BaselineError as err:
                raise fail_early(str(err)) from None
            metric = _spec_metric(spec)
            if metric and base_data.get("metric") and metric != base_data["metric"]:
                raise fail_early(f"baseline {baseline} is for {base_data['metric']!r} but the spec optimises "
                                 f"{metric!r}")

    client = _client(server, token, retries, backoff)
    with client:
        try:
            created = client.submit(spec)
        except ClientError as err:
            raise fail_early(f"{spec}: {err}") from None
        sweep_id = str(created["id"])
        name = str(created.get("name") or spec.stem)
        link = report.dashboard_link(sweep_id, dashboard_url or client.base_url)
        typer.echo(sweep_id)
        if not wait:
            raise _die(EXIT_OK, f"submitted sweep {sweep_id} ({name}): {link}")
        _say(f"submitted sweep {sweep_id} ({name}): {link}")

        try:
            with _Progress(sweep_id, name) as progress:
                final = client.wait(sweep_id, poll=poll, on_update=progress.update)
            trials = client.trials(sweep_id)
        except ClientError as err:
            raise fail_early(f"sweep {sweep_id}: {err}") from None
        except KeyboardInterrupt:
            raise _die(130, f"interrupted; sweep {sweep_id} goes on (stop it with `sweepd cancel {sweep_id}`)")

    state = final.get("state")
    metric, mode = report.objective_of(final)
    best = final.get("best") or {}
    check = None
    if state == "succeeded" and base_data is not None:
        try:
            check = ci.compare_baseline(base_data, final, tolerance)
        except ci.BaselineError as err:
            raise fail_early(f"sweep {sweep_id}: {err}") from None

    if state == "succeeded" and check is not None and check.regressed:
        code, reason = EXIT_REGRESSED, f"sweep {sweep_id} ({name}) regressed: {check.message}"
    elif state == "succeeded":
        code = EXIT_OK
        reason = f"sweep {sweep_id} ({name}) succeeded: " + (
            f"best trial {best.get('number')} {metric}={fmt_num(best.get('objective'))} ({mode})"
            if best.get("objective") is not None else "no best trial")
        if check is not None:
            reason += f"; {check.message}"
    elif state == "cancelled":
        code, reason = EXIT_FAILED, f"sweep {sweep_id} ({name}) was cancelled"
    else:
        code, reason = EXIT_FAILED, f"sweep {sweep_id} ({name}) {state}: {final.get('error') or 'no error recorded'}"

    try:
        if junit is not None:
            _write(junit, ci.junit_xml(final, trials))
        if summary is not None:
            _write(summary, report.markdown_summary(final, trials, dashboard_url=dashboard_url or client.base_url,
                                                    check=check, notes=notes))
        if write_baseline is not None:
            if code == EXIT_OK:
                ci.write_baseline(write_baseline, final)
                _say(f"wrote baseline {write_baseline}")
            else:
                _say(f"note: baseline {write_baseline} not written (exit code {code})")
    except (OSError, ci.BaselineError) as err:
        raise _die(EXIT_ERROR, f"error: sweep {sweep_id} {state}, but writing the reports failed: {err}") from None
    raise _die(code, reason)


# ------------------------------------------------------------------------------ status, cancel


def status(
    sweep_id: SweepIdArgument,
    server: ServerOption = DEFAULT_SERVER,
    token: TokenOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the sweep as JSON.")] = False,
    write_baseline: Annotated[Optional[Path], typer.Option(
        "--write-baseline", show_default=False,
        help="Write this (finished) sweep's best as the baseline file.")] = None,
    dashboard_url: DashboardOption = None,
    retries: RetriesOption = 5,
    backoff: BackoffOption = 0.5,
) -> None:
    """Show a sweep: state, progress, priority and share, best trial, compute saved. Exit 3 when it
    cannot be read."""
    from sweepd import report
    from sweepd.cli import ci
    from sweepd.formatting import fmt_num

    with _connected(server, token, retries, backoff) as client:
        sweep = client.get_sweep(sweep_id)
    if as_json:
        typer.echo(json.dumps(sweep, indent=2, default=str))
    else:
        metric, mode = report.objective_of(sweep)
        p = sweep.get("progress") or {}
        best = sweep.get("best") or {}
        ledger = sweep.get("ledger") or {}
        shown = SWEEP_STATE_LABELS.get(sweep.get("state"), sweep.get("state"))  # "validating data"
        lines = [f"sweep {sweep.get('id')} ({sweep.get('name')}): {shown}",
                 f"  trials: {p.get('finished', 0)}/{p.get('planned', '?')} finished "
                 + " ".join(f"{k}={p[k]}" for k in TRIAL_STATES if p.get(k)),
                 f"  objective: {metric} ({mode})"]
        from sweepd.cli.priority import share_lines

        lines += share_lines(sweep)  # priority, queue position or share, what it waits for
        if best.get("objective") is not None:
            lines.append(f"  best: trial {best.get('number')} {metric}={fmt_num(best['objective'])} "
                         f"{json.dumps(best.get('config') or {}, sort_keys=True)}")
        if ledger.get("fraction_saved") is not None:
            lines.append(f"  compute saved by stopping early: {float(ledger['fraction_saved']):.1%} "
                         f"({ledger.get('trials_stopped', 0)} trials stopped)")
        if sweep.get("budget"):  # a compute-budget sweep: spent, left, projected
            from sweepd.engine.budget import describe_budget

            lines.append(f"  {describe_budget(sweep['budget'])}")
        if (sweep.get("warm_start") or {}).get("message"):  # where the study's prior came from
            lines.append(f"  {sweep['warm_start']['message']}")
        if sweep.get("extensions"):
            lines.append(f"  extended {sweep['extensions']} time(s) (sweepd extend)")
        if sweep.get("error"):
            lines.append(f"  error: {sweep['error']}")
        lines.append(f"  {report.dashboard_link(str(sweep.get('id')), dashboard_url or client.base_url)}")
        typer.echo("\n".join(lines))
    if write_baseline is not None:
        if sweep.get("state") != "succeeded":
            raise _die(EXIT_FAILED, f"sweep {sweep_id} is {sweep.get('state')}, not succeeded: no baseline written")
        try:
            ci.write_baseline(write_baseline, sweep)
        except (OSError, ci.BaselineError) as err:
            raise _die(EXIT_ERROR, f"error: {err}") from None
        _say(f"wrote baseline {write_baseline}")


def cancel(
    sweep_id: SweepIdArgument,
    server: ServerOption = DEFAULT_SERVER,
    token: TokenOption = None,
    retries: RetriesOption = 5,
    backoff: BackoffOption = 0.5,
) -> None:
    """Cancel a sweep: its trials stop within seconds. Exit 1 if it had already finished."""
    from sweepd.client import ConflictError

    with _connected(server, token, retries, backoff) as client:
        try:
            client.cancel(sweep_id)
        except ConflictError as err:
            raise _die(EXIT_FAILED, f"sweep {sweep_id} not cancelled: {err}") from None
    _say(f"cancel requested for sweep {sweep_id}")


# --------------------------------------------------------------------------------------- token

def register(app: typer.Typer) -> None:
    app.command("submit")(submit)
    app.command("status")(status)
    app.command("cancel")(cancel)
