#!/usr/bin/env bash
# A real two-node Ray cluster on this machine, for tests/test_ray.py: a head with the
# custom resource {"node_a": 1} and a second node with {"node_b": 1}, one CPU-pair each,
# token auth on (the token in $ROOT/token, mode 0600), usage reports off. Each node is
# `ray start --block` in a process group of its own, so `stop` kills exactly this
# cluster (never another Ray on the machine) and a node can be killed alone.
#
#   ray.sh start     start both nodes (again if they run: stopped first); prints the address
#   ray.sh start-b   start the second node alone (after a test killed it)
#   ray.sh stop      stop both
#
# RAY is the `ray` command to use (default: the one on PATH).
set -euo pipefail
PORT="${ALTO_RAY_PORT:-6391}"
ROOT="${ALTO_RAY_ROOT:-/tmp/alto-ray-test}"
RAY="${RAY:-ray}"
ADDRESS="127.0.0.1:$PORT"

export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$ROOT/token" RAY_USAGE_STATS_ENABLED=0
# a killed node is declared dead after ~2 s, not 15 (tests kill one)
export RAY_health_check_period_ms=500 RAY_health_check_failure_threshold=3 \
    RAY_health_check_initial_delay_ms=500

common=(--block --node-ip-address=127.0.0.1 --num-cpus=2 --object-store-memory=100000000
        --disable-usage-stats)

kill_group() {  # the process group whose leader's pid is in file $1
    if [ -f "$1" ]; then
        kill -KILL -- "-$(cat "$1")" 2>/dev/null || true
        rm -f "$1"
    fi
}

wait_port() {
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "ray.sh: the head did not listen on $ADDRESS within 30 s (see $ROOT/head.log)" >&2
    return 1
}

start_b() {
    kill_group "$ROOT/b.pid"
    setsid "$RAY" start --address="$ADDRESS" --resources='{"node_b": 1}' "${common[@]}" \
        >"$ROOT/b.log" 2>&1 &
    echo $! >"$ROOT/b.pid"
}

case "${1:-}" in
start)
    kill_group "$ROOT/b.pid"
    kill_group "$ROOT/head.pid"
    mkdir -p "$ROOT/tmp"
    if [ ! -s "$ROOT/token" ]; then
        (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$ROOT/token")
    fi
    setsid "$RAY" start --head --port="$PORT" --resources='{"node_a": 1}' \
        --include-dashboard=false --temp-dir="$ROOT/tmp" "${common[@]}" >"$ROOT/head.log" 2>&1 &
    echo $! >"$ROOT/head.pid"
    wait_port
    start_b
    echo "$ADDRESS"
    ;;
start-b) start_b ;;
stop)
    kill_group "$ROOT/b.pid"
    kill_group "$ROOT/head.pid"
    ;;
*)
    echo "usage: $0 start|start-b|stop" >&2
    exit 2
    ;;
esac
