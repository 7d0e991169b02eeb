"""How busy the machine was, and rates from per-step reports: what `trainer_throughput.py` and
`throughput_probe.py` time the trainers with (from /proc on Linux; None elsewhere)."""

from __future__ import annotations

import os
import statistics
import time


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
CONTENDED_CORES = 0.25  # other processes using more CPU than this during a run mark it "contended"


def cpu_snapshot() -> tuple[float, int, int] | None:
    """(wall clock, busy jiffies of the whole machine, jiffies of this process) from /proc; None off Linux."""
    try:
        with open("/proc/stat") as fh:
            v = [int(x) for x in fh.readline().split()[1:]]
        busy = sum(v[:8]) - v[3] - v[4]  # user nice system idle iowait irq softirq steal (guest is in user)
        with open("/proc/self/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        own = int(fields[11]) + int(fields[12])  # utime + stime, all threads
        return time.perf_counter(), busy, own
    except (OSError, ValueError, IndexError):
        return None


def others_cores(a, b) -> float | None:
    """CPU cores that other processes kept busy, on average, between two snapshots."""
    if a is None or b is None or b[0] <= a[0]:
        return None
    return round(max(0.0, ((b[1] - a[1]) - (b[2] - a[2])) / CLK_TCK / (b[0] - a[0])), 3)


def own_cpu_seconds(a, b) -> float | None:
    """CPU seconds this process used (all threads) between two snapshots."""
    if a is None or b is None:
        return None
    return (b[2] - a[2]) / CLK_TCK


def wait_for_quiet(max_wait: float) -> float:
    """Wait (up to max_wait s) until other processes leave the CPUs alone for a second; return the wait."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_wait:
        a = cpu_snapshot()
        time.sleep(1.0)
        busy = others_cores(a, cpu_snapshot())
        if busy is None or busy < CONTENDED_CORES:
            break
    return round(time.perf_counter() - t0, 1)


def median_step_rate(points: list[tuple[int, int, float]], start: int, end: int) -> float:
    """Median over the steps start+1..end of each step's own tokens/s: robust to bursts of load."""
    by_step = {s: (tok, sec) for s, tok, sec in points}
    rates = [(by_step[k][0] - by_step[k - 1][0]) / (by_step[k][1] - by_step[k - 1][1])
             for k in range(start + 1, end + 1) if by_step[k][1] > by_step[k - 1][1]]
    return statistics.median(rates)


def rate(points: list[tuple[int, int, float]], start: int, end: int) -> float:
    """tokens/s between the end of step `start` and the end of step `end`; points are (step, tokens, seconds)."""
    by_step = {s: (tok, sec) for s, tok, sec in points}
    t0, s0 = by_step[start]
    t1, s1 = by_step[end]
    return (t1 - t0) / (s1 - s0)
