"""examples/ci/nightly-workflow.yml: a GitHub Actions workflow that runs the nightly sweep."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer.main
import yaml

from sweepd.cli import app

WORKFLOW = Path(__file__).resolve().parents[2] / "examples" / "ci" / "nightly-workflow.yml"
COMMAND = ("sweepd submit examples/nightly.yaml --server ${{ secrets.SWEEPD_SERVER }} "
           "--token ${{ secrets.SWEEPD_TOKEN }} --wait --baseline baseline.json")


def load():
    doc = yaml.safe_load(WORKFLOW.read_text())
    triggers = doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on` key as true
    steps = doc["jobs"]["sweep"]["steps"]
    return doc, triggers, steps


def test_runs_nightly_on_a_schedule():
    _, triggers, _ = load()
    (cron,) = [entry["cron"] for entry in triggers["schedule"]]
    assert len(cron.split()) == 5 and cron.split()[2:] == ["*", "*", "*"]


def test_submits_and_waits_with_baseline_junit_and_summary():
    _, _, steps = load()
    runs = [" ".join(str(s.get("run", "")).split()) for s in steps]
    (cmd,) = [r for r in runs if r.startswith("sweepd submit")]
    assert cmd.startswith(COMMAND)
    for flag in ("--junit junit.xml", "--summary summary.md", "--write-baseline baseline.json"):
        assert flag in cmd
    # every option in it is one `sweepd submit` has
    command = typer.main.get_command(app).commands["submit"]
    known = {opt for p in command.params for opt in p.opts}
    used = {w for w in shlex.split(cmd.replace("${{", "").replace("}}", "")) if w.startswith("--")}
    assert used <= known, used - known
    assert 'cat summary.md >> "$GITHUB_STEP_SUMMARY"' in runs


def test_publishes_junit_and_keeps_the_baseline():
    _, _, steps = load()
    uses = {s.get("uses", "").split("@")[0]: s for s in steps if s.get("uses")}
    assert "junit.xml" in uses["actions/upload-artifact"]["with"]["path"]
    assert uses["dorny/test-reporter"]["with"]["path"] == "junit.xml"
    assert uses["actions/cache/restore"]["with"]["path"] == "baseline.json"
    save = uses["actions/cache/save"]
    assert save["with"]["path"] == "baseline.json" and save["if"] == "success()"
    by_name = {s.get("name"): s for s in steps}
    for name in ("Publish the summary", "Upload the reports", "Publish the JUnit report"):
        assert by_name[name]["if"].startswith("always()"), name  # also when the sweep failed
