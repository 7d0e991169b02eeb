"""SIGKILL `sweepd serve` while a sweep runs, start it again: the sweep completes with exactly
num_trials trials, no duplicate metric rows, none left RUNNING."""

import os
import signal
import socket
import subprocess
import sys
import time

import httpx

from tests.e2e.conftest import REPO, SMALL, db, demo_spec, sweepd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(env, port, log):
    proc = subprocess.Popen([sys.executable, "-m", "sweepd.cli", "serve", "--port", str(port)], env=env,
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, "sweepd serve exited at start-up"
        time.sleep(0.3)
    raise AssertionError("sweepd serve did not become healthy")


def finished(env, sweep_id) -> int:
    with db(env) as conn:
        return conn.execute("SELECT COUNT(*) FROM sweepd_trials WHERE sweep_id = ? AND state IN "
                            "('completed', 'stopped')", (sweep_id,)).fetchone()[0]


def test_service_killed_mid_sweep_finishes_the_sweep_after_restart(sweep_env, tmp_path):
    env, data = sweep_env
    token = sweepd("token", "create", "crash-test", env=env, timeout=120).stdout.strip().splitlines()[-1]
    port = free_port()
    api = f"http://127.0.0.1:{port}/api/v1"
    headers = {"Authorization": f"Bearer {token}"}
    log = open(tmp_path / "serve.log", "ab")

    first = start_serve(env, port, log)
    spec = demo_spec(data, tmp_path / "demo.yaml", **SMALL).read_text()
    r = httpx.post(f"{api}/sweeps", content=spec, headers={**headers, "Content-Type": "application/yaml"},
                   timeout=60)
    assert r.status_code == 201, r.text
    sweep_id = r.json()["id"]

    deadline = time.monotonic() + 600
    while finished(env, sweep_id) < 2 and time.monotonic() < deadline:
        assert first.poll() is None
        time.sleep(0.5)
    with db(env) as conn:
        controller = conn.execute("SELECT controller FROM sweepd_sweeps WHERE id = ?", (sweep_id,)).fetchone()[0]
        done_before = dict(conn.execute("SELECT number, state FROM sweepd_trials WHERE sweep_id = ? AND state IN "
                                        "('completed', 'stopped')", (sweep_id,)).fetchall())
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    controller_pid = int(controller.split("@")[0])
    for _ in range(50):  # the controller dies with the service
        try:
            os.kill(controller_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the controller outlived the killed service")

    second = start_serve(env, port, log)
    try:
        state = None
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            state = httpx.get(f"{api}/sweeps/{sweep_id}", headers=headers, timeout=5).json()["state"]
            if state in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(1)
        assert state == "succeeded", (tmp_path / "serve.log").read_text()[-3000:]
        trials = httpx.get(f"{api}/sweeps/{sweep_id}/trials", headers=headers, timeout=5).json()["items"]
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=60)

    assert sorted(t["number"] for t in trials) == list(range(1, SMALL["search"]["num_trials"] + 1))
    assert not [t for t in trials if t["state"] in ("running", "pending")]
    by_number = {t["number"]: t for t in trials}
    for number, state in done_before.items():  # finished before the crash: not rerun
        assert (by_number[number]["state"], by_number[number]["attempts"]) == (state, 1)
    with db(env) as conn:
        for trial_id, n, lo, hi in conn.execute(
                "SELECT trial_id, COUNT(*), MIN(step), MAX(step) FROM sweepd_metric_points GROUP BY trial_id"):
            assert (n, lo) == (hi, 1), (trial_id, n, lo, hi)
        events = [m for (m,) in conn.execute("SELECT message FROM sweepd_events WHERE sweep_id = ? AND kind = 'state'",
                                             (sweep_id,))]
    assert any("resuming" in m for m in events), events
