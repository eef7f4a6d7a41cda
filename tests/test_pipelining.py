"""Pipelining, asserted by order rather than time (events inside the nodes).

In a nested fan-out, a fast branch's downstream task must start while a slow sibling
is still running; under stock LangGraph it cannot (the superstep barrier), which the
same graphs show as a contrast.
"""

from __future__ import annotations

import asyncio
import operator
import threading
from typing import Annotated, Any

import pytest
from langgraph.graph import START, StateGraph
from langgraph.types import Command, Send
from typing_extensions import TypedDict

import alto_langgraph  # noqa: F401

WAIT = 2.0  # how long the slow sibling waits for the fast branch's downstream task


class S(TypedDict):
    log: Annotated[list, operator.add]


def nested_fanout(via: str) -> tuple[StateGraph, dict[str, Any]]:
    """a -> b0 (fast), b1 (slow) -> c per b -> d. b1 finishes only once c0 has started
    (or after WAIT seconds), and reports which happened."""
    c0_started = asyncio.Event()
    events: list[str] = []

    async def b(p: dict) -> Any:
        events.append(f"b{p['i']} start")
        if p["i"] == 1:
            try:
                await asyncio.wait_for(c0_started.wait(), WAIT)
                seen = "c0 started before b1 finished"
            except TimeoutError:
                seen = "c0 had not started"
        else:
            seen = "fast"
        events.append(f"b{p['i']} end")
        update = {"log": [f"b{p['i']}: {seen}"]}
        if via == "command":
            return Command(update=update, goto=[Send("c", {"i": p["i"]})])
        return update

    async def c(p: dict) -> dict:
        events.append(f"c{p['i']} start")
        if p["i"] == 0:
            c0_started.set()
        return {"log": [f"c{p['i']}"]}

    async def d(s: S) -> dict:
        events.append("d start")
        return {"log": ["d"]}

    g = StateGraph(S)
    g.add_node("a", lambda s: {"log": ["a"]})
    g.add_node("b", b)
    g.add_node("c", c)
    g.add_node("d", d)
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("b", {"i": i}) for i in range(2)])
    if via == "edge":
        g.add_conditional_edges("b", _send_c_from_payload)
    g.add_edge("c", "d")
    return g, {"events": events}


def _send_c_from_payload(state: S) -> list[Send]:
    # the router sees the pre-step state plus its own task's update: the last b entry
    tags = [x for x in state["log"] if isinstance(x, str) and x.startswith("b")]
    return [Send("c", {"i": int(t[1])}) for t in tags[-1:]]


@pytest.mark.parametrize("via", ["command", "edge"])
async def test_fast_branch_runs_ahead_of_slow_sibling(via: str) -> None:
    g, probe = nested_fanout(via)
    out = await g.compile(backend="alto", executor="inline").ainvoke({"log": []})
    assert "b1: c0 started before b1 finished" in out["log"]
    events = probe["events"]
    assert events.index("c0 start") < events.index("b1 end")
    # d is a pull task triggered by the first c to finish: it reads nothing of the
    # state, so it runs ahead of c1 (the other task of c0's step) and is adopted
    assert events.index("d start") > events.index("c0 start")
    assert out["log"][-1] == "d"


async def test_stock_langgraph_has_the_barrier() -> None:
    g, probe = nested_fanout("command")
    out = await g.compile().ainvoke({"log": []})
    assert "b1: c0 had not started" in out["log"]
    assert probe["events"].index("c0 start") > probe["events"].index("b1 end")


def test_sync_nodes_run_ahead_too() -> None:
    c0_started = threading.Event()

    def b(p: dict) -> Command:
        seen = "fast"
        if p["i"] == 1:
            seen = "ahead" if c0_started.wait(WAIT) else "barrier"
        return Command(update={"log": [f"b{p['i']}:{seen}"]}, goto=[Send("c", {"i": p["i"]})])

    def c(p: dict) -> dict:
        if p["i"] == 0:
            c0_started.set()
        return {"log": [f"c{p['i']}"]}

    g = StateGraph(S)
    g.add_node("b", b)
    g.add_node("c", c)
    g.add_conditional_edges(START, lambda s: [Send("b", {"i": i}) for i in range(2)])
    out = g.compile(backend="alto", executor="inline").invoke({"log": []})
    assert "b1:ahead" in out["log"]
    # reducer order is task-path order, not completion order
    assert out["log"] == ["b0:fast", "b1:ahead", "c0", "c1"]


async def test_send_chain_runs_ahead_across_several_steps() -> None:
    """A chain of Sends three steps deep finishes while a sibling of its root waits."""
    leaf_done = asyncio.Event()

    async def hop(p: dict) -> Any:
        if p["slow"]:
            try:
                await asyncio.wait_for(leaf_done.wait(), WAIT)
                return {"log": ["slow saw the leaf"]}
            except TimeoutError:
                return {"log": ["slow timed out"]}
        if p["depth"] == 3:
            leaf_done.set()
            return {"log": ["leaf"]}
        return Command(goto=[Send("hop", {"slow": False, "depth": p["depth"] + 1})])

    g = StateGraph(S)
    g.add_node("hop", hop)
    g.add_conditional_edges(
        START,
        lambda s: [
            Send("hop", {"slow": False, "depth": 0}),
            Send("hop", {"slow": True, "depth": 0}),
        ],
    )
    out = await g.compile(backend="alto", executor="inline").ainvoke({"log": []})
    assert sorted(out["log"]) == ["leaf", "slow saw the leaf"]
