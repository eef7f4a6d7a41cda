"""Send: map-reduce, nested Sends and Send targets with conditional edges."""

import asyncio
import operator
import time
from typing import Annotated

from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, Send
from typing_extensions import TypedDict

from ._common import ASYNC, Log, _aappend, _append, _sibling_of_a, case


class Item(TypedDict):
    i: int


@case()
def send_map_reduce():
    g = StateGraph(Log)
    g.add_node("split", _append("split"))
    g.add_node("work", lambda p: (time.sleep(0.01 * (3 - p["i"])), {"log": [f"w{p['i']}"]})[1])
    g.add_node("reduce", lambda s: {"log": [f"reduce saw {len(s['log'])}"]})
    g.add_edge(START, "split")
    g.add_conditional_edges("split", lambda s: [Send("work", {"i": i}) for i in range(4)])
    g.add_edge("work", "reduce")
    return g, {"log": []}


@case()
def send_with_node_input_schema():
    def work(p: Item) -> dict:
        return {"log": [p["i"] * 10]}

    g = StateGraph(Log)
    g.add_node("split", _append("split"))
    g.add_node("work", work, input_schema=Item)
    g.add_edge(START, "split")
    g.add_conditional_edges("split", lambda s: [Send("work", {"i": i}) for i in range(3)])
    return g, {"log": []}


@case()
def send_from_start():
    g = StateGraph(Log)
    g.add_node("work", lambda p: {"log": [p["i"]]})
    g.add_conditional_edges(START, lambda s: [Send("work", {"i": i}) for i in range(3)])
    return g, {"log": []}


@case()
def send_mixed_with_node_names():
    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node("pull", _append("pull"))
    g.add_node("push", lambda p: {"log": [f"push{p['i']}"]})
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: ["pull", Send("push", {"i": 1}), Send("push", {"i": 2})])
    return g, {"log": []}


@case(styles=ASYNC)
def nested_send_conditional_edges():
    async def b(p):
        await asyncio.sleep(0.01 * (3 - p["i"]))
        return {"log": [f"b{p['i']}"]}

    async def c(p):
        await asyncio.sleep(0.01 * (1 + p["i"]))
        return {"log": [f"c{p['i']}.{p['j']}"]}

    g = StateGraph(Log)
    g.add_node("a", _aappend("a"))
    g.add_node("b", b)
    g.add_node("c", c)
    g.add_node("d", lambda s: {"log": [f"d saw {len(s['log'])}"]})
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("b", {"i": i}) for i in range(3)])
    g.add_conditional_edges(
        "b", lambda s: [Send("c", {"i": len(s["log"]), "j": j}) for j in range(2)]
    )
    g.add_edge("c", "d")
    return g, {"log": []}


@case(styles=ASYNC)
def nested_send_command_goto():
    b_delay, c_delay = [0.03, 0.015, 0.0], [0.0, 0.015, 0.03]

    async def b(p):
        await asyncio.sleep(b_delay[p["i"]])
        return Command(
            update={"log": [f"b{p['i']}"]},
            goto=[Send("c", {"i": p["i"], "j": j}) for j in range(2)],
        )

    async def c(p):
        await asyncio.sleep(c_delay[p["i"]])
        return {"log": [f"c{p['i']}.{p['j']}"]}

    g = StateGraph(Log)
    g.add_node("a", _aappend("a"))
    g.add_node("b", b)
    g.add_node("c", c)
    g.add_node("d", lambda s: {"log": ["d"]})
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("b", {"i": i}) for i in range(3)])
    g.add_edge("c", "d")
    return g, {"log": []}


@case()
def send_chain_depth_four():
    def hop(p):
        time.sleep(0.002 * (4 - p["d"]) * (1 + p["k"]))
        if p["d"] == 3:
            return {"log": [p["path"]]}
        return Command(
            goto=[
                Send("hop", {"d": p["d"] + 1, "k": k, "path": p["path"] + str(k)}) for k in range(2)
            ]
        )

    g = StateGraph(Log)
    g.add_node("hop", hop)
    g.add_conditional_edges(START, lambda s: [Send("hop", {"d": 0, "k": 0, "path": "r"})])
    return g, {"log": []}


@case()
def send_target_with_conditional_edge_reading_state():
    # a run-ahead task's conditional edge must see its step's pre-step state: here,
    # every b's update (b runs in the step before c), not just the fast ones.
    class S(TypedDict):
        log: Annotated[list, operator.add]
        routes: Annotated[list, operator.add]

    def b(p):
        time.sleep(0.02 if p["i"] == 0 else 0.0)
        return Command(update={"log": [f"b{p['i']}"]}, goto=[Send("c", {"i": p["i"]})])

    def c(p):
        time.sleep(0.0 if p["i"] == 0 else 0.01)
        return {"log": [f"c{p['i']}"]}

    g = StateGraph(S)
    g.add_node("a", lambda s: {"log": ["a"]})
    g.add_node("b", b)
    g.add_node("c", c)
    g.add_node("e", lambda s: {"routes": ["e"]})
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("b", {"i": i}) for i in range(3)])
    g.add_conditional_edges("c", lambda s: Send("e", {}) if len(s["log"]) >= 4 else END)
    return g, {"log": [], "routes": []}


@case()
def send_same_payload_object_twice():
    shared = {"i": 7}
    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node("w", lambda p: {"log": [p["i"]]})
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("w", shared), Send("w", shared)])
    return g, {"log": []}


@case()
def concurrent_emitters_pull_and_push():
    # two emitters of Sends plus a pull node in the same step: PULL before PUSH,
    # Sends in emission order
    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node(
        "e1",
        lambda s: Command(update={"log": ["e1"]}, goto=[Send("w", {"i": 1}), Send("w", {"i": 2})]),
    )
    g.add_node("e2", lambda s: Command(update={"log": ["e2"]}, goto=[Send("w", {"i": 3})]))
    g.add_node("w", lambda p: {"log": [f"w{p['i']}"]})
    g.add_node("pull", _append("pull"))
    g.add_edge(START, "a")
    g.add_edge("a", "e1")
    g.add_edge("a", "e2")
    g.add_edge("e1", "pull")
    return g, {"log": []}


@case()
def send_target_with_conditional_edge_and_command_sends():
    def b(p):
        time.sleep(0.01 * p["i"])
        return Command(update={"log": [f"b{p['i']}"]}, goto=[Send("c", {"i": p["i"]})])

    g = StateGraph(Log)
    _sibling_of_a(g)
    g.add_node("b", b)
    g.add_node("c", lambda p: {"log": [f"c{p['i']}"]})
    g.add_conditional_edges("a", lambda s: [Send("b", {"i": i}) for i in range(2)])
    g.add_conditional_edges("b", lambda s: END)
    return g, {"log": []}
