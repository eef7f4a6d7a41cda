"""Failures: retry policies, raising nodes, error handlers and node timeouts."""

import asyncio
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, RetryPolicy, Send

from ._common import ASYNC, Log, _append, _sibling_of_a, case


@case()
def retry_policy_recovers():
    attempts = {"n": 0}

    def flaky(s):
        attempts["n"] += 1
        if attempts["n"] < 3:
            raise ConnectionError(f"attempt {attempts['n']}")
        return {"log": [f"ok after {attempts['n']}"]}

    g = StateGraph(Log)
    g.add_node(
        "flaky",
        flaky,
        retry_policy=RetryPolicy(max_attempts=3, initial_interval=0.001, jitter=False),
    )
    g.add_edge(START, "flaky")
    return g, {"log": []}


@case()
def retry_policy_on_send_target():
    attempts: dict[int, int] = {}

    def flaky(p):
        attempts[p["i"]] = attempts.get(p["i"], 0) + 1
        if attempts[p["i"]] < 2:
            raise ConnectionError("transient")
        return {"log": [f"w{p['i']} after {attempts[p['i']]}"]}

    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node(
        "w", flaky, retry_policy=RetryPolicy(max_attempts=2, initial_interval=0.001, jitter=False)
    )
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("w", {"i": i}) for i in range(3)])
    return g, {"log": []}


@case()
def retry_policy_exhausted_raises():
    def broken(s):
        raise ConnectionError("still down")

    g = StateGraph(Log)
    g.add_node(
        "broken",
        broken,
        retry_policy=RetryPolicy(max_attempts=2, initial_interval=0.001, jitter=False),
    )
    g.add_edge(START, "broken")
    return g, {"log": []}


@case()
def node_raises():
    def boom(s):
        raise ValueError("node boom failed on purpose")

    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node("boom", boom)
    g.add_edge(START, "a")
    g.add_edge("a", "boom")
    return g, {"log": []}


@case()
def send_target_raises():
    def w(p):
        if p["i"] == 1:
            raise KeyError(f"item {p['i']}")
        return {"log": [p["i"]]}

    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node("w", w)
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("w", {"i": i}) for i in range(3)])
    return g, {"log": []}


@case()
def nested_send_target_raises():
    def b(p):
        return Command(goto=[Send("c", {"i": p["i"]})])

    def c(p):
        if p["i"] == 2:
            raise RuntimeError("c2 failed")
        return {"log": [p["i"]]}

    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node("b", b)
    g.add_node("c", c)
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("b", {"i": i}) for i in range(3)])
    return g, {"log": []}


@case()
def node_error_handler_on_send_target():
    from langgraph.errors import NodeError

    def w(p):
        if p["i"] == 1:
            raise ValueError("w1 broke")
        return {"log": [f"w{p['i']}"]}

    def handler(state: Any, error: NodeError) -> dict:
        return {"log": [f"handled {type(error.error).__name__}"]}

    g = StateGraph(Log)
    g.add_node("a", lambda s: {"log": ["a"]})
    g.add_node("b", lambda p: Command(goto=[Send("w", p)]))
    g.add_node("w", w, error_handler=handler)
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("b", {"i": i}) for i in range(3)])
    return g, {"log": []}


@case(styles=ASYNC)
def node_timeout_on_send_target():
    async def slow(p):
        await asyncio.sleep(0.5 if p["i"] == 1 else 0.0)
        return {"log": [f"s{p['i']}"]}

    g = StateGraph(Log)
    g.add_node("a", lambda s: {"log": ["a"]})
    g.add_node("b", lambda p: Command(goto=[Send("slow", p)]))
    g.add_node("slow", slow, timeout=0.05)
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("b", {"i": i}) for i in range(2)])
    return g, {"log": []}


@case()
def retry_covers_conditional_edge_of_send_target():
    # a flaky router: LangGraph retries the whole task (node and edges)
    failed = set()
    lock = __import__("threading").Lock()

    def route(s):
        with lock:
            first = len(failed) < 2
            failed.add(len(failed))
        if first:
            raise ValueError("flaky router")
        return END

    g = StateGraph(Log)
    _sibling_of_a(g)
    g.add_node(
        "w",
        lambda p: {"log": [f"w{p['i']}"]},
        retry_policy=RetryPolicy(max_attempts=3, initial_interval=0.001, jitter=False),
    )
    g.add_conditional_edges("a", lambda s: [Send("w", {"i": i}) for i in range(2)])
    g.add_conditional_edges("w", route)
    return g, {"log": []}
