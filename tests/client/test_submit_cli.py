"""`sweepd submit --wait` against the real API server: every exit code, with its one-line
reason, and the JUnit, Markdown and baseline files; `status`, `cancel`, `token create`; the
client retrying until a late server comes up.

The server is the real FastAPI app under uvicorn (tests/client/conftest.py); the fake
controller moves each sweep through a script chosen by the spec's name.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET

import pytest

from sweepd.client import SweepdClient

from .conftest import REPO, Script, Trial, ThreadedServer, free_port, sweepd

GOOD = [Trial("completed", 1.40), Trial("completed", 1.20),
        Trial("stopped", reason="grad_norm 3.1 is above the rung's cut-off 2.0 at 16 samples"),
        Trial("failed", error="worker crashed: CUDA out of memory"), Trial("completed", 1.30)]


def submit(server, tmp_path, name, *args, token=None):
    spec = tmp_path / f"{name}.yaml"
    if not spec.exists():
        spec.write_text(server.spec(name))
    return sweepd(server, "submit", str(spec), "--server", server.url, "--token", token or server.token,
                  "--poll", "0.1", *args)


@pytest.fixture(autouse=True)
def _no_controller_errors(controller):
    yield
    assert not controller.errors, controller.errors


def test_exit_0_succeeded_with_junit_summary_and_new_baseline(server, controller, tmp_path):
    controller.scripts["ok"] = Script(GOOD)
    junit, summary, base = tmp_path / "out" / "junit.xml", tmp_path / "out" / "summary.md", tmp_path / "b.json"
    run = submit(server, tmp_path, "ok", "--wait", "--baseline", str(base), "--junit", str(junit),
                 "--summary", str(summary), "--write-baseline", str(base),
                 "--dashboard-url", "https://dash.example/")
    assert run.code == 0, run.stderr
    sweep_id = run.stdout.strip()
    assert len(sweep_id) == 12
    assert "no baseline at" in run.stderr  # the first night: nothing to compare with
    assert "trials finished" in run.stderr  # plain progress lines (stderr is not a terminal)
    assert run.reason == f"sweep {sweep_id} (ok) succeeded: best trial 1 eval_loss=1.2 (min)"

    suite = ET.parse(junit).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("5", "1", "0")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [f"trial-{i:03d}" for i in range(5)]
    assert cases[3].find("failure").get("message") == "worker crashed: CUDA out of memory"
    assert cases[2].find("failure") is None and "cut-off 2.0" in cases[2].find("system-out").text

    md = summary.read_text()
    assert md.startswith("## ✅ sweepd sweep `ok` succeeded")
    assert f"https://dash.example/sweeps/{sweep_id}" in md
    assert "### Best: trial 1 — eval_loss = **1.2**" in md and "### Top 3 trials" in md
    assert "| used | 224 |" in md and "saved by stopping early" in md
    assert "No baseline at" in md

    record = json.loads(base.read_text())
    assert record["sweep_id"] == sweep_id and record["objective"] == 1.2
    assert record["metric"] == "eval_loss" and record["mode"] == "min"
    assert record["config"] == {"learning_rate": 0.0002, "effective_batch_size": 4}

    # the next night, against that baseline: equal, so within the tolerance
    run = submit(server, tmp_path, "ok", "--baseline", str(base))
    assert run.code == 0, run.stderr
    assert "equal to baseline 1.2" in run.reason and "within the tolerance of 2.00%" in run.reason


def test_exit_0_without_wait_prints_the_id_and_status_shows_it(server, controller, tmp_path):
    controller.scripts["nowait"] = Script(GOOD)
    run = submit(server, tmp_path, "nowait")
    assert run.code == 0 and run.reason.startswith(f"submitted sweep {run.stdout.strip()} (nowait)")
    sweep_id = run.stdout.strip()
    with SweepdClient(server.url, server.token) as c:
        c.wait(sweep_id, poll=0.1, timeout=30)
    status = sweepd(server, "status", sweep_id, "--server", server.url, "--token", server.token)
    assert status.code == 0, status.stderr
    assert f"sweep {sweep_id} (nowait): succeeded" in status.stdout and "best: trial 1" in status.stdout
    as_json = sweepd(server, "status", sweep_id, "--json", "--server", server.url, "--token", server.token,
                     "--write-baseline", str(tmp_path / "accepted.json"))
    assert json.loads(as_json.stdout)["state"] == "succeeded"
    assert json.loads((tmp_path / "accepted.json").read_text())["objective"] == 1.2


def test_exit_1_failed(server, controller, tmp_path):
    controller.scripts["boom"] = Script([Trial("failed", error="Traceback ...\nRuntimeError: data loader died"),
                                         Trial("diverged", reason="loss became NaN at step 3")],
                                        final="failed", error="no trial completed with an objective")
    junit, summary, base = tmp_path / "junit.xml", tmp_path / "summary.md", tmp_path / "b.json"
    run = submit(server, tmp_path, "boom", "--wait", "--junit", str(junit), "--summary", str(summary),
                 "--write-baseline", str(base))
    assert run.code == 1, run.stderr
    assert run.reason == f"sweep {run.stdout.strip()} (boom) failed: no trial completed with an objective"
    suite = ET.parse(junit).getroot().find("testsuite")
    failures = [c.find("failure") for c in suite.findall("testcase")]
    assert [(f.get("type"), f.get("message")) for f in failures] == [
        ("failed", "Traceback ..."), ("diverged", "loss became NaN at step 3")]
    assert "RuntimeError: data loader died" in failures[0].text
    md = summary.read_text()
    assert md.startswith("## ❌") and "no trial completed with an objective" in md
    assert not base.exists() and "not written" in run.stderr


def test_exit_1_when_the_data_preflight_finds_a_bad_line(server, controller, tmp_path):
    bad = server.home / "data" / "bad-train.jsonl"
    bad.write_text(server.train.read_text().splitlines()[0] + "\n{oops\n")
    spec = tmp_path / "baddata.yaml"
    spec.write_text(server.spec("baddata", data={"train": [{"path": str(bad)}], "eval": [{"path": str(server.eval)}]}))
    summary = tmp_path / "summary.md"
    run = sweepd(server, "submit", str(spec), "--server", server.url, "--token", server.token, "--wait",
                 "--poll", "0.1", "--summary", str(summary))
    assert run.code == 1, run.stderr
    sweep_id = run.stdout.strip()  # the sweep exists: the preflight ran after POST answered
    assert run.reason.startswith(f"sweep {sweep_id} (baddata) failed: {bad}:2: not valid JSON"), run.stderr
    assert "Traceback" not in run.stderr and "error: " not in run.stderr
    assert f"{bad}:2: not valid JSON" in summary.read_text()
    status = sweepd(server, "status", sweep_id, "--server", server.url, "--token", server.token)
    assert status.code == 0 and f"sweep {sweep_id} (baddata): failed" in status.stdout
    assert f"error: {bad}:2: not valid JSON" in status.stdout
    with SweepdClient(server.url, server.token) as c:
        assert c.trials(sweep_id) == []


def test_status_says_validating_data(server, tmp_path):
    from sweepd.store import repo
    from sweepd.store.db import session_scope

    with session_scope(server.engine) as s:  # as POST /sweeps leaves it while the preflight runs
        sweep_id = repo.create_sweep(s, name="checking", spec={}, state="validating").id
    run = sweepd(server, "status", sweep_id, "--server", server.url, "--token", server.token)
    assert run.code == 0, run.stderr
    assert run.stdout.splitlines()[0] == f"sweep {sweep_id} (checking): validating data"


def test_exit_1_cancelled_and_sweepd_cancel(server, controller, tmp_path):
    controller.scripts["stopme"] = Script([Trial("completed", 1.0)] * 3, wait_cancel=True)
    spec = tmp_path / "stopme.yaml"
    spec.write_text(server.spec("stopme"))
    junit = tmp_path / "junit.xml"
    proc = subprocess.Popen([sys.executable, "-m", "sweepd.cli", "submit", str(spec), "--server", server.url,
                             "--token", server.token, "--wait", "--poll", "0.1", "--junit", str(junit)],
                            cwd=REPO, env=server.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        sweep_id = proc.stdout.readline().strip()
        with SweepdClient(server.url, server.token) as c:
            deadline = time.monotonic() + 30
            while c.get_sweep(sweep_id)["state"] != "running":
                assert time.monotonic() < deadline
                time.sleep(0.05)
        cancel = sweepd(server, "cancel", sweep_id, "--server", server.url, "--token", server.token)
        assert cancel.code == 0 and cancel.reason == f"cancel requested for sweep {sweep_id}"
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err
    assert err.strip().splitlines()[-1] == f"sweep {sweep_id} (stopme) was cancelled"
    suite = ET.parse(junit).getroot().find("testsuite")
    # the sweep turns `cancelled` at once; its trials wind down after (the client may see either)
    assert suite.get("failures") == "0" and int(suite.get("tests")) >= 1
    # a finished sweep cannot be cancelled again
    again = sweepd(server, "cancel", sweep_id, "--server", server.url, "--token", server.token)
    assert again.code == 1 and "already cancelled" in again.reason


def test_exit_2_regressed_against_the_baseline(server, controller, tmp_path):
    controller.scripts["worse"] = Script([Trial("completed", 1.50), Trial("completed", 1.60)])
    base = tmp_path / "baseline.json"
    base.write_text(json.dumps({"sweep_id": "lastnight", "metric": "eval_loss", "mode": "min",
                                "objective": 1.20, "config": {}}))
    summary, junit = tmp_path / "summary.md", tmp_path / "junit.xml"
    run = submit(server, tmp_path, "worse", "--wait", "--baseline", str(base), "--summary", str(summary),
                 "--junit", str(junit), "--write-baseline", str(base))
    assert run.code == 2, run.stderr
    sweep_id = run.stdout.strip()
    assert run.reason == (f"sweep {sweep_id} (worse) regressed: best eval_loss=1.5 is 25.00% worse than "
                          "baseline 1.2 (sweep lastnight): regressed beyond the tolerance of 2.00% (min)")
    assert json.loads(base.read_text())["objective"] == 1.20  # the old baseline is kept
    md = summary.read_text()
    assert md.startswith("## ⚠️") and "❌ regression" in md
    assert ET.parse(junit).getroot().find("testsuite").get("failures") == "0"
    # the same result with a wider tolerance passes
    run = submit(server, tmp_path, "worse", "--baseline", str(base), "--tolerance", "0.3")
    assert run.code == 0, run.stderr
    assert "25.00% worse" in run.reason and "within the tolerance of 30.00%" in run.reason


def test_exit_3_invalid_spec(server, controller, tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text(server.spec("bad", num_trials=0, colour="red"))
    summary, junit = tmp_path / "summary.md", tmp_path / "junit.xml"
    run = sweepd(server, "submit", str(spec), "--server", server.url, "--token", server.token, "--wait",
                 "--summary", str(summary), "--junit", str(junit))
    assert run.code == 3, run.stderr
    assert run.stderr.count("\n") == 1 and run.stdout == ""  # one line, and no sweep
    assert run.reason.startswith(f"error: {spec}: invalid spec (")
    assert "search.num_trials" in run.reason and "colour" in run.reason
    assert summary.read_text().startswith("## ❌ sweepd: the sweep") and "search.num_trials" in summary.read_text()
    assert ET.parse(junit).getroot().find("testsuite/testcase/error") is not None
    with SweepdClient(server.url, server.token) as c:
        assert all(s["name"] != "bad" for s in c.list_sweeps(limit=200)["items"])
    # not a file at all: no request is made
    run = sweepd(server, "submit", str(tmp_path / "missing.yaml"), "--server", server.url, "--wait")
    assert run.code == 3 and "cannot read spec" in run.reason


@pytest.mark.parametrize("token", ["swd_not-a-real-token", ""])
def test_exit_3_bad_or_missing_token(server, controller, tmp_path, token):
    spec = tmp_path / "tok.yaml"
    spec.write_text(server.spec("tok"))
    run = sweepd(server, "submit", str(spec), "--server", server.url, "--token", token, "--wait")
    assert run.code == 3, run.stderr
    assert run.stderr.count("\n") == 1 and run.reason.startswith("error: ")
    assert "(401 from" in run.reason
    assert ("invalid API token" in run.reason) if token else ("needs an API token" in run.reason)


def test_exit_3_unreachable_server(server, tmp_path):
    spec = tmp_path / "far.yaml"
    spec.write_text(server.spec("far"))
    port = free_port()
    t0 = time.monotonic()
    run = sweepd(server, "submit", str(spec), "--server", f"http://127.0.0.1:{port}", "--token", server.token,
                 "--wait", "--retries", "2", "--backoff", "0.01")
    assert run.code == 3, run.stderr
    assert time.monotonic() - t0 < 20
    assert run.reason.startswith(f"error: {spec}: cannot reach sweepd at http://127.0.0.1:{port} (")
    assert "3 attempts" in run.reason and run.stderr.count("\n") == 1


def test_exit_3_unusable_baseline(server, tmp_path):
    base = tmp_path / "b.json"
    base.write_text('{"metric": "accuracy", "mode": "max", "objective": 0.8}')
    run = submit(server, tmp_path, "other-metric", "--baseline", str(base))
    assert run.code == 3 and "is for 'accuracy' but the spec optimises 'eval_loss'" in run.reason
    assert run.stdout == ""  # refused before submitting
    base.write_text("{oops")
    run = submit(server, tmp_path, "other-metric", "--baseline", str(base))
    assert run.code == 3 and "not valid JSON" in run.reason


def test_token_create_then_use_it(server, controller, tmp_path):
    run = sweepd(server, "token", "create", "nightly-ci")
    assert run.code == 0, run.stderr
    token = run.stdout.strip()
    assert token.startswith("swd_") and "shown only this once" in run.reason
    again = sweepd(server, "token", "create", "nightly-ci")
    assert again.code == 1 and "already exists" in again.reason and again.stdout == ""
    controller.scripts["with-new-token"] = Script(GOOD[:2])
    run = submit(server, tmp_path, "with-new-token", "--wait", token=token)
    assert run.code == 0, run.stderr


def test_client_retries_until_a_late_server_is_up(server, tmp_path):
    from api.app import create_app
    from sweepd.settings import get_settings

    # a sweep that nothing runs (no script has its name), so the late server has one to list
    spec = tmp_path / "late.yaml"
    spec.write_text(server.spec("late-server-listing"))
    with SweepdClient(server.url, server.token) as c:
        queued = c.submit(spec)
        first = c.list_sweeps(limit=1)
    # validating while a cold data preflight runs (queued at once when it is cached)
    assert queued["state"] in ("validating", "queued") and first["items"][0]["id"] == queued["id"]

    port = free_port()
    late = ThreadedServer(create_app(get_settings()), port=port)
    timer = threading.Timer(1.0, late.start)
    timer.start()
    try:
        with SweepdClient(late.url, server.token, retries=10, backoff=0.1, timeout=5) as c:
            t0 = time.monotonic()
            health = c.health()
            waited = time.monotonic() - t0
            assert waited >= 0.5  # it was not up at first
            assert health["status"] == "ok"
            # the late server reads the same database: the same sweeps, newest (ours) first
            page = c.list_sweeps(limit=1)
            assert page["total"] == first["total"] >= 1
            assert [s["id"] for s in page["items"]] == [queued["id"]]
    finally:
        timer.join()
        late.stop()
