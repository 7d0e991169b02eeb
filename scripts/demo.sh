#!/usr/bin/env bash
# `make demo`: the service with the demo sweep running. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${PORT:-8080}"
SERVER="http://127.0.0.1:${PORT}"
export SWEEPD_HOME="${SWEEPD_HOME:-$PWD/.sweepd}"
export SWEEPD_PUBLIC_READ="${SWEEPD_PUBLIC_READ:-1}"   # the demo binds loopback only: reads need no token
SWEEPD=.venv/bin/sweepd

$SWEEPD db upgrade >/dev/null
TOKEN="$($SWEEPD token create "demo-$(date +%s)")"
$SWEEPD serve --host 127.0.0.1 --port "$PORT" &
SERVE_PID=$!
trap 'kill $SERVE_PID 2>/dev/null; wait $SERVE_PID 2>/dev/null' EXIT INT TERM

for _ in $(seq 60); do
    .venv/bin/python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" "$SERVER/healthz" 2>/dev/null && break
    sleep 1
done
SWEEP_ID="$($SWEEPD submit examples/demo.yaml --server "$SERVER" --token "$TOKEN")"

cat <<MSG

  sweepd is running the demo sweep ($SWEEP_ID).

  Dashboard   $SERVER/sweeps/$SWEEP_ID
  Sweeps      $SERVER/
  REST API    $SERVER/api/v1/sweeps/$SWEEP_ID   (OpenAPI: $SERVER/docs)
  Token       $TOKEN   (for submit/cancel in the dashboard, or: export SWEEPD_TOKEN=...)
  Follow it   $SWEEPD status $SWEEP_ID --server $SERVER --token $TOKEN
  Data        $SWEEPD_HOME

  Ctrl-C stops the service.
MSG
wait $SERVE_PID
