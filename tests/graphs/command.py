"""Command returned from nodes: update with goto, lists of Commands, goto END."""

from typing import Literal

from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, Send

from ._common import Log, _append, case


@case()
def command_update_and_goto():
    def a(s) -> Command[Literal["b", "c"]]:
        return Command(update={"log": ["a"]}, goto="c")

    g = StateGraph(Log)
    g.add_node("a", a)
    g.add_node("b", _append("b"))
    g.add_node("c", _append("c"))
    g.add_edge(START, "a")
    return g, {"log": []}


@case()
def command_list_of_commands():
    def a(s):
        return [
            Command(update={"log": ["a1"]}, goto="b"),
            Command(update={"log": ["a2"]}, goto="c"),
        ]

    g = StateGraph(Log)
    g.add_node("a", a)
    g.add_node("b", _append("b"))
    g.add_node("c", _append("c"))
    g.add_edge(START, "a")
    return g, {"log": []}


@case()
def command_goto_end():
    g = StateGraph(Log)
    g.add_node("a", lambda s: Command(update={"log": ["a"]}, goto=END))
    g.add_node("b", _append("b"))
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    return g, {"log": []}


@case()
def command_send_with_command_payload():
    g = StateGraph(Log)
    g.add_node("a", lambda s: Command(goto=[Send("b", {"i": 1}), Send("b", {"i": 2})]))
    g.add_node(
        "b", lambda p: Command(update={"log": [f"b{p['i']}"]}, goto="c" if p["i"] == 2 else END)
    )
    g.add_node("c", lambda s: {"log": [f"c saw {len(s['log'])}"]})
    g.add_edge(START, "a")
    return g, {"log": []}
