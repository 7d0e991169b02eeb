"""A finished (or running) sweep's result as GitHub-flavoured Markdown: state, best config and
objective, the baseline comparison, the top trials, the compute used and saved, and a link to
the sweep on the dashboard. One renderer for everyone: ``GET /api/v1/sweeps/{id}/report?format=
markdown`` serves it, and ``sweepd submit --wait --summary`` writes it for CI (it fits
``$GITHUB_STEP_SUMMARY`` as is).

Pure functions of the API's JSON: the sweep as ``GET /api/v1/sweeps/{id}`` returns it and the
trials as ``GET /api/v1/sweeps/{id}/trials`` lists them, so they are tested without a server.
The rest of what a CI job gets (a JUnit report, the baseline comparison) is in sweepd/cli/ci.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sweepd.formatting import fmt_num, fmt_seconds, flatten, is_finite_number
from sweepd.protocol import FINISHED_TRIAL_STATES, TRIAL_STATES

if TYPE_CHECKING:
    from sweepd.cli.ci import BaselineCheck

TOP_N = 5

Sweep = Mapping[str, Any]
Trial = Mapping[str, Any]

# Trial counts are listed finished states first, then the ones still to finish.
_COUNT_ORDER = FINISHED_TRIAL_STATES + tuple(s for s in TRIAL_STATES if s not in FINISHED_TRIAL_STATES)
_ICON = {"succeeded": "✅", "failed": "❌", "cancelled": "⚪", "validating": "⏳", "queued": "⏳", "running": "⏳"}


# ------------------------------------------------------------------------- reading the JSON


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def sweep_seconds(sweep: Sweep) -> float | None:
    start, end = _parse_time(sweep.get("started_at")), _parse_time(sweep.get("finished_at"))
    if start is None or end is None:
        return None
    if (start.tzinfo is None) != (end.tzinfo is None):
        start, end = start.replace(tzinfo=None), end.replace(tzinfo=None)
    return max(0.0, (end - start).total_seconds())


def objective_of(sweep: Sweep) -> tuple[str, str]:
    """(metric, mode) of the sweep's objective."""
    obj = sweep.get("objective") or {}
    return str(obj.get("metric") or "objective"), str(obj.get("mode") or "min")


def ranked_trials(trials: Sequence[Trial], mode: str) -> list[Trial]:
    """Trials that have an objective, best first (ties: lower trial number first)."""
    scored = [t for t in trials if is_finite_number(t.get("objective"))]
    sign = -1.0 if mode == "max" else 1.0
    return sorted(scored, key=lambda t: (sign * float(t["objective"]), t.get("number", 0)))


def counts(sweep: Sweep, trials: Sequence[Trial]) -> dict[str, int]:
    """Trials per state: from the trial list when there is one, else the sweep's progress."""
    if trials:
        out: dict[str, int] = {}
        for t in trials:
            out[str(t.get("state"))] = out.get(str(t.get("state")), 0) + 1
        return out
    progress = sweep.get("progress") or {}
    return {k: int(progress.get(k) or 0) for k in TRIAL_STATES if progress.get(k)}


def dashboard_link(sweep_id: str, base: str) -> str:
    return f"{base.rstrip('/')}/sweeps/{sweep_id}"


# --------------------------------------------------------------------------------- Markdown


def cell(value: Any) -> str:
    """A value as one line of Markdown that is safe in a table cell: numbers for people (lists
    of them joined), pipes and backslashes escaped, whitespace runs folded to one space."""
    if isinstance(value, (list, tuple)):
        text = ", ".join(fmt_num(v) for v in value)
    else:
        text = fmt_num(value) if isinstance(value, (int, float)) or value is None else str(value)
    return " ".join(text.replace("\\", "\\\\").replace("|", "\\|").split())


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str) -> list[str]:
    """A GFM table; ``align`` has one letter per column: ``r`` right-aligned, anything else left."""
    marks = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "| " + " | ".join(marks) + " |"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def _facts(sweep: Sweep, trials: Sequence[Trial], link: str) -> str:
    """One line: the sweep's id and link, its trials by state, the objective, how long it took."""
    metric, mode = objective_of(sweep)
    n = counts(sweep, trials)
    total = sum(n.values())
    planned = (sweep.get("progress") or {}).get("planned")
    by_state = ", ".join(f"{n[s]} {s}" for s in _COUNT_ORDER if n.get(s))
    facts = [f"Sweep [`{sweep.get('id')}`]({link})",
             _plural(total, "trial") + (f" of {planned} planned" if planned and planned != total else "")
             + (f" ({by_state})" if by_state else ""),
             f"objective: {metric} ({mode})"]
    duration = sweep_seconds(sweep)
    if duration is not None:
        facts.append(f"took {fmt_seconds(duration)}")
    return " · ".join(facts)


