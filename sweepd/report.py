"""What a CI job gets from a finished sweep: a JUnit report, a Markdown summary, and the
comparison with a baseline. Pure functions of the API's JSON (the sweep from
``GET /api/v1/sweeps/{id}`` and the trials from ``GET /api/v1/sweeps/{id}/trials``), so they
are tested without a server; ``sweepd submit`` (sweepd/cli_client.py) writes their output.

Baseline file (``--write-baseline`` writes it, ``--baseline`` reads it)::

    {"sweep_id": "3f2a...", "metric": "eval_loss", "mode": "min", "objective": 1.2345,
     "config": {"learning_rate": 0.0003, ...}}

A regression is a best objective worse than the baseline's by more than ``tolerance``,
relative to the baseline (``|baseline|``; an absolute difference when the baseline is 0), in the
direction of the sweep's objective mode. Exactly at the tolerance is not a regression.
"""

from __future__ import annotations

from sweepd.protocol import FINISHED_TRIAL_STATES

import json
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

TOP_N = 5
DEFAULT_TOLERANCE = 0.02
_EPS = 1e-9  # float slack at the tolerance edge: 2.04 vs 2.0 at 2% is not a regression

Sweep = Mapping[str, Any]
Trial = Mapping[str, Any]


class BaselineError(ValueError):
    """A baseline file that cannot be used (unreadable, malformed, another metric)."""


# ----------------------------------------------------------------------------------- helpers


def fmt_num(value: Any) -> str:
    """Numbers for people: 4 significant digits for floats, thousands separators for ints."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == int(value) and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:.4g}"
    return str(value)


def fmt_seconds(seconds: Any) -> str:
    if seconds is None:
        return "–"
    s = float(seconds)
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m}m {s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m"


def flatten(config: Mapping[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """``{"hparams": {"learning_rate": 1e-4}}`` -> ``{"hparams.learning_rate": 1e-4}``."""
    out: dict[str, Any] = {}
    for key, value in (config or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _short_keys(keys: Sequence[str]) -> dict[str, str]:
    """Column labels: the last part of each dotted key, unless two keys would share it."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def _cell(value: Any) -> str:
    text = fmt_num(value) if isinstance(value, (int, float)) or value is None else str(value)
    if isinstance(value, (list, tuple)):
        text = ", ".join(fmt_num(v) for v in value)
    return " ".join(text.replace("|", "\\|").split())


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


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def ranked_trials(trials: Sequence[Trial], mode: str) -> list[Trial]:
    """Trials that have an objective, best first (ties: lower trial number first)."""
    scored = [t for t in trials if _finite(t.get("objective"))]
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
    return {k: int(progress.get(k) or 0) for k in ("pending", "running", *FINISHED_TRIAL_STATES)
            if progress.get(k)}


def dashboard_link(sweep_id: str, base: str) -> str:
    return f"{base.rstrip('/')}/sweeps/{sweep_id}"


# ---------------------------------------------------------------------------------- baseline


@dataclass(frozen=True)
class BaselineCheck:
    """The sweep's best objective against a baseline."""

    metric: str
    mode: str
    baseline: float
    current: float | None
    tolerance: float
    worse_by: float | None  # relative; > 0 means worse than the baseline, < 0 better
    regressed: bool
    baseline_sweep: str | None = None

    @property
    def message(self) -> str:
        base = f"baseline {fmt_num(self.baseline)}" + (
            f" (sweep {self.baseline_sweep})" if self.baseline_sweep else "")
        if self.current is None or self.worse_by is None:
            return f"no best {self.metric} to compare with {base}"
        if self.worse_by == 0:
            rel = "equal to"
        else:
            rel = f"{abs(self.worse_by):.2%} {'worse' if self.worse_by > 0 else 'better'} than"
        verdict = "regressed beyond" if self.regressed else "within"
        return (f"best {self.metric}={fmt_num(self.current)} is {rel} {base}: "
                f"{verdict} the tolerance of {self.tolerance:.2%} ({self.mode})")


