"""Conditional edges: path maps, routers, entry points and loops."""

import operator
from typing import Annotated, Literal

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from ._common import Log, LogN, _append, case


@case()
def conditional_with_path_map():
    g = StateGraph(LogN)
    g.add_node("a", lambda s: {"log": ["a"], "n": s["n"] + 1})
    g.add_node("even", _append("even"))
    g.add_node("odd", _append("odd"))
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: s["n"] % 2 == 0, {True: "even", False: "odd"})
    return g, {"log": [], "n": 1}


@case()
def conditional_without_path_map():
    g = StateGraph(LogN)
    g.add_node("a", lambda s: {"log": ["a"]})
    g.add_node("left", _append("left"))
    g.add_node("right", _append("right"))
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: "left" if s["n"] > 0 else "right")
    return g, {"log": [], "n": 3}


@case()
def conditional_literal_annotation():
    def route(s: LogN) -> Literal["x", "y"]:
        return "y"

    g = StateGraph(LogN)
    g.add_node("a", _append("a"))
    g.add_node("x", _append("x"))
    g.add_node("y", _append("y"))
    g.add_edge(START, "a")
    g.add_conditional_edges("a", route)
    return g, {"log": [], "n": 0}


@case()
def conditional_to_many_nodes():
    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    for n in ("p", "q", "r"):
        g.add_node(n, _append(n))
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: ["p", "r"])
    return g, {"log": []}


@case()
def conditional_to_end():
    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node("never", _append("never"))
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: END, ["never", END])
    return g, {"log": []}


@case()
def conditional_entry_point():
    g = StateGraph(LogN)
    g.add_node("small", _append("small"))
    g.add_node("big", _append("big"))
    g.add_conditional_edges(START, lambda s: "big" if s["n"] > 10 else "small")
    return g, {"log": [], "n": 11}


@case()
def loop_until_counter():
    g = StateGraph(LogN)
    g.add_node("inc", lambda s: {"n": s["n"] + 1, "log": [s["n"]]})
    g.add_edge(START, "inc")
    g.add_conditional_edges("inc", lambda s: END if s["n"] >= 5 else "inc")
    return g, {"log": [], "n": 0}


@case()
def router_sees_own_writes_only():
    # the router of b sees pre-step state + b's own writes, not c's
    class S(TypedDict):
        log: Annotated[list, operator.add]
        seen: Annotated[list, operator.add]

    g = StateGraph(S)
    g.add_node("a", lambda s: {"log": ["a"]})
    g.add_node("b", lambda s: {"log": ["b"]})
    g.add_node("c", lambda s: {"log": ["c"]})
    g.add_node("z", lambda s: {"seen": ["z"]})
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("a", "c")
    g.add_conditional_edges("b", lambda s: "z" if s["log"] == ["a", "b"] else END)
    return g, {"log": [], "seen": []}
