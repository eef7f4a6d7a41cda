"""Deferred nodes (defer=True) after waiting edges and Sends."""

from langgraph.graph import START, StateGraph
from langgraph.types import Command, Send

from ._common import Log, _append, case


@case()
def defer_node_runs_once_at_end():
    g = StateGraph(Log)
    for n in ("a", "b", "b2", "x"):
        g.add_node(n, _append(n))
    g.add_node("d", lambda s: {"log": [f"d saw {len(s['log'])}"]}, defer=True)
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("b", "b2")
    g.add_edge("b2", "d")
    g.add_edge("a", "x")
    g.add_edge("x", "d")
    return g, {"log": []}


@case()
def defer_after_sends():
    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node(
        "w",
        lambda p: Command(
            update={"log": [f"w{p['i']}"]},
            goto=[Send("w", {"i": p["i"] + 10})] if p["i"] < 10 else [],
        ),
    )
    g.add_node("final", lambda s: {"log": [f"final saw {len(s['log'])}"]}, defer=True)
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("w", {"i": i}) for i in range(3)])
    g.add_edge("a", "final")
    return g, {"log": []}
