"""What CI gets from a sweep, from API-shaped JSON: the Markdown summary (sweepd.report), the JUnit
report and the baseline comparison (sweepd.cli.ci)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from sweepd import report
from sweepd.cli import ci as r


def trial(number, state, objective=None, **kw):
    base = {"id": f"abc-{number:04d}", "sweep_id": "abc", "number": number, "state": state,
            "config": {"learning_rate": 1e-4 * (number + 1), "effective_batch_size": 8 * (number + 1)},
            "objective": objective, "metrics_final": None, "stopped_at": None, "reason": None,
            "error": None, "attempts": 1, "samples": 1000, "tokens": 50000, "seconds": 12.5,
            "started_at": "2025-01-01T00:00:00Z", "finished_at": "2025-01-01T00:00:12Z"}
    base.update(kw)
    return base


TRIALS = [
    trial(0, "completed", 1.50),
    trial(1, "completed", 1.20),
    trial(2, "stopped", None, stopped_at=256.0, reason="grad_norm 3.1 above the rung's cut-off 2.0"),
    trial(3, "failed", None, error="CUDA out of memory\nTraceback ...\x1b[31m red \x1b[0m"),
    trial(4, "diverged", None, reason="loss became NaN at step 12"),
    trial(5, "completed", 1.35),
    trial(6, "completed", 1.90),
    trial(7, "completed", 1.10, config={"learning_rate": 3e-4, "effective_batch_size": 32}),
    trial(8, "completed", 1.60),
]

LEDGER = {"spent": {"samples": 9000, "tokens": 450000, "seconds": 112.5},
          "stopped_trials_would_have_spent": {"samples": 1744, "tokens": 87200, "seconds": 21.8},
          "without_pruning": {"samples": 10744, "tokens": 537200, "seconds": 134.3},
          "fraction_saved": 0.1623, "trials_stopped": 1}


def sweep(state="succeeded", mode="min", best=TRIALS[7], **kw):
    s = {"id": "abc", "name": "nightly", "state": state, "created_at": "2025-01-01T00:00:00Z",
         "started_at": "2025-01-01T00:00:01Z", "finished_at": "2025-01-01T00:12:04Z", "error": None,
         "objective": {"metric": "eval_loss", "mode": mode},
         "progress": {"planned": 9, "pending": 0, "running": 0, "completed": 6, "stopped": 1, "failed": 1,
                      "diverged": 1, "finished": 9},
         "best": None if best is None else {"trial_id": best["id"], "number": best["number"],
                                            "config": best["config"], "objective": best["objective"]},
         "ledger": LEDGER}
    s.update(kw)
    return s


# ------------------------------------------------------------------------------------ JUnit


def test_junit_one_testcase_per_trial_with_state_semantics():
    root = ET.fromstring(r.junit_xml(sweep(), TRIALS))
    assert root.tag == "testsuites"
    suite = root.find("testsuite")
    assert suite.get("name") == "sweepd.nightly"
    assert suite.get("tests") == "9" and suite.get("failures") == "2" and suite.get("skipped") == "0"
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert list(cases) == [f"trial-{i:03d}" for i in range(9)]
    # completed: passes
    assert cases["trial-000"].find("failure") is None and cases["trial-000"].find("skipped") is None
    assert "eval_loss: 1.5" in cases["trial-000"].find("system-out").text
    # stopped: passes, with its reason in system-out
    stopped = cases["trial-002"]
    assert stopped.find("failure") is None and stopped.find("skipped") is None
    assert "grad_norm 3.1 above the rung's cut-off 2.0" in stopped.find("system-out").text
    # failed: a failure with the error (control characters stripped), first line as message
    failure = cases["trial-003"].find("failure")
    assert failure.get("type") == "failed" and failure.get("message") == "CUDA out of memory"
    assert "Traceback ... red " in failure.text and "\x1b" not in failure.text and "[31m" not in failure.text
    # diverged: a failure with the reason
    div = cases["trial-004"].find("failure")
    assert div.get("type") == "diverged" and div.get("message") == "loss became NaN at step 12"
    assert float(cases["trial-001"].get("time")) == pytest.approx(12.5)
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["sweep_id"] == "abc" and props["best.trial"] == "7" and props["objective.metric"] == "eval_loss"


def test_junit_unfinished_trials_of_a_cancelled_sweep_are_skipped():
    trials = [trial(0, "completed", 1.0), trial(1, "running"), trial(2, "pending")]
    suite = ET.fromstring(r.junit_xml(sweep("cancelled", best=None), trials)).find("testsuite")
    assert suite.get("skipped") == "2" and suite.get("failures") == "0"
    skipped = [c for c in suite.findall("testcase") if c.find("skipped") is not None]
    assert [c.get("name") for c in skipped] == ["trial-001", "trial-002"]
    assert "cancelled" in skipped[0].find("skipped").get("message")


def test_junit_for_a_sweep_that_did_not_run():
    root = ET.fromstring(r.error_junit("invalid spec (1 problem): search.num_trials: must be >= 1"))
    case = root.find("testsuite/testcase")
    assert case.get("name") == "submit" and "num_trials" in case.find("error").get("message")


# ---------------------------------------------------------------------------------- Markdown


def test_markdown_summary_has_best_top5_compute_and_link():
    md = report.markdown_summary(sweep(), TRIALS, dashboard_url="https://sweepd.example.com/")
    assert md.startswith("## ✅ sweepd sweep `nightly` succeeded")
    assert "https://sweepd.example.com/sweeps/abc" in md and "//sweeps" not in md
    assert "### Best: trial 7 — eval_loss = **1.1**" in md
    assert "| learning_rate | 0.0003 |" in md and "| effective_batch_size | 32 |" in md
    # top 5 by eval_loss ascending: 7, 1, 5, 0, 8 (6 is sixth)
    top = md.split("### Top 5 trials")[1].split("###")[0]
    rows = [line for line in top.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split("|")[2].strip() for row in rows] == ["7", "1", "5", "0", "8"]
    assert "| 1.9 |" not in top
    # compute used and saved, from the ledger
    assert "| used | 9,000 | 450,000 |" in md
    assert "| saved by stopping early | 1,744 | 87,200 |" in md
    assert "**16.2%**" in md
    assert "6 completed, 1 stopped, 1 failed, 1 diverged" in md
    assert "took 12m 03s" in md
    # fits a job summary as is: plain GFM, no HTML, small
    assert "<" not in md and len(md.encode()) < 4096


def test_markdown_summary_max_mode_ranks_descending():
    md = report.markdown_summary(sweep(mode="max", best=TRIALS[6]), TRIALS, dashboard_url="http://h")
    top = md.split("### Top 5 trials")[1]
    rows = [line for line in top.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split("|")[2].strip() for row in rows] == ["6", "8", "0", "5", "1"]


def test_markdown_summary_failed_sweep_and_baseline_regression():
    md = report.markdown_summary(sweep("failed", best=None, error="no trial | completed", ledger={}), TRIALS[2:5],
                            dashboard_url="http://h")
    assert md.startswith("## ❌") and "**Error:** no trial \\| completed" in md
    assert "no trial finished with an objective" in md and "No compute recorded." in md
    check = r.compare_baseline({"metric": "eval_loss", "objective": 1.0}, sweep(), 0.02)
    md = report.markdown_summary(sweep(), TRIALS, dashboard_url="http://h", check=check, notes=["a note"])
    assert md.startswith("## ⚠️") and "❌ regression" in md and "10.00% worse" in md and "> a note" in md


# ---------------------------------------------------------------------------------- baseline


@pytest.mark.parametrize("mode,base,current,regressed", [
    ("min", 1.00, 1.05, True),     # loss up 5 %
    ("min", 1.00, 1.01, False),    # within 2 %
    ("min", 1.00, 0.80, False),    # better
    ("max", 0.50, 0.45, True),     # accuracy down 10 %
    ("max", 0.50, 0.495, False),   # down 1 %
    ("max", 0.50, 0.60, False),    # better
    ("min", -2.0, -1.9, True),     # negative objective: relative to |baseline|
    ("min", 0.0, 0.03, True),      # baseline 0: absolute difference
    ("min", 0.0, 0.01, False),
])
def test_baseline_regression_both_modes(mode, base, current, regressed):
    s = sweep(mode=mode, best={**TRIALS[7], "objective": current})
    check = r.compare_baseline({"metric": "eval_loss", "mode": mode, "objective": base}, s, 0.02)
    assert check.regressed is regressed
    assert check.mode == mode
    assert ("regressed beyond" in check.message) is regressed


@pytest.mark.parametrize("mode,base,at_edge,beyond", [
    ("min", 2.0, 2.04, 2.0401),
    ("min", 1.2345, 1.2345 * 1.02, 1.2345 * 1.0201),
    ("max", 2.0, 1.96, 1.9599),
    ("max", 0.7, 0.7 * 0.98, 0.7 * 0.9799),
])
def test_baseline_tolerance_edge_is_not_a_regression(mode, base, at_edge, beyond):
    b = {"metric": "eval_loss", "objective": base}
    assert not r.compare_baseline(b, sweep(mode=mode, best={**TRIALS[7], "objective": at_edge}), 0.02).regressed
    assert r.compare_baseline(b, sweep(mode=mode, best={**TRIALS[7], "objective": beyond}), 0.02).regressed


def test_baseline_zero_tolerance_and_direction_from_the_sweep():
    b = {"metric": "eval_loss", "mode": "max", "objective": 1.0}  # the sweep's mode wins
    assert r.compare_baseline(b, sweep(mode="min", best={**TRIALS[7], "objective": 1.0}), 0.0).regressed is False
    assert r.compare_baseline(b, sweep(mode="min", best={**TRIALS[7], "objective": 1.0001}), 0.0).regressed
    with pytest.raises(ValueError, match="tolerance"):
        r.compare_baseline(b, sweep(), -0.1)


def test_baseline_without_best_regresses_and_other_metric_is_an_error():
    check = r.compare_baseline({"objective": 1.0}, sweep(best=None))
    assert check.regressed and "no best eval_loss" in check.message
    with pytest.raises(r.BaselineError, match="'accuracy' but the sweep optimises 'eval_loss'"):
        r.compare_baseline({"metric": "accuracy", "objective": 1.0}, sweep())


def test_write_and_load_baseline_roundtrip(tmp_path):
    path = tmp_path / "ci" / "baseline.json"
    record = r.write_baseline(path, sweep())
    assert record == {"sweep_id": "abc", "metric": "eval_loss", "mode": "min", "objective": 1.1,
                      "config": {"learning_rate": 3e-4, "effective_batch_size": 32}}
    assert json.loads(path.read_text()) == record == r.load_baseline(path)
    assert not r.compare_baseline(record, sweep()).regressed
    with pytest.raises(r.BaselineError, match="no best trial"):
        r.write_baseline(path, sweep(best=None))


@pytest.mark.parametrize("text,match", [
    ("not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"metric": "eval_loss"}', "'objective' must be a finite number"),
    ('{"objective": NaN}', "'objective' must be a finite number"),
    ('{"objective": 1, "mode": "up"}', "'mode' must be 'min' or 'max'"),
])
def test_bad_baseline_files(tmp_path, text, match):
    path = tmp_path / "b.json"
    path.write_text(text)
    with pytest.raises(r.BaselineError, match=match):
        r.load_baseline(path)
    with pytest.raises(r.BaselineError, match="cannot read"):
        r.load_baseline(tmp_path / "missing.json")
