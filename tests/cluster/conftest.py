"""A real two-node Ray cluster on loopback, started with `ray start` as separate processes.

Node addresses: Ray rewrites `--node-ip-address 127.0.0.1` (and `localhost`) to this machine's
routable IP (`ray._private.services.resolve_ip_for_localhost`), so the nodes use the other loopback
addresses 127.0.0.2 (head) and 127.0.0.3 (worker): distinct node IPs, nothing routed off the machine.
Each node has its own --temp-dir (its own sockets, logs and session) and its own dashboard-agent
port; the dashboard is off. Ray 2.60's GCS and raylet gRPC servers listen on all interfaces (there
is no flag to narrow that); the addresses Ray advertises and connects to are loopback.

Isolation from other Ray instances on the machine: a fresh auth token (RAY_AUTH_MODE=token,
RAY_AUTH_TOKEN) for this cluster, its own ports, no RAY_ADDRESS inherited.

Teardown (the fixture's finalizer, whatever happened): each `ray start --block` was started in a
session of its own (start_new_session=True), and every process Ray spawns from it (GCS, raylet,
agents, workers) stays in that session. SIGTERM to the two `ray start` processes shuts their nodes
down (draining is disabled with RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0, so this takes seconds, not
30); anything still alive in those two sessions is then SIGKILLed, and the teardown fails if any
process of those sessions, or any process naming this cluster's temp dir, survives. Nothing else on
the machine is signalled: no `ray stop`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

HEAD_IP = "127.0.0.2"
WORKER_IP = "127.0.0.3"
START_TIMEOUT_S = 90
STOP_TIMEOUT_S = 20

# Connects as a driver and waits until the cluster has `want` alive nodes; prints them as JSON.
_WAIT_FOR_NODES = r"""
import json, sys, time
import ray
address, want, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
ray.init(address=address, log_to_driver=False, logging_level="ERROR")
deadline = time.monotonic() + timeout
while True:
    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) >= want or time.monotonic() > deadline:
        break
    time.sleep(0.5)
print(json.dumps([{"ip": n["NodeManagerAddress"], "cpus": n["Resources"].get("CPU", 0),
                   "head": "node:__internal_head__" in n["Resources"]} for n in alive]))