def baseline_record(sweep: Sweep) -> dict[str, Any]:
    """The baseline file's content for a finished sweep (its best trial)."""
    metric, mode = objective_of(sweep)
    best = sweep.get("best") or {}
    if not _finite(best.get("objective")):
        raise BaselineError(f"sweep {sweep.get('id')} has no best trial with a finite {metric}")
    return {
        "sweep_id": sweep.get("id"),
        "metric": metric,
        "mode": mode,
        "objective": float(best["objective"]),
        "config": dict(best.get("config") or {}),
    }


def write_baseline(path: str | Path, sweep: Sweep) -> dict[str, Any]:
    record = baseline_record(sweep)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(p)
    return record


def parse_baseline(data: Any, source: str = "baseline") -> dict[str, Any]:
    """Check a baseline mapping: it needs a finite ``objective``; ``metric`` and ``mode`` are
    optional (mode must be min or max when given)."""
    if not isinstance(data, Mapping):
        raise BaselineError(f"{source}: expected a JSON object, got {type(data).__name__}")
    obj = data.get("objective")
    if not _finite(obj):
        raise BaselineError(f"{source}: 'objective' must be a finite number, got {obj!r}")
    mode = data.get("mode")
    if mode is not None and mode not in ("min", "max"):
        raise BaselineError(f"{source}: 'mode' must be 'min' or 'max', got {mode!r}")
    metric = data.get("metric")
    if metric is not None and not isinstance(metric, str):
        raise BaselineError(f"{source}: 'metric' must be a string, got {metric!r}")
    return dict(data)


