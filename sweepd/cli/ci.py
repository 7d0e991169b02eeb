"""What a CI job gets from a finished sweep besides the Markdown summary (sweepd/report.py): a
JUnit report and the comparison with a baseline. Pure functions of the API's JSON (the sweep
from ``GET /api/v1/sweeps/{id}`` and the trials from ``GET /api/v1/sweeps/{id}/trials``), so
they are tested without a server; ``sweepd submit`` and ``sweepd status`` (cli/remote.py) write
their output.

Baseline file (``--write-baseline`` writes it, ``--baseline`` reads it)::

    {"sweep_id": "3f2a...", "metric": "eval_loss", "mode": "min", "objective": 1.2345,
     "config": {"learning_rate": 0.0003, ...}}

A regression is a best objective worse than the baseline's by more than ``tolerance``,
relative to the baseline (``|baseline|``; an absolute difference when the baseline is 0), in the
direction of the sweep's objective mode. Exactly at the tolerance is not a regression.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweepd.formatting import fmt_num, is_finite_number
from sweepd.protocol import FINISHED_TRIAL_STATES, TrialState
from sweepd.report import Sweep, Trial, objective_of

DEFAULT_TOLERANCE = 0.02
_EPS = 1e-9  # float slack at the tolerance edge: 2.04 vs 2.0 at 2% is not a regression
FAILED_TRIAL_STATES = (TrialState.failed.value, TrialState.diverged.value, TrialState.oom.value)  # a JUnit <failure>


class BaselineError(ValueError):
    """A baseline file that cannot be used (unreadable, malformed, another metric)."""


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
    if not is_finite_number(best.get("objective")):
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
    if not is_finite_number(obj):
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
    if not (is_finite_number(tolerance) and tolerance >= 0):
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
    if not is_finite_number(current):
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

    completed: passes; stopped: passes, the pruner's reason in <system-out>; failed, diverged
    and oom: <failure> with the error (or reason); pending or running (a cancelled or failed
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
        if state in FAILED_TRIAL_STATES:
            failures += 1
            why = t.get("error") or t.get("reason") or f"trial {state}"
            first = _xml_text(str(why).strip().splitlines()[0] if str(why).strip() else state)
            failure = ET.SubElement(case, "failure", message=first[:500], type=state)
            failure.text = _xml_text(why)
        elif state not in FINISHED_TRIAL_STATES:
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
