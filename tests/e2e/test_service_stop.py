"""`sweepd serve` stopped cleanly (SIGTERM) while a sweep's trials run: every process it started
(drivers, the local Ray head, Ray's agents, the trial workers) is gone with it, and the sweep is
left RUNNING for the next start to resume.

The supervisor's children die with the thread that started them (PR_SET_PDEATHSIG); when that
thread ended before it stopped them, `ray start` was SIGKILLed and Ray's dashboard and runtime-env
agents and the trial workers ran on, orphaned, for a minute or more.
"""

from __future__ import annotations

import time

from benchmarks.orchestration_serve import Service, cmdline, descendants, proc_fields, replay_spec, trial_actors

# Orphaned by a killed Ray head, its agents lived a minute or more (they notice the raylet is gone);
# a clean stop waits for what it stops, so at most a process still exiting is left when it returns.
EXIT_GRACE_S = 5.0


def _running(pid: int) -> bool:
    """Alive and not a zombie (an exited child its new parent has not reaped yet)."""
    fields = proc_fields(pid)
    return fields is not None and fields[0] != "Z"


def test_a_stopped_service_leaves_no_process_of_its_own_running(tmp_path):
    service = Service(tmp_path / "home")
    try:
        sweep = service.submit(replay_spec("stopped", trials=4, steps=400))  # trials outlast the test
        deadline = time.monotonic() + 240
        while service.sweeps([sweep])[sweep]["trials"].get("running", 0) < 1 or not trial_actors(service.proc.pid):
            assert time.monotonic() < deadline, service.sweeps([sweep])
            time.sleep(0.2)
        started = descendants(service.proc.pid)
        names = {pid: cmdline(pid)[:100] for pid in started}
    finally:
        service.stop()

    assert any(name.startswith("ray::ImplicitFunc") for name in names.values()), names  # a trial was running
    assert any("ray start" in name for name in names.values()), names  # under the service's own Ray head
    deadline = time.monotonic() + EXIT_GRACE_S
    while (left := [pid for pid in started if _running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"still running {EXIT_GRACE_S:.0f} s after the service stopped: " + "; ".join(
        f"{pid} {names[pid]}" for pid in left)
    assert service.sweeps([sweep])[sweep]["state"] == "running"  # resumed by the next start
