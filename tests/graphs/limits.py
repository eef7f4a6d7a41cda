"""Runs that stop early: recursion limits and interrupts without a checkpointer."""

import time

from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, Send

from ._common import Log, LogN, case


@case(config={"recursion_limit": 4})
def recursion_limit_loop():
    g = StateGraph(LogN)
    g.add_node("inc", lambda s: {"n": s["n"] + 1, "log": [s["n"]]})
    g.add_edge(START, "inc")
    g.add_conditional_edges("inc", lambda s: END if s["n"] >= 50 else "inc")
    return g, {"log": [], "n": 0}


@case(config={"recursion_limit": 5})
def recursion_limit_send_chain():
    # an endless Send chain: run-ahead must not run past the recursion limit
    g = StateGraph(Log)
    g.add_node(
        "hop", lambda p: Command(update={"log": [p["d"]]}, goto=Send("hop", {"d": p["d"] + 1}))
    )
    g.add_conditional_edges(START, lambda s: Send("hop", {"d": 0}))
    return g, {"log": []}


@case()
def interrupt_without_checkpointer_ends_run():
    from langgraph.types import interrupt

    def ask(p):
        # the run's final __interrupt__ is the last one raised: a race unless ordered
        time.sleep(0.05 * p["i"])
        answer = interrupt({"question": f"ok {p['i']}?"})
        return {"log": [answer]}

    g = StateGraph(Log)
    g.add_node("a", lambda s: {"log": ["a"]})
    g.add_node("b", lambda p: Command(goto=[Send("ask", p)]))
    g.add_node("ask", ask)
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("b", {"i": i}) for i in range(2)])
    return g, {"log": []}
