"""Prometheus metrics, in the text exposition format (0.0.4) written by hand.

- ``sweepd_sweeps{state}``               gauge: sweeps in each state
- ``sweepd_trials_running``              gauge: trials running now
- ``sweepd_decisions_total``             counter: the pruner's decisions recorded
- ``sweepd_database_up``                 gauge: 1 when the store answered this scrape
- ``sweepd_http_request_duration_seconds{method,route}``  histogram, by route template
- ``sweepd_http_requests_total{method,route,status}``      counter

The store metrics are read from the database at each scrape, so they are right whichever
process (API, supervisor, sweep drivers) changed the rows. The HTTP metrics belong to this app.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections import defaultdict
from typing import Any

from sqlalchemy import func, select

from sweepd.store.models import Event, EventKind, Sweep, SweepState, Trial, TrialState

log = logging.getLogger("sweepd.api")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED = "<unmatched>"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}"


def _num(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(float(value)) if isinstance(value, float) else str(value)


class HttpMetrics:
    """Request latency histograms and request counts; thread-safe."""

    def __init__(self, buckets: tuple[float, ...] = BUCKETS):
        self.buckets = buckets
        self._lock = threading.Lock()
        # (method, route) -> [per-bucket counts..., +Inf count], sum
        self._hist: dict[tuple[str, str], list[int]] = {}
        self._sum: dict[tuple[str, str], float] = defaultdict(float)
        self._count: dict[tuple[str, str, str], int] = defaultdict(int)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route)
        with self._lock:
            counts = self._hist.get(key)
            if counts is None:
                counts = self._hist[key] = [0] * (len(self.buckets) + 1)
            counts[bisect.bisect_left(self.buckets, seconds)] += 1
            self._sum[key] += seconds
            self._count[(method, route, str(status))] += 1

    def render(self) -> list[str]:
        name = "sweepd_http_request_duration_seconds"
        lines = [f"# HELP {name} HTTP request latency by route template and method.",
                 f"# TYPE {name} histogram"]  # fmt: skip
        with self._lock:
            hist = {k: list(v) for k, v in self._hist.items()}
            sums = dict(self._sum)
            counts = dict(self._count)
        for (method, route), per_bucket in sorted(hist.items()):
            cumulative = 0
            for bound, n in zip((*self.buckets, float("inf")), per_bucket):
                cumulative += n
                lines.append(f"{name}_bucket{_labels(method=method, route=route, le=_num(bound))} {cumulative}")
            lines.append(f"{name}_sum{_labels(method=method, route=route)} {_num(sums[(method, route)])}")
            lines.append(f"{name}_count{_labels(method=method, route=route)} {cumulative}")
        total = "sweepd_http_requests_total"
        lines += [f"# HELP {total} HTTP requests by route template, method and status code.",
                  f"# TYPE {total} counter"]  # fmt: skip
        for (method, route, status), n in sorted(counts.items()):
            lines.append(f"{total}{_labels(method=method, route=route, status=status)} {n}")
        return lines


class MetricsMiddleware:
    """Pure ASGI middleware timing every HTTP request, labelled with the matched route's
    template (``/api/v1/sweeps/{sweep_id}``, never the raw path) and method."""

    def __init__(self, app: Any, metrics: HttpMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path_format", None) or getattr(route, "path", None) or UNMATCHED
            self.metrics.observe(method_label(scope.get("method", "GET")), template, status,
                                 time.perf_counter() - start)


# Labels come from closed sets: a client choosing the method name (8 KB of it, 1,000 times) must
# not grow /metrics. Routes are already templates or UNMATCHED; status codes are 3 digits.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})


def method_label(method: str) -> str:
    return method if method in HTTP_METHODS else "OTHER"


def _store_lines(app: Any) -> list[str]:
    with app.state.sessionmaker() as session:
        by_state = dict(session.execute(select(Sweep.state, func.count()).group_by(Sweep.state)).all())
        running = session.scalar(
            select(func.count()).select_from(Trial).where(Trial.state == TrialState.running.value)
        ) or 0
        decisions = session.scalar(
            select(func.count()).select_from(Event).where(Event.kind == EventKind.decision.value)
        ) or 0
    lines = ["# HELP sweepd_sweeps Sweeps by state.", "# TYPE sweepd_sweeps gauge"]
    states = [s.value for s in SweepState] + sorted(set(by_state) - {s.value for s in SweepState})
    lines += [f"sweepd_sweeps{_labels(state=s)} {int(by_state.get(s, 0))}" for s in states]
    lines += ["# HELP sweepd_trials_running Trials running now.", "# TYPE sweepd_trials_running gauge",
              f"sweepd_trials_running {int(running)}",
              "# HELP sweepd_decisions_total Early-stopping decisions recorded by the pruner.",
              "# TYPE sweepd_decisions_total counter",
              f"sweepd_decisions_total {int(decisions)}"]  # fmt: skip
    return lines


def render(app: Any) -> str:
    lines: list[str] = []
    try:
        lines += _store_lines(app)
        up = 1
    except Exception as exc:  # noqa: BLE001 - a scrape still reports the HTTP metrics
        log.warning("metrics: cannot read the store: %s", exc)
        up = 0
    lines += ["# HELP sweepd_database_up Whether the store answered this scrape.",
              "# TYPE sweepd_database_up gauge", f"sweepd_database_up {up}"]  # fmt: skip
    lines += app.state.http_metrics.render()
    return "\n".join(lines) + "\n"
