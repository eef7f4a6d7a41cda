"""Stream modes: values, custom writers, chat-model messages and generator nodes."""

import time
from typing import Annotated

from langchain_core.messages import AIMessage
from langgraph.config import get_stream_writer
from langgraph.graph import START, StateGraph, add_messages
from langgraph.types import Send
from typing_extensions import TypedDict

from ._common import Log, _append, case


@case(stream_mode="values", ordered=True)
def stream_values_per_step():
    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node("w", lambda p: (time.sleep(0.003 * (3 - p["i"])), {"log": [p["i"]]})[1])
    g.add_node("z", _append("z"))
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("w", {"i": i}) for i in range(3)])
    g.add_edge("w", "z")
    return g, {"log": []}


@case(stream_mode=["custom", "updates"])
def stream_custom_writer():
    def a(s):
        w = get_stream_writer()
        w({"progress": "a started"})
        return {"log": ["a"]}

    def item(p):
        get_stream_writer()({"item": p["i"]})
        return {"log": [p["i"]]}

    g = StateGraph(Log)
    g.add_node("a", a)
    g.add_node("item", item)
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("item", {"i": i}) for i in range(3)])
    return g, {"log": []}


@case(stream_mode="messages")
def stream_messages_from_chat_model():
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

    class S(TypedDict):
        messages: Annotated[list, add_messages]

    def call(p):
        model = GenericFakeChatModel(
            messages=iter([AIMessage(content=f"tok{p['i']} a b", id=f"m{p['i']}")])
        )
        return {"messages": [model.invoke("hi")]}

    g = StateGraph(S)
    g.add_node("a", lambda s: {"messages": []})
    g.add_node("call", call)
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("call", {"i": i}) for i in range(2)])
    return g, {"messages": []}


@case()
def generator_node_keeps_last_chunk():
    def gen(s):
        yield {"log": ["first"]}
        yield {"log": ["second"]}

    g = StateGraph(Log)
    g.add_node("gen", gen)
    g.add_edge(START, "gen")
    return g, {"log": []}
