#!/usr/bin/env bash
# Runs the whole suite. Services the tests need are started here and stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
mkdir -p test-artifacts
set +e
$PY -m pytest -q --junitxml=test-artifacts/junit.xml "$@"
rc=$?
set -e
exit $rc