def _top_trials(trials: Sequence[Trial], metric: str, mode: str) -> list[str]:
    ranked = ranked_trials(trials, mode)[:TOP_N]
    if not ranked:
        return []
    keys: list[str] = []
    for t in ranked:
        keys += [k for k in flatten(t.get("config")) if k not in keys]
    last = [k.rsplit(".", 1)[-1] for k in keys]  # column labels: the last part, unless two share it
    labels = [s if last.count(s) == 1 else k for k, s in zip(keys, last)]
    rows = []
    for rank, t in enumerate(ranked, 1):
        config = flatten(t.get("config"))
        rows.append([rank, t.get("number"), t.get("objective"), *[config.get(k, "") for k in keys],
                     t.get("samples"), fmt_seconds(t.get("seconds"))])
    return [f"### Top {_plural(len(ranked), 'trial')}", "",
            *_table(["#", "trial", metric, *labels, "samples", "time"], rows, "rrr" + "l" * len(keys) + "rr"), ""]


def _compute(ledger: Mapping[str, Any]) -> list[str]:
    lines = ["### Compute", ""]
    if not ledger.get("spent"):
        return lines + ["No compute recorded."]
    rows = []
    for key, title in (("spent", "used"), ("stopped_trials_would_have_spent", "saved by stopping early"),
                       ("without_pruning", "without pruning")):
        part = ledger.get(key) or {}
        rows.append([title, part.get("samples"), part.get("tokens"), fmt_seconds(part.get("seconds"))])
    lines += _table(["", "samples", "tokens", "time"], rows, "lrrr")
    frac = ledger.get("fraction_saved")
    if frac is not None:
        stopped = ledger.get("trials_stopped") or 0
        lines += ["", f"Stopping {fmt_num(stopped)} trial{'s' if stopped != 1 else ''} early saved "
                      f"**{float(frac):.1%}** of the samples a sweep without pruning would have used."]
    return lines


def markdown_summary(
    sweep: Sweep,
    trials: Sequence[Trial],
    *,
    dashboard_url: str,
    check: BaselineCheck | None = None,
    notes: Sequence[str] = (),
) -> str:
    """The sweep as Markdown: state, best config and objective, the baseline comparison (when
    ``check`` is given), the top-5 trials, the compute used and saved, and a link to the sweep on
    the dashboard (``{dashboard_url}/sweeps/{id}``)."""
    sweep_id = str(sweep.get("id"))
    name = str(sweep.get("name") or sweep_id)
    state = str(sweep.get("state"))
    metric, mode = objective_of(sweep)
    link = dashboard_link(sweep_id, dashboard_url)
    icon = "⚠️" if check is not None and check.regressed and state == "succeeded" else _ICON.get(state, "")
    lines = [f"## {icon} sweepd sweep `{name}` {state}".replace("  ", " "), "", _facts(sweep, trials, link), ""]
    if sweep.get("error"):
        lines += [f"**Error:** {cell(sweep['error'])}", ""]
    for note in notes:
        lines += [f"> {cell(note)}", ""]

    best = sweep.get("best") or None
    if best and is_finite_number(best.get("objective")):
        lines += [f"### Best: trial {best.get('number')} — {metric} = **{fmt_num(best['objective'])}**", ""]
    else:
        lines += ["### Best: no trial finished with an objective", ""]
    if check is not None:
        mark = "❌ regression" if check.regressed else "✅ no regression"
        lines += [f"**Baseline:** {mark}: {cell(check.message)}", ""]
    if best and best.get("config"):
        lines += [*_table(["hyperparameter", "value"], list(flatten(best["config"]).items()), "lr"), ""]

    lines += _top_trials(trials, metric, mode)
    lines += _compute(sweep.get("ledger") or {})
    lines += ["", f"[Open sweep `{sweep_id}` on the dashboard]({link})", ""]
    return "\n".join(lines)


def error_summary(message: str, *, spec: str | None = None) -> str:
    """The Markdown summary for a sweep that could not run at all."""
    what = f" `{spec}`" if spec else ""
    return f"## ❌ sweepd: the sweep{what} did not run\n\n{cell(message)}\n"
