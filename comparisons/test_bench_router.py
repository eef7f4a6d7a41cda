"""pytest-benchmark: the router's forwarding, and one node call through the process executor.

    python -m pytest comparisons --benchmark-only -k router

``round trip via router`` is two router hops (client -> router -> echo instance ->
router -> client); ``direct`` is the same echo without the router, so the difference
is what forwarding costs. comparisons/router.py reports the same as per-hop
percentiles and messages per second.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import router as bench
from langgraph.graph import START, StateGraph

import alto_langgraph  # noqa: F401
from alto_langgraph.process import wire


@pytest.fixture(scope="module")
def sockets() -> Iterator[dict[str, Any]]:
    started = bench.start("ipc")  # a router with a deployment's credentials
    try:
        yield started
    finally:
        bench.stop(started)


@pytest.mark.parametrize("path", ["via", "direct"])
def test_round_trip(benchmark: Any, sockets: dict[str, Any], path: str) -> None:
    benchmark.group = "router round trip (two hops via the router)"
    sock = sockets[path]
    env = wire.envelope(wire.TASK, b"1", b"echo")
    frames = [env, bench.PAYLOAD]
    if path == "direct":
        frames = [b"direct", b"client", *frames]

    def once() -> list[bytes]:
        sock.send_multipart(frames)
        return sock.recv_multipart()

    reply = benchmark.pedantic(once, rounds=2000, warmup_rounds=200)
    assert reply[-1] == bench.PAYLOAD


def test_remote_node_call(benchmark: Any) -> None:
    benchmark.group = "one no-op node call through the process executor"
    g = StateGraph(bench.Counter)
    g.add_node("noop", lambda s: {"n": 1})
    g.add_edge(START, "noop")
    # executor="process": the default ("auto") would keep this node in the app process
    with g.compile(backend="alto", executor="process", start="compile") as app:
        node = app.nodes["noop"].bound
        result = benchmark.pedantic(
            lambda: node.invoke({"n": 0}, {}), rounds=1000, warmup_rounds=100
        )
    assert result == {"n": 1}