def load_baseline(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise BaselineError(f"cannot read baseline {str(p)!r}: {err.strerror or err}") from None
    try:
        data = json.loads(text)
    except ValueError as err:
        raise BaselineError(f"baseline {str(p)!r} is not valid JSON: {err}") from None
    return parse_baseline(data, f"baseline {str(p)!r}")


def compare_baseline(baseline: Mapping[str, Any], sweep: Sweep,
                     tolerance: float = DEFAULT_TOLERANCE) -> BaselineCheck:
    """Compare the sweep's best objective with the baseline's, in the sweep's objective mode.

    Raises BaselineError when the baseline is for another metric. A sweep without a best
    objective counts as regressed.
    """
    if not (isinstance(tolerance, (int, float)) and tolerance >= 0 and math.isfinite(tolerance)):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    baseline = parse_baseline(baseline)
    metric, mode = objective_of(sweep)
    if baseline.get("metric") and baseline["metric"] != metric:
        raise BaselineError(f"the baseline is for {baseline['metric']!r} but the sweep optimises {metric!r}")
    base = float(baseline["objective"])
    best = sweep.get("best") or {}
    current = best.get("objective")
    common = dict(metric=metric, mode=mode, baseline=base, tolerance=float(tolerance),
                  baseline_sweep=baseline.get("sweep_id"))
    if not _finite(current):
        return BaselineCheck(current=None, worse_by=None, regressed=True, **common)
    current = float(current)
    worse = (current - base) if mode == "min" else (base - current)
    worse_by = worse / abs(base) if base != 0 else worse
    return BaselineCheck(current=current, worse_by=worse_by, regressed=worse_by > tolerance + _EPS, **common)


# ------------------------------------------------------------------------------------- JUnit

_XML_BAD = re.compile("\x1b\\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml_text(value: Any) -> str:
    """Text XML 1.0 can hold: ANSI colour codes and control characters removed."""
    return _XML_BAD.sub("", "" if value is None else str(value))


def _trial_out(t: Trial, metric: str) -> str:
    lines = [f"state: {t.get('state')}"]
    if t.get("objective") is not None:
        lines.append(f"{metric}: {fmt_num(t.get('objective'))}")
    if t.get("reason"):
        lines.append(f"reason: {t['reason']}")
    if t.get("stopped_at") is not None:
        lines.append(f"stopped at: {fmt_num(t['stopped_at'])}")
    lines.append("config: " + json.dumps(t.get("config") or {}, sort_keys=True, default=str))
    lines.append(f"samples: {t.get('samples') or 0}, tokens: {t.get('tokens') or 0}, "
                 f"seconds: {t.get('seconds') or 0}, attempts: {t.get('attempts') or 0}")
    if t.get("metrics_final"):
        lines.append("final metrics: " + json.dumps(t["metrics_final"], sort_keys=True, default=str))
    return "\n".join(lines)


def junit_xml(sweep: Sweep, trials: Sequence[Trial]) -> str:
    """A JUnit XML report: one <testcase> per trial.

    completed: passes; stopped: passes, the pruner's reason in <system-out>; failed and
    diverged: <failure> with the error (or reason); pending or running (a cancelled or failed
    sweep): <skipped>.
    """
    metric, mode = objective_of(sweep)
    name = str(sweep.get("name") or sweep.get("id") or "sweep")
    suite_name = f"sweepd.{name}"
    root = ET.Element("testsuites", name="sweepd")
    suite = ET.SubElement(root, "testsuite", name=suite_name)
    props = ET.SubElement(suite, "properties")
    best = sweep.get("best") or {}
    for key, value in (("sweep_id", sweep.get("id")), ("state", sweep.get("state")),
                       ("objective.metric", metric), ("objective.mode", mode),
                       ("best.trial", best.get("number")), ("best.objective", best.get("objective")),
                       ("error", sweep.get("error"))):
        if value is not None:
            ET.SubElement(props, "property", name=key, value=_xml_text(value))
    failures = skipped = 0
    total_time = 0.0
    for t in sorted(trials, key=lambda t: t.get("number", 0)):
        state = str(t.get("state"))
        seconds = float(t.get("seconds") or 0.0)
        total_time += seconds
        case = ET.SubElement(suite, "testcase", classname=suite_name,
                             name=f"trial-{int(t.get('number', 0)):03d}", time=f"{seconds:.3f}")
        if state in ("failed", "diverged"):
            failures += 1
            why = t.get("error") or t.get("reason") or f"trial {state}"
            first = _xml_text(str(why).strip().splitlines()[0] if str(why).strip() else state)
            failure = ET.SubElement(case, "failure", message=first[:500], type=state)
            failure.text = _xml_text(why)
        elif state in ("pending", "running"):
            skipped += 1
            ET.SubElement(case, "skipped",
                          message=f"not finished ({state}) when the sweep ended {sweep.get('state')}")
        ET.SubElement(case, "system-out").text = _xml_text(_trial_out(t, metric))
    attrs = {"tests": str(len(trials)), "failures": str(failures), "errors": "0",
             "skipped": str(skipped), "time": f"{total_time:.3f}"}
    suite.attrib.update(attrs)
    if sweep.get("started_at"):
        suite.set("timestamp", str(sweep["started_at"]))
    root.attrib.update(attrs)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def error_junit(message: str, name: str = "sweepd") -> str:
    """A JUnit report for a sweep that could not run at all (bad spec, token, server)."""
    root = ET.Element("testsuites", name="sweepd", tests="1", failures="0", errors="1")
    suite = ET.SubElement(root, "testsuite", name=f"sweepd.{name}", tests="1", failures="0",
                          errors="1", skipped="0", time="0")
    case = ET.SubElement(suite, "testcase", classname=f"sweepd.{name}", name="submit", time="0")
    ET.SubElement(case, "error", message=_xml_text(message)[:500], type="submit").text = _xml_text(message)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


# ---------------------------------------------------------------------------------- Markdown

_ICON = {"succeeded": "✅", "failed": "❌", "cancelled": "⚪", "queued": "⏳", "running": "⏳"}


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> list[str]:
    align = align or "-" * len(header)
    marks = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "| " + " | ".join(marks) + " |"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def markdown_summary(
    sweep: Sweep,
    trials: Sequence[Trial],
    *,
    dashboard_url: str,
    check: BaselineCheck | None = None,
    notes: Sequence[str] = (),
) -> str:
    """A GitHub-flavoured Markdown summary (fits ``$GITHUB_STEP_SUMMARY`` as is): state, best
    config and objective, the baseline comparison, the top-5 trials, the compute used and
    saved, and a link to the sweep on the dashboard (``{dashboard_url}/sweeps/{id}``)."""
    sweep_id = str(sweep.get("id"))
    name = str(sweep.get("name") or sweep_id)
    state = str(sweep.get("state"))
    metric, mode = objective_of(sweep)
    link = dashboard_link(sweep_id, dashboard_url)
    icon = _ICON.get(state, "")
    if check is not None and check.regressed and state == "succeeded":
        icon = "⚠️"
    lines = [f"## {icon} sweepd sweep `{name}` {state}".replace("  ", " "), ""]

    n = counts(sweep, trials)
    total = sum(n.values())
    planned = (sweep.get("progress") or {}).get("planned")
    by_state = ", ".join(f"{n[s]} {s}" for s in ("completed", "stopped", "failed", "diverged", "running", "pending")
                         if n.get(s))
    facts = [f"Sweep [`{sweep_id}`]({link})",
             f"{total} trial{'s' if total != 1 else ''}" + (f" of {planned} planned" if planned and planned != total else "")
             + (f" ({by_state})" if by_state else ""),
             f"objective: {metric} ({mode})"]
    duration = sweep_seconds(sweep)
    if duration is not None:
        facts.append(f"took {fmt_seconds(duration)}")
    lines += [" · ".join(facts), ""]
    if sweep.get("error"):
        lines += [f"**Error:** {_cell(sweep['error'])}", ""]
    for note in notes:
        lines += [f"> {_cell(note)}", ""]

    best = sweep.get("best") or None
    if best and _finite(best.get("objective")):
        lines += [f"### Best: trial {best.get('number')} — {metric} = **{fmt_num(best['objective'])}**", ""]
    else:
        lines += ["### Best: no trial finished with an objective", ""]
    if check is not None:
        mark = "❌ regression" if check.regressed else "✅ no regression"
        lines += [f"**Baseline:** {mark}: {_cell(check.message)}", ""]
    if best and best.get("config"):
        config = flatten(best["config"])
        lines += _table(["hyperparameter", "value"], [[k, v] for k, v in config.items()], "lr")
        lines.append("")

    ranked = ranked_trials(trials, mode)[:TOP_N]
    if ranked:
        keys: list[str] = []
        for t in ranked:
            for k in flatten(t.get("config")):
                if k not in keys:
                    keys.append(k)
        label = _short_keys(keys)
        header = ["#", "trial", metric, *[label[k] for k in keys], "samples", "time"]
        rows = []
        for rank, t in enumerate(ranked, 1):
            config = flatten(t.get("config"))
            rows.append([rank, t.get("number"), t.get("objective"), *[config.get(k, "") for k in keys],
                         t.get("samples"), fmt_seconds(t.get("seconds"))])
        lines += [f"### Top {len(ranked)} trial{'s' if len(ranked) != 1 else ''}", ""]
        lines += _table(header, rows, "rrr" + "l" * len(keys) + "rr")
        lines.append("")

    lines += ["### Compute", ""]
    ledger = sweep.get("ledger") or {}
    spent = ledger.get("spent")
    if spent:
        rows = []
        for key, title in (("spent", "used"), ("stopped_trials_would_have_spent", "saved by stopping early"),
                           ("without_pruning", "without pruning")):
            part = ledger.get(key) or {}
            rows.append([title, part.get("samples"), part.get("tokens"), fmt_seconds(part.get("seconds"))])
        lines += _table(["", "samples", "tokens", "time"], rows, "lrrr")
        frac = ledger.get("fraction_saved")
        stopped = ledger.get("trials_stopped")
        if frac is not None:
            lines += ["", f"Stopping {fmt_num(stopped or 0)} trial{'s' if stopped != 1 else ''} early saved "
                          f"**{float(frac):.1%}** of the samples a sweep without pruning would have used."]
    else:
        lines.append("No compute recorded.")
    lines += ["", f"[Open sweep `{sweep_id}` on the dashboard]({link})", ""]
    return "\n".join(lines)


def error_summary(message: str, *, spec: str | None = None) -> str:
    """The Markdown summary for a sweep that could not run at all."""
    what = f" `{spec}`" if spec else ""
    return f"## ❌ sweepd: the sweep{what} did not run\n\n{_cell(message)}\n"
