#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback, for the test suite and local experiments.
#
#   scripts/postgres.sh start   # start (or reuse) the server; prints its SQLAlchemy URL on stdout
#   scripts/postgres.sh url     # print the URL of the running server (exit 1 if none runs)
#   scripts/postgres.sh status  # say whether it runs
#   scripts/postgres.sh stop    # stop it and delete its data directory
#
# Typical use:  export SWEEPD_TEST_POSTGRES_URL="$(scripts/postgres.sh start)"
#
# Environment:
#   SWEEPD_PG_DIR   where the server lives (data, log, port); default: <repo>/.pgdata.
#                   scripts/run_tests.sh uses a fresh temp dir per run, so that runs do not share.
#   SWEEPD_PG_PORT  first port to try (default 55432); the next free one up to +100 is taken.
#
# The server listens on 127.0.0.1 only, trusts local connections (it holds nothing but test
# data), and runs with fsync off. As root, it runs as the `postgres` system user (created by
# Debian's package; a `sweepd-pg` system user is created when no such user exists).
# Where initdb/pg_ctl are missing, Debian's `postgresql` package is installed with apt-get.
# All chatter goes to stderr; stdout carries only the URL.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_DIR="${SWEEPD_PG_DIR:-$REPO/.pgdata}"
DATA="$PG_DIR/data"
LOG="$PG_DIR/server.log"
PORT_FILE="$PG_DIR/port"
FIRST_PORT="${SWEEPD_PG_PORT:-55432}"
LOCK="${TMPDIR:-/tmp}/sweepd-pg.$(printf '%s' "$PG_DIR" | md5sum | cut -c1-12).lock"
DB_USER="sweepd"
DB_NAME="sweepd"

say() { echo "postgres.sh: $*" >&2; }
die() { say "$*"; exit 1; }

find_bindir() {
    local d
    # Newest installed major version first.
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [[ -x "$d/initdb" && -x "$d/pg_ctl" ]]; then echo "$d"; return 0; fi
    done
    if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
        dirname "$(command -v pg_ctl)"; return 0
    fi
    return 1
}

ensure_installed() {
    if BIN="$(find_bindir)"; then return 0; fi
    [[ "$(id -u)" == 0 ]] || die "PostgreSQL is not installed and we are not root: apt-get install postgresql"
    say "installing PostgreSQL from Debian's packages (apt-get install postgresql)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    # (Debian's package may also create and start its own cluster on port 5432; we use ours.)
    apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold postgresql >&2
    BIN="$(find_bindir)" || die "PostgreSQL was installed but initdb/pg_ctl were not found"
}

# Run a command as the server's owner: ourselves, or a system user when we are root.
RUN_AS=()
pick_user() {
    if [[ "$(id -u)" != 0 ]]; then RUN_AS=(); PG_OS_USER="$(id -un)"; return; fi
    if id postgres >/dev/null 2>&1; then
        PG_OS_USER=postgres
    else
        PG_OS_USER=sweepd-pg
        id "$PG_OS_USER" >/dev/null 2>&1 \
            || useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_OS_USER"
    fi
    if command -v runuser >/dev/null 2>&1; then
        RUN_AS=(runuser -u "$PG_OS_USER" --)
    else
        RUN_AS=(su -s /bin/sh "$PG_OS_USER" -c)
    fi
}
as_owner() {
    if [[ ${#RUN_AS[@]} -eq 0 ]]; then "$@"
    elif [[ "${RUN_AS[0]}" == su ]]; then "${RUN_AS[@]}" "$(printf '%q ' "$@")"
    else "${RUN_AS[@]}" "$@"
    fi
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
    local p
    for ((p = FIRST_PORT; p < FIRST_PORT + 100; p++)); do
        if ! port_in_use "$p"; then echo "$p"; return 0; fi
    done
    die "no free port in $FIRST_PORT..$((FIRST_PORT + 99))"
}

url() { echo "postgresql+psycopg://$DB_USER@127.0.0.1:$(cat "$PORT_FILE")/$DB_NAME"; }

running() {
    [[ -f "$DATA/PG_VERSION" && -f "$PORT_FILE" ]] || return 1
    BIN="$(find_bindir)" || return 1
    pick_user
    as_owner "$BIN/pg_ctl" status -D "$DATA" >/dev/null 2>&1
}

start() {
    if running; then url; return 0; fi
    ensure_installed
    pick_user
    mkdir -p "$PG_DIR"
    chmod 755 "$PG_DIR"
    [[ -z "${RUN_AS[*]}" ]] || chown "$PG_OS_USER" "$PG_DIR"
    if [[ ! -f "$DATA/PG_VERSION" ]]; then
        rm -rf "$DATA"
        say "initdb in $DATA (as $PG_OS_USER)"
        as_owner "$BIN/initdb" -D "$DATA" -U "$DB_USER" -A trust -E UTF8 --no-locale >"$PG_DIR/initdb.log" 2>&1 \
            || { cat "$PG_DIR/initdb.log" >&2; die "initdb failed"; }
    fi
    local port
    port="$(free_port)"
    echo "$port" >"$PORT_FILE"
    say "starting on 127.0.0.1:$port (log: $LOG)"
    # unix_socket_directories: inside the data dir, so nothing outside it is touched.
    # `9>&-`: the server must not inherit the lock's descriptor (it would hold the lock forever).
    as_owner "$BIN/pg_ctl" start -D "$DATA" -w -t 60 -l "$LOG" -o \
        "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$DATA -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        >&2 9>&- || { tail -n 30 "$LOG" >&2 || true; die "pg_ctl start failed"; }
    # The database the URL names (tests create their own databases next to it).
    if ! as_owner "$BIN/psql" -h 127.0.0.1 -p "$port" -U "$DB_USER" -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" | grep -q 1; then
        as_owner "$BIN/createdb" -h 127.0.0.1 -p "$port" -U "$DB_USER" "$DB_NAME"
    fi
    url
}

stop() {
    if [[ -f "$DATA/PG_VERSION" ]] && BIN="$(find_bindir)"; then
        pick_user
        if as_owner "$BIN/pg_ctl" status -D "$DATA" >/dev/null 2>&1; then
            say "stopping the server in $DATA"
            as_owner "$BIN/pg_ctl" stop -D "$DATA" -m fast -w >&2 || true
        fi
    fi
    rm -rf "$PG_DIR"
}

# One start/stop at a time per server directory.
with_lock() {
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$LOCK"
        flock 9
    fi
    "$@"
}

case "${1:-}" in
    start) with_lock start ;;
    stop) with_lock stop; rm -f "$LOCK" ;;
    url) running || die "not running (scripts/postgres.sh start)"; url ;;
    status) if running; then say "running: $(url)"; else say "not running"; exit 1; fi ;;
    *) echo "usage: $0 start|stop|url|status" >&2; exit 2 ;;
esac
