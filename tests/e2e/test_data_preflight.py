"""Issue 14's scenario: the built-in data with data.max_seq_len 256, where line 39 tokenises to
290 tokens. With `overlong: error` the sweep is refused before any trial; with the default
(`drop`) it runs and says how many samples it dropped. Through `sweepd serve`, a server killed
during a sweep's data preflight validates it again when it starts."""

import json
import sqlite3

import yaml

from tests.e2e.conftest import db, demo_spec, sweepd

SMALL = {"search": {"num_trials": 2, "max_concurrent": 2}, "budget": {"max_samples": 64},
         "pruner": {"type": "none"}, "fixed": {"eval": {"max_items": 8, "max_new_tokens": 4}}}


def _spec(data, path, **data_opts):
    spec = demo_spec(data, path, **SMALL)
    doc = yaml.safe_load(spec.read_text())
    doc["data"].update({"max_seq_len": 256, **data_opts})
    spec.write_text(yaml.safe_dump(doc))
    return spec


def _trial_rows(env) -> int:
    try:
        with db(env) as conn:
            return conn.execute("SELECT COUNT(*) FROM sweepd_trials").fetchone()[0]
    except sqlite3.OperationalError:  # no database, or no tables: nothing was ever started
        return 0


def test_overlong_error_is_refused_before_any_trial(sweep_env, tmp_path):
    env, data = sweep_env
    spec = _spec(data, tmp_path / "error.yaml", overlong="error")
    proc = sweepd("run", str(spec), "--out", str(tmp_path / "result.json"), env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"{data / 'train.jsonl'}:39: over-long sample: 290 tokens > data.max_seq_len=256" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "result.json").exists()
    assert _trial_rows(env) == 0

    check = sweepd("validate", str(spec), env=env, timeout=120)
    assert check.returncode == 2
    assert f"{data / 'train.jsonl'}:39: over-long sample" in check.stderr


def test_default_policy_drops_over_long_samples_and_says_so(sweep_env, tmp_path):
    env, data = sweep_env
    spec = _spec(data, tmp_path / "drop.yaml")
    proc = sweepd("run", str(spec), "--out", str(tmp_path / "result.json"), env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["state"] == "succeeded"
    assert all(t["state"] == "completed" for t in result["trials"]) and len(result["trials"]) == 2
    totals = result["data_preflight"]["totals"]
    assert totals["dropped_overlong"] > 0 and totals["truncated"] == 0
    assert f"{totals['dropped_overlong']:,} over-long dropped" in proc.stderr  # the summary line
    with db(env) as conn:
        [(message, payload)] = conn.execute("SELECT message, payload FROM sweepd_events WHERE kind = 'data'").fetchall()
    assert f"{totals['dropped_overlong']:,} over-long dropped" in message
    assert json.loads(payload)["totals"] == totals


def test_serve_killed_mid_preflight_validates_the_sweep_again_after_restart(sweep_env, tmp_path):
    """POST /sweeps answers `validating` at once on a large file; SIGKILL the server during the
    preflight, start it again: the sweep is validated again, then queued and started."""
    import os
    import signal
    import time

    import httpx

    from tests.e2e.test_service_crash import free_port, start_serve

    env, data = sweep_env
    lines = (data / "train.jsonl").read_text().splitlines(keepends=True)
    big = data / "big.jsonl"
    big.write_text("".join(lines[i % len(lines)] for i in range(40_000)))
    spec = demo_spec(data, tmp_path / "big.yaml", **SMALL, data={"train": [{"path": str(big)}]}).read_text()
    token = sweepd("token", "create", "preflight-crash", env=env, timeout=120).stdout.strip().splitlines()[-1]
    port = free_port()
    api, headers = f"http://127.0.0.1:{port}/api/v1", {"Authorization": f"Bearer {token}"}
    log = open(tmp_path / "serve.log", "ab")

    first = start_serve(env, port, log)
    r = httpx.post(f"{api}/sweeps", content=spec, headers={**headers, "Content-Type": "application/yaml"}, timeout=60)
    assert r.status_code == 201 and r.json()["state"] == "validating", r.text
    assert r.elapsed.total_seconds() < 30  # the preflight of 40,000 samples is not in the request
    sweep_id = r.json()["id"]
    time.sleep(2)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    with db(env) as conn:
        assert conn.execute("SELECT state FROM sweepd_sweeps WHERE id = ?", (sweep_id,)).fetchone()[0] == "validating"
    assert _trial_rows(env) == 0

    second = start_serve(env, port, log)
    try:
        deadline = time.monotonic() + 600
        while (state := httpx.get(f"{api}/sweeps/{sweep_id}", headers=headers, timeout=10).json()["state"]) == "validating":
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(1)
        assert state in ("queued", "running"), state
        messages = [e["message"] for e in httpx.get(f"{api}/sweeps/{sweep_id}/events", headers=headers,
                                                    timeout=10).json()["items"]]
        assert "server restarted during the data preflight; validating again" in messages
        assert any(m.startswith("data preflight: ") and "train samples" in m for m in messages), messages
        assert httpx.post(f"{api}/sweeps/{sweep_id}/cancel", headers=headers, timeout=10).status_code == 202
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=60)
        log.close()
