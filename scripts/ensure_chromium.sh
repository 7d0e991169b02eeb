#!/usr/bin/env bash
# Makes sure Debian's chromium is installed (for the Playwright browser tests and the dashboard
# benchmark) and prints its path. Idempotent: does nothing when /usr/bin/chromium is there.
# Playwright never downloads a browser of its own here: the tests launch this one.
set -euo pipefail
CHROMIUM=/usr/bin/chromium
if [[ ! -x "$CHROMIUM" ]]; then
    SUDO=""
    if [[ "$(id -u)" -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || { echo "ensure_chromium.sh: need root (or sudo) to install chromium" >&2; exit 1; }
        SUDO="sudo"
    fi
    echo "ensure_chromium.sh: installing Debian's chromium package" >&2
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq >&2
    $SUDO apt-get install -y -qq --no-install-recommends chromium >&2
fi
if [[ ! -x "$CHROMIUM" ]]; then
    echo "ensure_chromium.sh: $CHROMIUM is still missing after installing chromium" >&2
    exit 1
fi
echo "$CHROMIUM"
