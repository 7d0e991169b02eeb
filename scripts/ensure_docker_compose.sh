#!/usr/bin/env bash
# Makes sure a `docker-compose` executable exists and prints its path.
#
# The suite checks docker/compose.yaml with a real compose parser (`docker-compose config`),
# which needs no Docker engine. On a fresh Debian/Ubuntu machine that parser comes from the
# distribution's `docker-compose` package (on Debian 12 "bookworm": docker-compose 1.29.2, the
# Python implementation, which reads the Compose Specification including
# deploy.resources.reservations.devices). Idempotent: does nothing when docker-compose is
# already on PATH. Installing needs root (the test suite runs as root via `make test`).
# --no-install-recommends: the package recommends docker.io (the engine), which `config` does
# not need and which is not wanted on these machines.
# Exit status: 0 and the path on stdout, or non-zero with the reason on stderr.
set -euo pipefail

if path="$(command -v docker-compose 2>/dev/null)"; then
    echo "$path"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_docker_compose.sh: docker-compose is missing and apt-get is not available;" \
         "install docker-compose by hand" >&2
    exit 1
fi

SUDO=()
if [[ "$(id -u)" != 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo -n)
    else
        echo "ensure_docker_compose.sh: docker-compose is missing; installing it needs root" >&2
        exit 1
    fi
fi

log="$(mktemp "${TMPDIR:-/tmp}/ensure-docker-compose.XXXXXX")"
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
if ! { "${SUDO[@]}" apt-get update -qq && \
       "${SUDO[@]}" apt-get install -y -qq --no-install-recommends docker-compose; } >"$log" 2>&1; then
    echo "ensure_docker_compose.sh: installing Debian's docker-compose package failed:" >&2
    tail -n 20 "$log" >&2
    exit 1
fi

if ! path="$(command -v docker-compose 2>/dev/null)"; then
    echo "ensure_docker_compose.sh: the docker-compose package installed, but no docker-compose" \
         "executable is on PATH" >&2
    exit 1
fi
echo "$path"
