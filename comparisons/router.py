"""The router on its own: per-hop forwarding latency and messages per second.

    python comparisons/router.py [--count 20000] [--window 500] [--transport ipc|tcp]

Starts alto's router process (as a deployment does) and a bare echo instance (a zmq
socket in its own process that sends every task straight back), then measures from a
client socket in this process:

* latency: one message at a time. A round trip through the router is two router
  hops; "per hop" is half of it. The same echo reached directly (no router) gives the
  transport's own cost, so "router adds" is what forwarding costs on top.
* throughput: ``--window`` messages in flight, ``--count`` round trips; the router
  forwards two messages per round trip. Reported per wall second and per second of
  the router's own CPU time (read from /proc): the rate one core sustains.
* a whole remote node call (alto's client, router, a stage instance running a no-op
  node, and back), for scale.

Targets (issue 3): per-hop p50 at most 100 us; at least 50k messages/s on one core.
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import zmq
from typing_extensions import TypedDict

RESULTS = Path(__file__).parent / "results"


class Counter(TypedDict):
    n: Annotated[int, operator.add]


PAYLOAD = os.urandom(128)


def echo(address: str, identity: bytes, bind: bool) -> None:
    """An instance that answers every task at once (runs in its own process); one
    that connects to the router reads its credentials from stdin, as pickled
    ``PeerCredentials``."""
    from alto_langgraph.process import wire

    sock = zmq.Context().socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, identity)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    if bind:
        sock.bind(address)
    else:
        pickle.loads(sys.stdin.buffer.read()).apply(sock)
        sock.connect(address)
        sock.send_multipart([b"", wire.envelope(wire.READY, b"", b"echo"), b""])
    while True:
        client, env, payload = sock.recv_multipart()
        kind, call_id, _, _ = env.split(b"\0", 3)
        sock.send_multipart([client, wire.envelope(wire.RESULT, call_id), payload])


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _round_trips(sock: Any, count: int, direct: bool) -> list[float]:
    from alto_langgraph.process import wire

    times = []
    for i in range(count):
        call_id = str(i).encode()
        env = wire.envelope(wire.TASK, call_id, b"echo")
        # a ROUTER reaching the echo directly names it, and plays the router's part
        frames = [b"direct", b"client", env, PAYLOAD] if direct else [env, PAYLOAD]
        t0 = time.perf_counter()
        sock.send_multipart(frames)
        sock.recv_multipart()
        times.append(time.perf_counter() - t0)
    return times


def _throughput(sock: Any, count: int, window: int) -> float:
    from alto_langgraph.process import wire

    sent = received = 0
    t0 = time.perf_counter()
    while received < count:
        while sent < count and sent - received < window:
            sock.send_multipart([wire.envelope(wire.TASK, str(sent).encode(), b"echo"), PAYLOAD])
            sent += 1
        sock.recv_multipart()
        received += 1
    return time.perf_counter() - t0


def start(transport: str) -> dict[str, Any]:
    """alto's router (with a deployment's credentials), an echo instance behind it,
    another reached directly, and a client of each. ``stop(started)`` ends them."""
    from alto_langgraph.process import security
    from alto_langgraph.process.deployment import _cloudpickled
    from alto_langgraph.process.forkserver import fork_server
    from alto_langgraph.process.routing import LeastOutstanding
    from alto_langgraph.process.transport import free_ports

    if transport == "ipc":
        tmp = tempfile.mkdtemp(prefix="alto-bench-")
        front, back, direct = (f"ipc://{tmp}/{n}" for n in ("front", "back", "direct"))
    else:
        front, back, direct = (f"tcp://127.0.0.1:{p}" for p in free_ports("127.0.0.1", 3))
    keyring = security.Keyring(transport)
    server = fork_server()
    router = server.spawn(
        "router",
        {
            "front_address": front,
            "back_address": back,
            "stages": _cloudpickled([("echo", [b"echo#0"], LeastOutstanding(), {})]),
            "credentials": keyring.router([security.APP, b"echo#0"]),
        },
        {},
        lambda code: None,
    )
    me = [sys.executable, __file__, "--echo"]
    behind = subprocess.Popen([*me, back, "echo#0", "connect"], stdin=subprocess.PIPE)
    assert behind.stdin is not None
    behind.stdin.write(pickle.dumps(keyring.peer(b"echo#0")))
    behind.stdin.close()
    echoes = [behind, subprocess.Popen([*me, direct, "direct", "bind"])]
    ctx = zmq.Context()
    client = ctx.socket(zmq.DEALER)
    keyring.peer(security.APP).apply(client)
    client.connect(front)
    peer = ctx.socket(zmq.ROUTER)  # the echo reached without the router
    peer.connect(direct)
    time.sleep(0.5)  # both echoes connected and READY
    return {
        "via": client,
        "direct": peer,
        "ctx": ctx,
        "echoes": echoes,
        "server": server,
        "router": router,
    }


def stop(started: dict[str, Any]) -> None:
    started["ctx"].destroy(linger=0)
    for p in started["echoes"]:
        p.kill()
    started["server"].kill(started["router"])


def measure(count: int, window: int, transport: str = "ipc") -> dict[str, Any]:
    started = start(transport)
    client, peer, router = started["via"], started["direct"], started["router"]
    out: dict[str, Any] = {"transport": transport}
    try:
        _round_trips(client, 500, direct=False)  # warm-up
        via = _round_trips(client, count // 4, direct=False)
        time.sleep(0.1)
        _round_trips(peer, 500, direct=True)
        plain = _round_trips(peer, count // 4, direct=True)
        us = 1e6
        out["round_trip_us"] = {
            "p50": _percentile(via, 0.5) * us,
            "p99": _percentile(via, 0.99) * us,
        }
        out["per_hop_us"] = {
            "p50": _percentile(via, 0.5) * us / 2,
            "p99": _percentile(via, 0.99) * us / 2,
        }
        out["direct_round_trip_us"] = {
            "p50": _percentile(plain, 0.5) * us,
            "p99": _percentile(plain, 0.99) * us,
        }
        out["router_adds_per_hop_us"] = {
            "p50": (statistics.median(via) - statistics.median(plain)) * us / 2
        }
        cpu0 = _cpu_seconds(router)
        wall = _throughput(client, count, window)
        cpu = _cpu_seconds(router) - cpu0
        forwarded = 2 * count
        out["throughput"] = {
            "round_trips": count,
            "window": window,
            "messages_forwarded": forwarded,
            "wall_s": wall,
            "router_cpu_s": cpu,
            "messages_per_s_wall": forwarded / wall,
            "messages_per_router_cpu_s": forwarded / cpu if cpu > 0 else float("nan"),
        }
    finally:
        stop(started)
    out["remote_node_call_us"] = _remote_node_call(count // 10, transport)
    return out


def _remote_node_call(count: int, transport: str) -> dict[str, float]:
    """A no-op node called through alto's whole process path, one call at a time."""
    from langgraph.graph import START, StateGraph

    import alto_langgraph  # noqa: F401

    g = StateGraph(Counter)
    g.add_node("noop", lambda s: {"n": 1})
    g.add_edge(START, "noop")
    # executor="process": the default ("auto") would keep this node in the app process
    with g.compile(backend="alto", executor="process", start="compile", transport=transport) as app:
        node = app.nodes["noop"].bound
        for _ in range(200):
            node.invoke({"n": 0}, {})
        times = []
        for _ in range(count):
            t0 = time.perf_counter()
            node.invoke({"n": 0}, {})
            times.append(time.perf_counter() - t0)
    return {"p50": _percentile(times, 0.5) * 1e6, "p99": _percentile(times, 0.99) * 1e6}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=20000)
    p.add_argument("--window", type=int, default=500)
    p.add_argument("--transport", choices=("ipc", "tcp"), default="ipc")
    p.add_argument("--echo", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.echo:
        address, identity, mode = args.echo
        echo(address, identity.encode(), mode == "bind")
        return 0
    r = measure(args.count, args.window, args.transport)
    t = r["throughput"]

    def pct(name: str, key: str, note: str = "") -> None:
        v = r[key]
        print(f"{name:<22} p50 {v['p50']:7.1f} us   p99 {v.get('p99', float('nan')):7.1f} us{note}")

    pct("round trip via router", "round_trip_us")
    pct("per hop", "per_hop_us", "   (target p50 <= 100)")
    pct("direct round trip", "direct_round_trip_us")
    pct("router adds per hop", "router_adds_per_hop_us")
    print(
        f"{'throughput':<22} {t['messages_per_s_wall']:9.0f} msg/s wall, "
        f"{t['messages_per_router_cpu_s']:9.0f} msg/s per router CPU second (target >= 50000)"
    )
    pct("remote node call", "remote_node_call_us")
    RESULTS.mkdir(exist_ok=True)
    name = "router.json" if args.transport == "ipc" else f"router-{args.transport}.json"
    (RESULTS / name).write_text(json.dumps(r, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
