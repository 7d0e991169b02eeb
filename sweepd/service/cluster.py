"""The one Ray cluster `sweepd serve` runs every sweep on (issue 16).

Each sweep driver used to call ``ray.init()`` on its own: two concurrent sweeps started two local
Ray instances, each believing it owned every CPU and GPU. Now the service owns the cluster:
- ``LocalRayHead``: without SWEEPD_RAY_ADDRESS, a Ray head on this machine, started once (the first
  time a sweep needs it) with ``ray start --head --block`` and stopped with the service. Its ports
  are free ones picked at start and its temp folder is its own, so it neither collides with nor
  is found by another Ray on the machine (``ray.init()`` elsewhere never attaches to it).
- ``ExternalRay``: SWEEPD_RAY_ADDRESS, a cluster someone else runs; its resources are read from it.
Drivers get the address in SWEEPD_RAY_ADDRESS and join it (engine/tuner.py ``ensure_ray``), so
Ray's scheduler places every sweep's trials on one pool of resources and never oversubscribes it;
the supervisor splits that pool into fair shares (sweepd/service/shares.py) from ``capacity()``.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from sweepd.service.children import die_with_parent

log = logging.getLogger("sweepd.service.cluster")
START_TIMEOUT_SECONDS = 90.0
STOP_WAIT_SECONDS = 20.0
CAPACITY_REFRESH_SECONDS = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_resources() -> dict[str, float]:
    """This machine's CPUs and GPUs (the GPUs as torch sees them)."""
    from sweepd.spec.capacity import Capacity

    cap = Capacity.detect()
    return {"CPU": float(cap.cpus), "GPU": float(cap.gpus)}


class LocalRayHead:
    """A Ray head on this machine for the service's drivers."""

    def __init__(self, resources: dict[str, float] | None = None) -> None:
        self._resources = resources
        self._proc: subprocess.Popen | None = None
        self._address: str | None = None
        self._temp_dir: Path | None = None
        self._lock = threading.Lock()
        # the cluster's own token (Ray 2.60 authenticates by token): neither ~/.ray/auth_token nor
        # anyone else's cluster; its drivers get it in their environment (driver_env), no file has it
        self._env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_ADDRESS": "",
                     "RAY_USAGE_STATS_ENABLED": "0", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}

    def capacity(self) -> dict[str, float]:
        if self._resources is None:
            self._resources = local_resources()
        return dict(self._resources)

    def driver_env(self) -> dict[str, str]:
        """What a driver's environment needs to join: the address (starting the head the first
        time) and the cluster's token."""
        return {"SWEEPD_RAY_ADDRESS": self.address(), "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN": self._env["RAY_AUTH_TOKEN"]}

    def address(self) -> str:
        """The head's GCS address, starting the head the first time."""
        with self._lock:
            if self._address is None or (self._proc is not None and self._proc.poll() is not None):
                self._start()
            assert self._address is not None
            return self._address

    def _start(self) -> None:
        self.stop()
        resources = self.capacity()
        port = _free_port()
        # short: Ray's unix sockets live under it (a socket path has a ~107-character limit)
        self._temp_dir = Path(tempfile.mkdtemp(prefix="sweepd-ray-", dir="/tmp"))
        ray = Path(sys.executable).with_name("ray")
        command = [str(ray) if ray.exists() else "ray", "start", "--head", "--block", f"--port={port}",
                   f"--num-cpus={int(resources['CPU'])}", f"--num-gpus={int(resources.get('GPU', 0))}",
                   "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={self._temp_dir}",
                   f"--dashboard-agent-listen-port={_free_port()}",
                   f"--metrics-export-port={_free_port()}", f"--runtime-env-agent-port={_free_port()}"]
        log_path = self._temp_dir / "ray-start.log"
        with open(log_path, "ab") as out:
            # its own process group, so stop() can take every Ray process down with it; killed with
            # the service (its reaper then takes the Ray processes down: `ray start --block`)
            self._proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                          preexec_fn=die_with_parent, env={**os.environ, **self._env})
        marker = self._temp_dir / "ray_current_cluster"  # `ray start` writes the address here when up
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if marker.exists() and marker.read_text().strip():
                self._address = marker.read_text().strip()
                log.info("started the service's Ray head at %s (%s)", self._address, resources)
                return
            if self._proc.poll() is not None:
                break
            time.sleep(0.2)
        tail = log_path.read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"could not start a local Ray head ({' '.join(command)}):\n{tail}")

    def stop(self) -> None:
        """SIGTERM to `ray start --block` (it shuts its Ray processes down), then kill what is left."""
        proc, self._proc, self._address = self._proc, None, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=STOP_WAIT_SECONDS)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None


class ExternalRay:
    """SWEEPD_RAY_ADDRESS: a Ray cluster run by someone else; its resources are read from it (and
    re-read every CAPACITY_REFRESH_SECONDS: an autoscaling cluster grows and shrinks)."""

    def __init__(self, address: str) -> None:
        self._address = address
        self._capacity: dict[str, float] | None = None
        self._read_at = 0.0

    def address(self) -> str:
        return self._address

    def driver_env(self) -> dict[str, str]:
        return {"SWEEPD_RAY_ADDRESS": self._address}  # its token, if any, is the operator's to set

    def capacity(self) -> dict[str, float] | None:
        if self._capacity is None or time.monotonic() - self._read_at > CAPACITY_REFRESH_SECONDS:
            try:
                import ray

                if not ray.is_initialized():
                    ray.init(address=self._address, log_to_driver=False, logging_level=logging.WARNING)
                total = ray.cluster_resources()
                self._capacity = {"CPU": float(total.get("CPU", 0)), "GPU": float(total.get("GPU", 0))}
                self._read_at = time.monotonic()
            except Exception as err:  # noqa: BLE001 - unreachable for now: no shares until it answers
                log.warning("cannot read the resources of the Ray cluster at %s: %s", self._address, err)
        return self._capacity

    def stop(self) -> None:
        try:
            import ray

            if ray.is_initialized():
                ray.shutdown()
        except Exception:  # noqa: BLE001
            pass


def service_cluster(ray_address: str | None):
    """The cluster of `sweepd serve`: SWEEPD_RAY_ADDRESS's, or a local head of its own."""
    return ExternalRay(ray_address) if ray_address else LocalRayHead()
