"""Apps written as LangChain's and LangGraph's docs write them, on every placement, with
the answers of stock LangGraph: LangChain v1 ``create_agent``, ``create_react_agent``,
a ``ToolNode`` reached by ``Send`` with injected state, a module-level chat model,
``stream_mode="tools"`` and ``Runtime.control``."""

from __future__ import annotations

import asyncio
import operator
import threading
import time
import warnings
from typing import Annotated, Any

import pytest
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import InjectedState, ToolNode, ToolRuntime, create_react_agent
from langgraph.runtime import Runtime
from langgraph.types import Send
from pydantic import PrivateAttr
from typing_extensions import TypedDict

import alto_langgraph

EXECUTORS = ("auto", "inline", "process")


class ScriptedChatModel(BaseChatModel):
    """A tool-calling chat model without a network: it calls each of ``tools`` once,
    in parallel, then answers with what they returned. Like a real client it holds a
    lock, so it cannot be pickled (a module-level ``ChatOpenAI`` holds several)."""

    tools: list[str] = []
    args: dict[str, Any] = {}
    _lock: Any = PrivateAttr(default_factory=threading.RLock)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedChatModel:
        return self

    def _generate(
        self, messages: list[Any], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        with self._lock:
            if isinstance(messages[-1], ToolMessage):
                seen = [m.content for m in messages if isinstance(m, ToolMessage)]
                message = AIMessage(content="answer: " + " | ".join(seen))
            else:
                calls = [
                    {"name": t, "args": dict(self.args), "id": f"call-{i}", "type": "tool_call"}
                    for i, t in enumerate(self.tools)
                ]
                message = AIMessage(content="", tool_calls=calls)
        return ChatResult(generations=[ChatGeneration(message=message)])


@tool
def count_messages(query: str, state: Annotated[dict, InjectedState]) -> str:
    """How many messages the conversation has, and the user's first words."""
    first = next((m.content for m in state["messages"] if isinstance(m, HumanMessage)), None)
    return f"{len(state['messages'])} messages, first {first!r}"


@tool
def user_words(query: str, runtime: ToolRuntime) -> str:
    """The user's words, read through the tool runtime's state."""
    words = [m.content for m in runtime.state["messages"] if isinstance(m, HumanMessage)]
    return f"user said {words}"


@tool
def countdown(query: str, runtime: ToolRuntime) -> str:
    """Counts down, streaming each number as an output delta."""
    for i in (3, 2, 1):
        runtime.emit_output_delta(i)
    return "liftoff"


#: the module-level chat model apps hold (not picklable, as real clients are not)
llm = ScriptedChatModel(tools=["count_messages", "user_words"], args={"query": "q"})


def messages_of(out: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Messages without their random ids."""
    return [
        (type(m).__name__, m.content, [(c["name"], c["args"], c["id"]) for c in m.tool_calls])
        if isinstance(m, AIMessage)
        else (type(m).__name__, m.content, getattr(m, "tool_call_id", None))
        for m in out["messages"]
    ]


def create_agent_app() -> Any:
    from langchain.agents import create_agent

    return create_agent(llm, tools=[count_messages, user_words])


def react_agent_app() -> Any:
    with warnings.catch_warnings():  # moved to langchain.agents; apps still use it
        warnings.simplefilter("ignore", DeprecationWarning)
        return create_react_agent(llm, tools=[count_messages, user_words])


class Chat(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def tool_node_by_send_app() -> Any:
    """A node that fans tool calls out to a ToolNode with Send, as create_agent does."""

    def model(state: Chat) -> dict:
        return {"messages": [llm.invoke(state["messages"])]}

    def route(state: Chat) -> list[Send]:
        last = state["messages"][-1]
        return [Send("tools", [call]) for call in last.tool_calls]

    g = StateGraph(Chat)
    g.add_node("model", model)
    g.add_node("tools", ToolNode([count_messages, user_words]))
    g.add_edge(START, "model")
    g.add_conditional_edges("model", route, ["tools"])
    return g.compile()


APPS = {
    "create_agent": create_agent_app,
    "create_react_agent": react_agent_app,
    "tool_node_by_send": tool_node_by_send_app,
}


def _alto(stock_app: Any, executor: str) -> Any:
    """The app as users move it: the same compiled graph, compiled for alto. On the
    process executor the module-level model cannot travel, so the model node stays
    in the app process (``process=False``) while the tools run in workers."""
    if executor != "process":
        return alto_langgraph.compile(stock_app, executor=executor)
    stages = {n: {"process": False} for n in stock_app.nodes if n not in ("tools", "__start__")}
    return alto_langgraph.compile(stock_app, executor="process", stages=stages)


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("app", list(APPS))
@pytest.mark.parametrize("style", ["sync", "async"])
def test_tools_read_graph_state_as_on_stock(app: str, executor: str, style: str) -> None:
    inputs = {"messages": [HumanMessage("hello there")]}
    stock = APPS[app]()
    want = stock.invoke(inputs)
    with _alto(APPS[app](), executor) as alto:
        got = alto.invoke(inputs) if style == "sync" else asyncio.run(alto.ainvoke(inputs))
    assert messages_of(got) == messages_of(want)
    tool_outputs = [m.content for m in got["messages"] if isinstance(m, ToolMessage)]
    assert "2 messages, first 'hello there'" in tool_outputs  # the state at the tools' step
    assert "user said ['hello there']" in tool_outputs


def test_a_module_level_client_runs_by_default_and_is_named_on_a_process_stage() -> None:
    stock = create_agent_app()
    inputs = {"messages": [HumanMessage("hi")]}
    with alto_langgraph.compile(create_agent_app()) as alto:  # the default placement
        assert alto.deployment is None
        assert messages_of(alto.invoke(inputs)) == messages_of(stock.invoke(inputs))
    with alto_langgraph.compile(create_agent_app(), executor="process") as alto:
        with pytest.raises(alto_langgraph.ShippingError) as err:
            alto.invoke(inputs)
    # the message names the node, the object the node's code holds, and the lock in it
    message = str(err.value)
    assert "node 'model'" in message
    assert "ScriptedChatModel" in message and "RLock" in message


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("style", ["sync", "async"])
def test_tool_output_deltas_stream_as_on_stock(executor: str, style: str) -> None:
    from langchain.agents import create_agent

    def build() -> Any:
        model = ScriptedChatModel(tools=["countdown"], args={"query": "q"})
        return create_agent(model, tools=[countdown])

    def events(app: Any) -> list[tuple[str, Any]]:
        inputs = {"messages": [HumanMessage("go")]}
        if style == "sync":
            chunks = list(app.stream(inputs, stream_mode="tools"))
        else:

            async def collect() -> list[Any]:
                return [c async for c in app.astream(inputs, stream_mode="tools")]

            chunks = asyncio.run(collect())
        return [(c["event"], c.get("delta")) for c in chunks]

    want = events(build())
    assert ("tool-output-delta", 2) in want
    with _alto(build(), executor) as alto:
        assert events(alto) == want


class Work(TypedDict):
    done: Annotated[list, operator.add]


def _drainable() -> StateGraph:
    def slow(state: Work, runtime: Runtime) -> dict:
        for i in range(100):
            if runtime.control is not None and runtime.control.drain_requested:
                return {"done": [f"drained at {i}: {runtime.control.drain_reason}"]}
            time.sleep(0.02)
        return {"done": ["ran to the end"]}

    g = StateGraph(Work)
    g.add_node("slow", slow)
    g.add_edge(START, "slow")
    return g


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_drain_requested_while_a_node_runs_reaches_it(executor: str) -> None:
    from langgraph.runtime import RunControl

    stages = {"stages": {"slow": {"process": True}}} if executor == "auto" else {}
    with _drainable().compile(backend="alto", executor=executor, **stages) as app:
        app.invoke({"done": []})  # processes started: the drain below finds the node running
        control = RunControl()
        threading.Timer(0.3, control.request_drain, args=("shutdown",)).start()
        t0 = time.monotonic()
        out = app.invoke({"done": []}, control=control)
        assert out["done"][0].startswith("drained at")
        assert out["done"][0].endswith(": shutdown")
        assert time.monotonic() - t0 < 1.5  # not the 2 s of running to the end


def _parallel_senders() -> StateGraph:
    """model and slow run in one step; model's Send to the ToolNode may run ahead of
    that step, but the tool reads the state of the next step (slow's write included)."""

    def model(state: Chat) -> dict:
        return {"messages": [llm.invoke(state["messages"])]}

    def slow(state: Chat) -> dict:
        time.sleep(0.2)
        return {"messages": [HumanMessage("and one more thing")]}

    def route(state: Chat) -> list[Send]:
        return [Send("tools", [call]) for call in state["messages"][-1].tool_calls]

    g = StateGraph(Chat)
    g.add_node("model", model)
    g.add_node("slow", slow)
    g.add_node("tools", ToolNode([count_messages, user_words]))
    g.add_edge(START, "model")
    g.add_edge(START, "slow")
    g.add_conditional_edges("model", route, ["tools"])
    return g


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("style", ["sync", "async"])
def test_a_send_target_that_reads_state_waits_for_its_step(executor: str, style: str) -> None:
    """A run-ahead task that reads graph state would read it too early: it is dropped,
    and the node runs at its step (a miss), as on stock LangGraph."""
    inputs = {"messages": [HumanMessage("hello there")]}
    want = _parallel_senders().compile().invoke(inputs)
    stages = {"stages": {"model": {"process": False}}} if executor == "process" else {}
    with _parallel_senders().compile(backend="alto", executor=executor, **stages) as alto:
        got = alto.invoke(inputs) if style == "sync" else asyncio.run(alto.ainvoke(inputs))
    assert messages_of(got) == messages_of(want)
    assert "3 messages, first 'hello there'" in [
        m.content for m in got["messages"] if isinstance(m, ToolMessage)
    ]


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_send_target_that_reads_state_shows_only_stocks_runs(executor: str) -> None:
    """A ToolNode's Sends of tool calls wait for their step (the plan says so): no
    dropped early run shows up in callbacks or astream_events."""
    from collections import Counter

    inputs = {"messages": [HumanMessage("hello there")]}

    async def events(app: Any) -> Counter:
        seen: Counter = Counter()
        async for event in app.astream_events(inputs, version="v2"):
            seen[(event["event"], event["name"])] += 1
        return seen

    want = asyncio.run(events(_parallel_senders().compile()))
    stages = {"stages": {"model": {"process": False}}} if executor == "process" else {}
    with _parallel_senders().compile(backend="alto", executor=executor, **stages) as alto:
        assert alto.plan.stage("tools").reads_state
        assert "reads graph state" in str(alto.plan)
        assert asyncio.run(events(alto)) == want


@pytest.mark.parametrize("reason", ["shutdown", ""])
def test_a_drain_requested_before_the_call_is_shipped_arrives_drained(reason: str) -> None:
    """Stock ends a run drained before it starts (GraphDrained); one drained between
    its start and a node's call must reach the node as drained, whatever the reason."""
    from langgraph.runtime import RunControl

    from alto_langgraph import _langgraph
    from alto_langgraph.process import shipping

    control = RunControl()
    control.request_drain(reason)
    runtime = _langgraph.DEFAULT_RUNTIME.override(control=control)
    config = {"configurable": {_langgraph.CONFIG_KEY_RUNTIME: runtime}}

    class Link:
        emit = callback = call = heartbeat = task_writes = yields = None

    payload = shipping.ship_call("slow", {"done": []}, config)
    _, opened, _, _ = shipping.open_call(payload, Link())
    shipped = opened["configurable"][_langgraph.CONFIG_KEY_RUNTIME].control
    assert shipped.drain_requested and shipped.drain_reason == reason
