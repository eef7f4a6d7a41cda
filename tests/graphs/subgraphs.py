"""Subgraphs: as nodes, as Send targets, invoked inside nodes, Command.PARENT."""

import operator
import time
from typing import Annotated

from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, Send
from typing_extensions import TypedDict

from ._common import Log, _append, _sibling_of_a, case


def _inner_graph():
    g = StateGraph(Log)
    g.add_node("i1", _append("i1"))
    g.add_node("i2", _append("i2"))
    g.add_edge(START, "i1")
    g.add_edge("i1", "i2")
    return g.compile()


@case()
def subgraph_as_node():
    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node("sub", _inner_graph())
    g.add_node("z", lambda s: {"log": [f"z saw {len(s['log'])}"]})
    g.add_edge(START, "a")
    g.add_edge("a", "sub")
    g.add_edge("sub", "z")
    return g, {"log": []}


@case(subgraphs=True)
def subgraph_streams_with_namespaces():
    g = StateGraph(Log)
    g.add_node("sub", _inner_graph())
    g.add_edge(START, "sub")
    return g, {"log": ["x"]}


@case()
def subgraph_per_send_item():
    class Inner(TypedDict):
        i: int
        log: Annotated[list, operator.add]

    inner = StateGraph(Inner)
    inner.add_node(
        "fetch", lambda s: (time.sleep(0.002 * (3 - s["i"])), {"log": [f"f{s['i']}"]})[1]
    )
    inner.add_node("rank", lambda s: {"log": [f"r{s['i']}"]})
    inner.add_edge(START, "fetch")
    inner.add_edge("fetch", "rank")

    def per_item(p):
        out = inner_app.invoke({"i": p["i"], "log": []})
        return {"log": out["log"]}

    inner_app = inner.compile()
    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node("item", per_item)
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("item", {"i": i}) for i in range(3)])
    return g, {"log": []}


@case()
def subgraph_with_sends_inside():
    inner = StateGraph(Log)
    inner.add_node("w", lambda p: {"log": [f"inner{p['i']}"]})
    inner.add_conditional_edges(START, lambda s: [Send("w", {"i": i}) for i in range(3)])
    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node("sub", inner.compile())
    g.add_edge(START, "a")
    g.add_edge("a", "sub")
    return g, {"log": []}


@case()
def send_to_subgraph_node():
    class Inner(TypedDict):
        i: int
        log: Annotated[list, operator.add]

    inner = StateGraph(Inner)
    inner.add_node("x", lambda s: (time.sleep(0.002 * (3 - s["i"])), {"log": [f"x{s['i']}"]})[1])
    inner.add_node(
        "y", lambda s: Command(goto=[Send("z", {"i": s["i"], "k": k, "log": []}) for k in range(2)])
    )
    inner.add_node("z", lambda p: {"log": [f"z{p['i']}.{p['k']}"]})
    inner.add_edge(START, "x")
    inner.add_edge("x", "y")

    g = StateGraph(Inner)
    g.add_node("a", lambda s: {"log": ["a"]})
    g.add_node("b", lambda p: Command(goto=[Send("sub", {"i": p["i"], "log": []})]))
    g.add_node("sub", inner.compile())
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("b", {"i": i, "log": []}) for i in range(3)])
    return g, {"i": 0, "log": []}


@case()
def command_parent_from_subgraph():
    inner = StateGraph(Log)
    inner.add_node(
        "jump", lambda s: Command(graph=Command.PARENT, goto="done", update={"log": ["jumped"]})
    )
    inner.add_edge(START, "jump")

    g = StateGraph(Log)
    g.add_node("a", lambda s: {"log": ["a"]})
    g.add_node("b", lambda p: Command(goto=[Send("sub", {"log": []})]))
    g.add_node("sub", inner.compile())
    g.add_node("done", lambda s: {"log": [f"done saw {len(s['log'])}"]})
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("b", {}) for _ in range(2)])
    return g, {"log": []}


@case()
def parent_command_from_send_target_with_conditional_edge():
    inner = StateGraph(Log)
    inner.add_node(
        "jump", lambda s: Command(graph=Command.PARENT, goto="done", update={"log": ["jumped"]})
    )
    inner.add_edge(START, "jump")
    g = StateGraph(Log)
    _sibling_of_a(g)
    g.add_node("sub", inner.compile())
    g.add_node("done", lambda s: {"log": [f"done saw {len(s['log'])}"]})
    g.add_node("other", lambda s: {"log": ["other"]})
    g.add_conditional_edges("a", lambda s: [Send("sub", {"log": []}) for _ in range(2)])
    g.add_conditional_edges("sub", lambda s: "other" if len(s["log"]) > 100 else END)
    return g, {"log": []}


@case()
def stock_graph_invoked_inside_send_targets():
    # a graph compiled on stock LangGraph, run from inside alto's tasks (twins, tasks
    # the hook ran, tasks run inline): it must never see alto's runner hook
    inner = StateGraph(Log)
    inner.add_node("x", lambda p: {"log": [f"x{p['k']}"]})
    inner.add_conditional_edges(START, lambda s: [Send("x", {"k": k}) for k in range(2)])
    inner_app = inner.compile()

    def w(p):
        return {"log": inner_app.invoke({"log": [f"w{p['i']}"]})["log"]}

    g = StateGraph(Log)
    _sibling_of_a(g)
    g.add_node("w", w)
    g.add_node("z", lambda s: {"log": inner_app.invoke({"log": ["z"]})["log"]})
    g.add_conditional_edges("a", lambda s: [Send("w", {"i": i}) for i in range(2)])
    g.add_edge("w", "z")
    return g, {"log": []}
