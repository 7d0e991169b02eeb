"""Many sweeps, one cluster (issue 16): sweeps submitted together to one `sweepd serve` share its
one Ray, never run more trials than the machine has cores, each gets its fair share, and a
high-priority sweep gets its share within one trial-length.

Replay trials (builtin:replay: recorded curves, no training) of a fixed length, cpus_per_worker 1,
so the machine's cores are the trial slots. The service, the sampling and the share arithmetic are
benchmarks/orchestration_serve.py's (`make bench-orchestration` prints the same figures).
"""

from __future__ import annotations

import os
import time

from benchmarks.orchestration_serve import (CORES, Service, concurrent_sweeps_through_serve, proc_fields,
                                            replay_spec)

# From a trial's end to the next one's start: Ray tears down one actor and starts another in a new
# worker process (the next sweep's own Ray job), which imports the trainable. Measured on 2 quiet
# cores: 3.6-4.0 s; 7.4-8.1 s (and 8.1 s in a CI run, which failed a bound of 8 s) while the waiting
# sweep's driver still spun a core (asserted below). Not the share's doing: the ordering assertion
# is exact, and a sweep left waiting for a grant, or for Tune's 10-minute searcher poll
# (share_gate.poll_searcher_briefly), waits far longer than this.
ACTOR_START_S = 12.0
WAITING_WINDOW_S = 3.0


def _cpu_seconds(pid: int) -> float:
    fields = proc_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_four_sweeps_share_one_ray_fairly_and_never_oversubscribe(tmp_path):
    trials = 6
    seen = concurrent_sweeps_through_serve(tmp_path, sweeps=4, trials=trials, steps=12)

    assert all(s["state"] == "succeeded" for s in seen["final"].values()), seen["final"]
    assert seen["exact_trial_counts"], seen["final"]
    assert set(seen["ray_instances"]) <= {0, 1} and 1 in seen["ray_instances"], seen["ray_instances"]
    assert seen["peak_trial_actors"] <= CORES, f"{seen['peak_trial_actors']} trials held a CPU at once on {CORES} cores"
    assert seen["peak_granted_slots"] <= CORES, seen["peak_granted_slots"]
    got = seen["shares"]
    assert all(s["got"] is not None for s in got.values()), "the 4 sweeps never competed"
    assert all(abs(s["got"] - s["fair"]) <= 1 for s in got.values()), got  # within one trial
    assert all(s["got"] > 0 for s in got.values()), f"a sweep got no turn while all 4 competed: {got}"


def test_a_high_priority_sweep_gets_its_share_within_one_trial_length(tmp_path):
    """A normal sweep holds every core; a high one arrives. No trial is preempted, and the first slot
    that frees is the high sweep's: it starts within one trial-length of arriving. The trial-length
    is the longest the normal sweep's trials ran, as measured (under load, longer than their nominal
    steps), plus Ray's start of the high sweep's actor."""
    service = Service(tmp_path / "home")
    steps = 40
    try:
        normal = service.submit(replay_spec("normal", trials=12, steps=steps, max_concurrent=CORES))
        deadline = time.monotonic() + 240
        while service.sweeps([normal])[normal]["trials"].get("running", 0) < CORES:  # it holds every core
            assert time.monotonic() < deadline, service.sweeps([normal])
            time.sleep(0.2)
        high = service.submit(replay_spec("high", trials=2, steps=steps, priority="high", max_concurrent=CORES))
        while not service.asked_for_a_trial(high):  # arrived: its searcher asked for its first trial
            assert time.monotonic() < deadline, service.sweeps([high])
            time.sleep(0.1)
        arrived = time.time()
        while service.sweeps([high])[high]["trials"].get("running", 0) < 1:
            assert time.monotonic() < deadline, service.sweeps([normal, high])
            time.sleep(0.1)
        shares = service.sweeps([normal, high])
        high_started = service.trial_times(high)[0][0]
        # the normal sweep, its grant cut to 0 and none of its trials live, waits for its turn
        waiting_driver = service.driver_pid(normal)
        waiting_cpu = _cpu_seconds(waiting_driver)
        time.sleep(WAITING_WINDOW_S)
        waiting_cpu = (_cpu_seconds(waiting_driver) - waiting_cpu) / WAITING_WINDOW_S
        waiting_shares = service.sweeps([normal, high])
        settle = time.monotonic() + 30  # the normal driver may record its trial's end after Ray freed the slot
        while True:
            normal_trials = service.trial_times(normal)
            if any(end is not None and start < arrived for start, end in normal_trials) or time.monotonic() > settle:
                break
            time.sleep(0.2)
    finally:
        service.stop()

    # The first slot the high sweep could have: one already free when it arrived (under load its
    # driver may take longer to start than a normal trial has left, and the normal sweep, its grant
    # already cut, does not refill it), else the first normal trial to end after the arrival.
    held_at_arrival = [(start, end) for start, end in normal_trials if start < arrived and (end is None or end > arrived)]
    ends = [end for _, end in held_at_arrival if end is not None]
    assert len(held_at_arrival) < CORES or ends, f"the high sweep started while the normal one held every core: {normal_trials}"
    slot_free = arrived if len(held_at_arrival) < CORES else min(ends)
    started_since = [start for start, _ in normal_trials if arrived < start < high_started]
    assert not started_since, f"the normal sweep started {len(started_since)} trial(s) after the high sweep arrived, before it"
    print(f"high sweep: slot freed {slot_free - arrived:.1f} s after its arrival, its trial started "
          f"{high_started - slot_free:.1f} s after that")
    assert high_started - slot_free <= ACTOR_START_S, (
        f"the high sweep's trial started {high_started - slot_free:.1f} s after a slot freed for it")
    trial_length = max(end - start for start, end in normal_trials if end is not None)  # as measured
    waited = high_started - arrived
    assert waited <= trial_length + ACTOR_START_S, (
        f"the high sweep waited {waited:.1f} s for a slot; the normal sweep's trials ran up to {trial_length:.1f} s")
    assert shares[high]["limit"] > shares[normal]["limit"], shares  # 2 slots: high 1.33, normal 0.67 of them
    # Tune asks a searcher that has no trial live in a loop that does not wait: it spun a core at
    # normal priority (0.9 of one measured), against the trial workers Ray starts at nice 15
    assert waiting_shares[normal]["limit"] == 0 and not waiting_shares[normal]["trials"].get("running"), waiting_shares
    assert waiting_cpu < 0.25, f"the waiting sweep's driver used {waiting_cpu:.2f} of a core"