ray.shutdown()
sys.exit(0 if len(alive) >= want else 1)
"""


def _free_ports(n: int) -> list[int]:
    """n distinct ports free on every interface (Ray's GCS binds the wildcard address)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, session id) of a process, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[3])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _live_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return f"(no {path})"


class LoopbackRayCluster:
    """Head on HEAD_IP and one worker node on WORKER_IP, 1 CPU each, as `ray start --block` processes."""

    def __init__(self) -> None:
        # Short path: Ray's unix sockets live under it, and sun_path holds at most 107 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="sweepd-rc-", dir="/tmp"))
        self.port, head_agent_port, worker_agent_port = _free_ports(3)
        self.address = f"{HEAD_IP}:{self.port}"
        self.agent_ports = {"head": head_agent_port, "worker": worker_agent_port}
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("RAY_ADDRESS", "SWEEPD_RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
        self.env.update(
            RAY_USAGE_STATS_ENABLED="0",
            RAY_AUTH_MODE="token",                   # this cluster's own token, not ~/.ray/auth_token
            RAY_AUTH_TOKEN=secrets.token_hex(32),
            RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",  # SIGTERM stops a node at once
            PYTHONUNBUFFERED="1",
        )
        self.procs: dict[str, subprocess.Popen] = {}
        self.nodes: list[dict] = []

    # ---- start ---------------------------------------------------------------------------

    def _ray_start(self, name: str, *args: str) -> None:
        log = open(self.root / f"{name}.log", "wb")
        try:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "ray.scripts.scripts", "start", "--block",
                 "--num-cpus", "1", "--object-store-memory", str(100 * 1024 * 1024),
                 "--temp-dir", str(self.root / name),
                 "--dashboard-agent-listen-port", str(self.agent_ports[name]),
                 "--disable-usage-stats", *args],
                env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()

    def _fail(self, why: str) -> None:
        logs = "\n".join(f"--- {name}.log ---\n{_tail(self.root / f'{name}.log')}" for name in self.procs)
        pytest.fail(f"two-node Ray cluster: {why}\n{logs}", pytrace=False)

    def _check_running(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                self._fail(f"`ray start` of the {name} node exited with {proc.returncode}")

    def start(self) -> None:
        self._ray_start("head", "--head", "--node-ip-address", HEAD_IP, "--port", str(self.port),
                        "--include-dashboard", "false")
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:  # the GCS accepts connections: the worker node can join
            self._check_running()
            try:
                socket.create_connection((HEAD_IP, self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self._fail(f"the head's GCS did not listen on {self.address} within {START_TIMEOUT_S} s")
                time.sleep(0.3)
        self._ray_start("worker", "--address", self.address, "--node-ip-address", WORKER_IP)
        with open(self.root / "nodes.json", "wb") as out_f, open(self.root / "wait.log", "wb") as err_f:
            waiter = subprocess.Popen([sys.executable, "-c", _WAIT_FOR_NODES, self.address, "2",
                                       str(START_TIMEOUT_S)],
                                      env=self.env, stdin=subprocess.DEVNULL, stdout=out_f, stderr=err_f)
        try:  # fail fast when a node's `ray start` dies while we wait
            while waiter.poll() is None:
                self._check_running()
                if time.monotonic() > deadline + START_TIMEOUT_S:
                    self._fail("timed out waiting for two alive nodes")
                time.sleep(0.5)
        finally:
            if waiter.poll() is None:
                waiter.kill()
            waiter.wait()
        self._check_running()
        out = _tail(self.root / "nodes.json")
        if waiter.returncode != 0:
            self._fail(f"the cluster never had two alive nodes (rc={waiter.returncode}): {out}\n"
                       f"{_tail(self.root / 'wait.log')}")
        self.nodes = json.loads(out.strip().splitlines()[-1])

    # ---- stop ----------------------------------------------------------------------------

    def _sessions(self) -> set[int]:
        return {p.pid for p in self.procs.values()}  # start_new_session: each is its session's leader

    def _survivors(self) -> list[int]:
        """Live (non-zombie) processes of this cluster: in its sessions, or naming its temp dir."""
        sessions, mine, root = self._sessions(), os.getpid(), str(self.root)
        found = []
        for pid in _live_pids():
            stat = _proc_stat(pid)
            if stat is None or stat[0] == "Z" or pid == mine:
                continue
            if stat[1] in sessions or root in _cmdline(pid):
                found.append(pid)
        return found

    def stop(self) -> None:
        for name in ("worker", "head"):
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        while self._survivors() and time.monotonic() < deadline:
            time.sleep(0.5)
        stragglers = self._survivors()
        if stragglers:  # whatever outlived SIGTERM and the grace period
            print(f"SIGKILL to {len(stragglers)} process(es) of the test cluster: "
                  + "; ".join(f"{pid} {_cmdline(pid)[:80]}" for pid in stragglers))
        for pid in stragglers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        end = time.monotonic() + 10
        while (left := self._survivors()) and time.monotonic() < end:
            time.sleep(0.3)
        if left:
            raise AssertionError("Ray processes of the test cluster survived teardown:\n"
                                 + "\n".join(f"{pid}: {_cmdline(pid)[:200]}" for pid in left))
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def ray_cluster() -> Iterator[LoopbackRayCluster]:
    """A running two-node cluster; failing to start it fails the test. Always torn down."""
    cluster = LoopbackRayCluster()
    try:
        started = time.monotonic()
        cluster.start()
        print(f"two-node Ray cluster at {cluster.address} up in {time.monotonic() - started:.1f} s: "
              f"{cluster.nodes}")
        yield cluster
    finally:
        started = time.monotonic()
        cluster.stop()
        print(f"two-node Ray cluster torn down in {time.monotonic() - started:.1f} s")
