"""What the browser tests and benchmarks/dashboard_render.py share: Debian's chromium, the real
app served by uvicorn in a thread, and data seeded straight into the store (no training runs).
"""

from __future__ import annotations

import json
import math
import random
import socket
import subprocess
import threading
import time
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
# Playwright never downloads a browser here: it drives Debian's chromium with these flags (we
# run as root, and without the background-networking flags Chromium's connections are refused).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN_KEY = "sweepd.token"  # the localStorage key api.js reads


def ensure_chromium() -> str:
    """Run scripts/ensure_chromium.sh (installs Debian's chromium when missing); its path."""
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "ensure_chromium.sh")],
        capture_output=True, text=True, timeout=1200,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"scripts/ensure_chromium.sh failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    path = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if not Path(path).is_file():
        raise RuntimeError(f"scripts/ensure_chromium.sh printed {path!r}, which is not a file")
    return path


def launch_chromium(playwright: Any, executable: str = CHROMIUM) -> Any:
    return playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)


class LiveServer:
    """An ASGI app served by uvicorn on 127.0.0.1 and a free port, in a daemon thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True, name=f"uvicorn-{self.port}"
        )

    def start(self, timeout: float = 60.0) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the app's server thread died during startup (see the log above)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the app did not start within {timeout:.0f} s")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------- seeding


def demo_spec(name: str, *, num_trials: int = 6, **overrides: Any) -> dict[str, Any]:
    """examples/demo.yaml as the API stores a validated spec, renamed (paths unchecked)."""
    from sweepd.spec import load_spec

    spec = json.loads(load_spec(REPO / "examples" / "demo.yaml", check_paths=False).model_dump_json())
    spec["name"] = name
    spec["search"]["num_trials"] = num_trials
    for key, value in overrides.items():
        spec[key] = {**spec[key], **value} if isinstance(spec.get(key), dict) and isinstance(value, dict) else value
    return spec


def curve(
    steps: Iterable[int], *, batch: int, lr: float, seed: int = 0, tokens_per_sample: int = 180
) -> list[dict[str, Any]]:
    """A plausible training curve: loss falling towards a floor that depends on the learning
    rate, a grad norm settling with noise, one metric dict per optimizer step."""
    rng = random.Random(seed)
    floor = 1.2 + 0.25 * abs(math.log10(lr) + 3.2)
    points = []
    for step in steps:
        samples = step * batch
        decay = math.exp(-samples / 900.0)
        loss = floor + (2.6 - floor) * decay + rng.gauss(0, 0.02)
        grad = 0.35 + 2.2 * lr * 100 * (0.4 + decay) + abs(rng.gauss(0, 0.05))
        points.append({
            "step": step, "samples": samples, "tokens": samples * tokens_per_sample,
            "loss": round(loss, 5), "grad_norm": round(grad, 5), "lr": lr, "seconds": round(step * 0.8, 3),
        })
    return points


def ago(minutes: float) -> datetime:
    return datetime.now(timezone.utc) - timedelta(minutes=minutes)


def add_trial(
    session: Any,
    sweep_id: str,
    number: int,
    *,
    state: str,
    batch: int,
    lr: float,
    steps: int,
    warmup: int = 0,
    schedule: str = "constant",
    objective: float | None = None,
    stopped_at: float | None = None,
    reason: str | None = None,
    error: str | None = None,
    started_minutes_ago: float = 30.0,
) -> Any:
    """A trial with its config, state, curve (``steps`` optimizer steps) and totals."""
    from sweepd.store import repo

    points = curve(range(1, steps + 1), batch=batch, lr=lr, seed=number * 7919 + steps)
    last = points[-1] if points else {"samples": 0, "tokens": 0, "seconds": 0.0}
    finished = state not in ("pending", "running")
    trial = repo.upsert_trial(
        session, sweep_id, number,
        config={"effective_batch_size": batch, "learning_rate": lr, "warmup_steps": warmup, "lr_scheduler": schedule},
        state=state, objective=objective,
        metrics_final={"eval_loss": objective, "model_dir": f"/srv/sweepd/runs/{sweep_id}/trial-{number:04d}/model"}
        if objective is not None else None,
        stopped_at=stopped_at, reason=reason, error=error, attempts=1,
        started_at=ago(started_minutes_ago),
        finished_at=ago(started_minutes_ago - 5) if finished else None,
        samples=last["samples"], tokens=last["tokens"], seconds=last["seconds"],
    )
    if points:
        repo.add_metric_points(session, trial.id, points)
    return trial


def decision(session: Any, sweep_id: str, number: int, *, stop: bool, at: int, rank: int, cohort: int,
             keep: int, grad: float) -> str:
    """A pruner decision event worded as sweepd's ASHA pruner words them."""
    from sweepd.pruners.base import ordinal
    from sweepd.store import repo

    verb = "stopped" if stop else "continued"
    sentence = (f"{verb} at {at:,} samples: grad norm {grad:.2f} is {ordinal(rank)} of {cohort} at this rung; "
                f"the top {keep} continue{'s' if keep == 1 else ''}")
    repo.upsert_trial(session, sweep_id, number)  # as sweepd's DecisionWriter does
    repo.add_event(
        session, sweep_id, "decision", sentence, trial_id=repo.trial_id_for(sweep_id, number),
        payload={"action": "stop" if stop else "continue", "trial_number": number, "rung_time": at,
                 "time_attr": "samples", "rank": rank, "cohort": cohort, "keep": keep,
                 "values": {"grad_norm": grad}, "signal": "grad_norm", "pruner": "asha"},
    )
    return sentence


def ledger(session: Any, sweep_id: str, **extra: Any) -> dict[str, Any]:
    """The sweep's ledger, computed from its trials the way sweepd's engine does."""
    from sweepd.engine.ledger import TrialCost, compute_ledger
    from sweepd.store import repo

    sweep = repo.get_sweep(session, sweep_id)
    full = int(sweep.spec["budget"]["max_samples"])
    costs = [TrialCost(t.state, int(t.samples), int(t.tokens), float(t.seconds), full)
             for t in repo.list_trials(session, sweep_id)]
    return repo.update_ledger(session, sweep_id, {**compute_ledger(costs), **extra}, replace=True)
