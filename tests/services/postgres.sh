#!/usr/bin/env bash
# A PostgreSQL server for the tests (checkpointers and stores against a real database):
# installs Debian's postgresql package if no server is on this machine, starts a
# throwaway cluster on 127.0.0.1:$PORT (trust auth, data under $ROOT), and prints its
# connection string. Safe to run again: a running cluster is reused.
set -euo pipefail
PORT="${ALTO_PG_PORT:-54329}"
ROOT="${ALTO_PG_ROOT:-/tmp/alto-postgres-$PORT}"

find_bin() {
    local dir
    for dir in /usr/lib/postgresql/*/bin; do
        if [ -x "$dir/pg_ctl" ]; then echo "$dir"; return 0; fi
    done
    if command -v pg_ctl >/dev/null; then dirname "$(command -v pg_ctl)"; return 0; fi
    return 1
}

if ! BIN="$(find_bin)"; then
    if [ "$(id -u)" != 0 ]; then
        echo "postgres.sh: no PostgreSQL server here; install Debian's postgresql package" >&2
        exit 1
    fi
    echo "postgres.sh: installing Debian's postgresql package" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    BIN="$(find_bin)"
fi

# the server refuses to run as root: run it as the package's postgres user
as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

URL="postgresql://postgres@127.0.0.1:$PORT/postgres"
if as_owner "$BIN/pg_ctl" -D "$ROOT/data" status >/dev/null 2>&1; then
    echo "$URL"
    exit 0
fi
mkdir -p "$ROOT"
[ "$(id -u)" = 0 ] && chown postgres "$ROOT"
if [ ! -f "$ROOT/data/PG_VERSION" ]; then
    as_owner "$BIN/initdb" -D "$ROOT/data" -U postgres --auth=trust -E UTF8 >/dev/null
fi
as_owner "$BIN/pg_ctl" -D "$ROOT/data" -l "$ROOT/server.log" -w -t 60 \
    -o "-p $PORT -k $ROOT -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
echo "$URL"
