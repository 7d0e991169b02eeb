#!/usr/bin/env bash
# Runs the whole suite. Services the tests need are started here and stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
mkdir -p test-artifacts

# PostgreSQL: the store (and later the API) tests run on SQLite and on PostgreSQL. Start a
# throwaway server in a temp dir of its own (so concurrent runs don't share one) unless the
# caller already points SWEEPD_TEST_POSTGRES_URL at a server; stop and delete it on exit.
if [[ -z "${SWEEPD_TEST_POSTGRES_URL:-}" ]]; then
    export SWEEPD_PG_DIR
    SWEEPD_PG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/sweepd-pg.XXXXXX")"
    trap 'bash scripts/postgres.sh stop || true' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    SWEEPD_TEST_POSTGRES_URL="$(bash scripts/postgres.sh start)"
    export SWEEPD_TEST_POSTGRES_URL
fi
echo "run_tests.sh: PostgreSQL for the tests at $SWEEPD_TEST_POSTGRES_URL" >&2

set +e
$PY -m pytest -q --durations=25 --junitxml=test-artifacts/junit.xml "$@"
rc=$?
set -e
exit $rc
