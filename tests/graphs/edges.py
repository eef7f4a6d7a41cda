"""Plain edges: chains, sequences, fan-out/fan-in and waiting edges."""

from langgraph.graph import END, START, StateGraph

from ._common import ASYNC, Log, _aappend, _append, case


@case()
def chain_sync():
    g = StateGraph(Log)
    for n in "abcd":
        g.add_node(n, _append(n))
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("b", "c")
    g.add_edge("c", "d")
    g.add_edge("d", END)
    return g, {"log": []}


@case(styles=ASYNC)
def chain_async():
    g = StateGraph(Log)
    for n in "abc":
        g.add_node(n, _aappend(n))
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("b", "c")
    return g, {"log": ["start"]}


@case(styles=ASYNC)
def mixed_sync_async():
    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node("b", _aappend("b", 0.01))
    g.add_node("c", _append("c", 0.005))
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("a", "c")
    return g, {"log": []}


@case()
def add_sequence():
    g = StateGraph(Log)
    g.add_sequence([_append("s1"), _append("s2"), _append("s3")])
    g.add_edge(START, "s1")
    return g, {"log": []}


@case()
def fan_out_fan_in_plain_edges():
    # b and c run in one step, so d (plain edges from both) runs once
    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node("b", _append("b", 0.02))
    g.add_node("c", _append("c"))
    g.add_node("d", lambda s: {"log": [f"d saw {len(s['log'])}"]})
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("a", "c")
    g.add_edge("b", "d")
    g.add_edge("c", "d")
    return g, {"log": []}


@case()
def multi_source_edges_across_steps():
    # d is reached from x at step 3 and from b2 at step 4: it runs twice
    g = StateGraph(Log)
    for n in ("a", "b", "b2", "x"):
        g.add_node(n, _append(n))
    g.add_node("d", lambda s: {"log": [f"d saw {len(s['log'])}"]})
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("b", "b2")
    g.add_edge("b2", "d")
    g.add_edge("a", "x")
    g.add_edge("x", "d")
    return g, {"log": []}


@case()
def waiting_edge():
    g = StateGraph(Log)
    for n in ("a", "b", "b2", "x"):
        g.add_node(n, _append(n))
    g.add_node("d", lambda s: {"log": [f"d saw {len(s['log'])}"]})
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("b", "b2")
    g.add_edge("a", "x")
    g.add_edge(["b2", "x"], "d")
    return g, {"log": []}


@case()
def waiting_edge_from_start_parallel():
    g = StateGraph(Log)
    g.add_node("up", _append("up", 0.01))
    g.add_node("side", _append("side"))
    g.add_node("down", _append("down"))
    g.add_edge(START, "up")
    g.add_edge(START, "side")
    g.add_edge(["up", "side"], "down")
    return g, {"log": []}
