"""Channels and reducers: LastValue, custom reducers, add_messages, Topic, Ephemeral, managed."""

import operator
import time
from typing import Annotated

from langchain_core.messages import AIMessage, HumanMessage
from langgraph.channels import EphemeralValue, Topic
from langgraph.graph import START, StateGraph, add_messages
from langgraph.managed import RemainingSteps
from langgraph.types import Send
from typing_extensions import TypedDict

from ._common import case


@case()
def last_value_conflict_raises():
    class S(TypedDict):
        x: int

    g = StateGraph(S)
    g.add_node("a", lambda s: {"x": 1})
    g.add_node("b", lambda s: {"x": 2})
    g.add_node("c", lambda s: {"x": 3})
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("a", "c")
    return g, {"x": 0}


@case()
def last_value_conflict_from_sends():
    class S(TypedDict):
        x: int

    g = StateGraph(S)
    g.add_node("a", lambda s: {"x": 1})
    g.add_node("w", lambda p: {"x": p["i"]})
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("w", {"i": i}) for i in range(2)])
    return g, {"x": 0}


@case()
def last_value_single_writer_per_step():
    class S(TypedDict):
        x: int
        log: Annotated[list, operator.add]

    g = StateGraph(S)
    g.add_node("a", lambda s: {"x": s["x"] + 1})
    g.add_node("b", lambda s: {"x": s["x"] * 10, "log": [s["x"]]})
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    return g, {"x": 1, "log": []}


@case()
def order_sensitive_custom_reducer():
    def concat(a: str, b: str) -> str:
        return a + b

    class S(TypedDict):
        s: Annotated[str, concat]

    def w(p):
        time.sleep(0.003 * (5 - p["i"]))
        return {"s": str(p["i"])}

    g = StateGraph(S)
    g.add_node("a", lambda s: {"s": "a"})
    g.add_node("w", w)
    g.add_node("z", lambda s: {"s": "z"})
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("w", {"i": i}) for i in range(5)])
    g.add_edge("w", "z")
    return g, {"s": ""}


@case()
def add_messages_reducer():
    class S(TypedDict):
        messages: Annotated[list, add_messages]

    g = StateGraph(S)
    g.add_node(
        "bot", lambda s: {"messages": [AIMessage(content=f"echo {len(s['messages'])}", id="ai-1")]}
    )
    g.add_node("edit", lambda s: {"messages": [AIMessage(content="edited", id="ai-1")]})
    g.add_edge(START, "bot")
    g.add_edge("bot", "edit")
    return g, {"messages": [HumanMessage(content="hi", id="h-1")]}


@case()
def topic_channel_accumulate():
    class S(TypedDict):
        events: Annotated[list, Topic(str, accumulate=True)]

    g = StateGraph(S)
    g.add_node("a", lambda s: {"events": "a"})
    g.add_node("b", lambda s: {"events": ["b1", "b2"]})
    g.add_node("c", lambda s: {"events": "c"})
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("a", "c")
    return g, {"events": []}


@case()
def topic_channel_per_step():
    class S(TypedDict):
        events: Annotated[list, Topic(str)]
        log: Annotated[list, operator.add]

    g = StateGraph(S)
    g.add_node("a", lambda s: {"events": "a", "log": ["a"]})
    g.add_node("b", lambda s: {"log": [list(s["events"])]})
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    return g, {"events": [], "log": []}


@case()
def ephemeral_value_channel():
    class S(TypedDict):
        log: Annotated[list, operator.add]
        flash: Annotated[str, EphemeralValue]

    g = StateGraph(S)
    g.add_node("a", lambda s: {"flash": "hello", "log": ["a"]})
    g.add_node("b", lambda s: {"log": [s.get("flash")]})
    g.add_node("c", lambda s: {"log": [s.get("flash")]})
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("b", "c")
    return g, {"log": []}


@case()
def remaining_steps_managed_value():
    class S(TypedDict):
        log: Annotated[list, operator.add]
        remaining: RemainingSteps

    g = StateGraph(S)
    g.add_node("a", lambda s: {"log": [s["remaining"]]})
    g.add_node("b", lambda s: {"log": [s["remaining"]]})
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    return g, {"log": []}
