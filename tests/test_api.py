"""The public surface: the plug, alto_langgraph.compile, options, explain, fallbacks."""

from __future__ import annotations

import asyncio
import io
import operator
import warnings
from typing import Annotated, Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, Send
from typing_extensions import TypedDict

import alto_langgraph
from alto_langgraph import AltoCompiledStateGraph, AltoFallbackWarning


class S(TypedDict):
    log: Annotated[list, operator.add]


def fanout() -> StateGraph:
    g = StateGraph(S)
    g.add_node("a", lambda s: {"log": ["a"]})
    g.add_node("w", lambda p: {"log": [p["i"]]})
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("w", {"i": i}) for i in range(3)])
    return g


def test_backend_alto_returns_a_compiled_state_graph() -> None:
    app = fanout().compile(backend="alto")
    assert isinstance(app, AltoCompiledStateGraph)
    assert isinstance(app, CompiledStateGraph)
    assert app.invoke({"log": []}) == {"log": ["a", 0, 1, 2]}


def test_default_and_pregel_backends_are_stock() -> None:
    assert type(fanout().compile()) is CompiledStateGraph
    assert type(fanout().compile(backend="pregel")) is CompiledStateGraph


def test_unknown_backend_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown backend 'ray'.*pregel, alto"):
        fanout().compile(backend="ray")


def test_unknown_option_names_itself() -> None:
    with pytest.raises(TypeError, match="unknown alto option.*replicaz"):
        fanout().compile(backend="alto", replicaz={"w": 2})


def test_bad_executor_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="executor='gpu'"):
        fanout().compile(backend="alto", executor="gpu")


def test_compile_function_accepts_builder_or_compiled_graph() -> None:
    from_builder = alto_langgraph.compile(fanout())
    stock = fanout().compile(name="mine")
    from_compiled = alto_langgraph.compile(stock)
    assert isinstance(from_builder, AltoCompiledStateGraph)
    assert isinstance(from_compiled, AltoCompiledStateGraph)
    assert from_compiled.get_name() == "mine"
    assert type(stock) is CompiledStateGraph  # the user's graph is untouched
    assert from_compiled.invoke({"log": []}) == stock.invoke({"log": []})


def test_compile_function_rejects_other_objects() -> None:
    with pytest.raises(TypeError, match="expects a langgraph StateGraph.*got dict"):
        alto_langgraph.compile({"not": "a graph"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="already compiled for alto"):
        alto_langgraph.compile(alto_langgraph.compile(fanout()))


def test_compile_keeps_the_compiled_graphs_checkpointer() -> None:
    saver = InMemorySaver()
    app = alto_langgraph.compile(fanout().compile(checkpointer=saver))
    assert app.checkpointer is saver


class _ToolModel(GenericFakeChatModel):
    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self


@pytest.mark.filterwarnings("ignore:create_react_agent has been moved")
def test_prebuilt_agent_runs_on_alto() -> None:
    from langgraph.prebuilt import create_react_agent

    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    def model() -> _ToolModel:
        return _ToolModel(
            messages=iter(
                [
                    AIMessage(
                        "",
                        id="m1",
                        tool_calls=[{"name": "add", "args": {"a": 2, "b": 3}, "id": "c1"}],
                    ),
                    AIMessage("5", id="m2"),
                ]
            )
        )

    inputs = {"messages": [HumanMessage("2+3?", id="h1")]}
    stock_out = create_react_agent(model(), [add]).invoke(inputs)
    alto_app = alto_langgraph.compile(create_react_agent(model(), [add]))
    alto_out = alto_app.invoke(inputs)
    assert [m.content for m in alto_out["messages"]] == [m.content for m in stock_out["messages"]]
    assert alto_out["messages"][-1].content == "5"


def test_with_config_keeps_alto() -> None:
    app = fanout().compile(backend="alto").with_config(recursion_limit=50, tags=["x"])
    assert isinstance(app, AltoCompiledStateGraph)
    assert app.plan is not None
    assert app.invoke({"log": []}) == {"log": ["a", 0, 1, 2]}


def test_get_graph_and_schemas_are_langgraphs() -> None:
    stock, alto = fanout().compile(), fanout().compile(backend="alto")
    assert alto.get_graph().draw_mermaid() == stock.get_graph().draw_mermaid()
    assert alto.get_input_jsonschema() == stock.get_input_jsonschema()
    assert alto.get_output_jsonschema() == stock.get_output_jsonschema()


def test_explain_prints_the_plan() -> None:
    g = fanout()
    g.add_node("z", lambda s: {"log": ["z"]}, defer=True)
    g.add_edge("w", "z")
    buf = io.StringIO()
    plan = g.compile(backend="alto").explain(file=buf)
    text = buf.getvalue()
    assert text.strip() == str(plan).strip()
    assert "a via conditional edge" in text
    assert "log" in text and "reducer=_operator.add" in text
    assert "z" in text and "defer" in text
    assert plan.stage("w").kind == "node"
    with pytest.raises(KeyError, match="no stage named 'nope'"):
        plan.stage("nope")


def test_explain_shows_subgraph_plans() -> None:
    inner = StateGraph(S)
    inner.add_node("i", lambda s: {"log": ["i"]})
    inner.add_edge(START, "i")
    g = StateGraph(S)
    g.add_node("sub", inner.compile(name="inner"))
    g.add_edge(START, "sub")
    plan = g.compile(backend="alto").plan
    assert plan.stage("sub").kind == "subgraph"
    assert [p.name for _, p in plan.subplans] == ["inner"]
    assert "plan 'inner'" in str(plan)


def test_a_checkpointer_runs_on_alto() -> None:
    app = fanout().compile(backend="alto", checkpointer=InMemorySaver())
    with warnings.catch_warnings():
        warnings.simplefilter("error", AltoFallbackWarning)
        out = app.invoke({"log": []}, {"configurable": {"thread_id": "t"}})
    assert out == {"log": ["a", 0, 1, 2]}
    assert app.get_state({"configurable": {"thread_id": "t"}}).values == out
    assert "fall back" not in str(app.plan)


@pytest.mark.parametrize("executor", ["inline", "process"])
def test_a_checkpointer_without_a_thread_id_is_refused_as_on_stock(executor: str) -> None:
    """LangGraph refuses such a run when ``configurable`` is empty; the fallback's own
    configurable key must not hide that (it did: KeyError 'thread_id' instead)."""
    stock = fanout().compile(checkpointer=InMemorySaver())
    with pytest.raises(ValueError, match="thread_id") as expected:
        stock.invoke({"log": []})
    with fanout().compile(backend="alto", executor=executor, checkpointer=InMemorySaver()) as app:
        for run in (lambda: app.invoke({"log": []}), lambda: asyncio.run(app.ainvoke({"log": []}))):
            with pytest.raises(ValueError) as got:
                run()
            assert str(got.value) == str(expected.value)


def test_interrupt_before_keeps_every_task_at_its_step() -> None:
    """Nothing of a step the human has not approved starts early: with interrupt_before
    no task runs ahead, and explain says why."""
    app = fanout().compile(backend="alto", interrupt_before=["w"], checkpointer=InMemorySaver())
    cfg = {"configurable": {"thread_id": "t"}}
    with warnings.catch_warnings():
        warnings.simplefilter("error", AltoFallbackWarning)
        chunks = list(app.stream({"log": []}, cfg))
    assert chunks[-1] == {"__interrupt__": ()}
    assert app.get_state(cfg).next == ("w", "w", "w")
    assert app.invoke(None, cfg) == {"log": ["a", 0, 1, 2]}
    assert all(s["run_ahead"] == 0 for s in app.run_ahead_stats().values())
    assert "every task waits for its superstep: the graph has interrupt_before" in str(app.plan)


_INNER = StateGraph(S)
_INNER.add_node("x", lambda s: {"log": ["x"]})
_INNER.add_edge(START, "x")
_INNER_APP = _INNER.compile()


def _invokes_inner(s: dict) -> dict:
    return {"log": _INNER_APP.invoke({"log": []})["log"]}


def test_a_fallback_warns_once_per_app_and_feature_at_the_callers_line() -> None:
    """A node on a worker invoking a graph, with a checkpointer, falls back: one
    warning for the app (not one per call, nothing printed besides), pointing at the
    user's call, be it invoke, stream or ainvoke."""
    g = StateGraph(S)
    g.add_node("n", _invokes_inner)
    g.add_edge(START, "n")
    app = g.compile(backend="alto", executor="process", checkpointer=InMemorySaver())
    feature = "a checkpointer with a node in worker processes that invokes a graph"
    assert app.plan.fallbacks == (feature,)
    cfg = {"configurable": {"thread_id": "t"}}
    for call in (
        lambda: app.invoke({"log": []}, cfg),
        lambda: list(app.stream({"log": []}, cfg)),
        lambda: asyncio.run(app.ainvoke({"log": []}, cfg)),
    ):
        app._alto.warned.clear()  # each call style names its own line
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            for _ in range(3):
                call()
        fallbacks = [w for w in seen if issubclass(w.category, AltoFallbackWarning)]
        assert len(fallbacks) == 1
        assert feature in str(fallbacks[0].message)
        assert fallbacks[0].filename == __file__
    assert app.get_state(cfg).values["log"] == ["x"] * 9
    app.close()


def test_no_warning_on_the_alto_path() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fanout().compile(backend="alto").invoke({"log": []}) == {"log": ["a", 0, 1, 2]}


def test_uninstall_restores_stock_compile() -> None:
    alto_langgraph.uninstall()
    try:
        with pytest.raises(TypeError):
            fanout().compile(backend="alto")
    finally:
        alto_langgraph.install()
    assert isinstance(fanout().compile(backend="alto"), AltoCompiledStateGraph)


def test_batch_and_abatch_match_stock() -> None:
    import asyncio

    inputs = [{"log": [n]} for n in range(4)]
    stock = fanout().compile().batch(inputs)
    alto = fanout().compile(backend="alto")
    assert alto.batch(inputs) == stock
    assert asyncio.run(alto.abatch(inputs)) == stock


async def test_callbacks_see_the_same_runs_as_on_langgraph() -> None:
    # async on both sides: LangGraph's own sync and async paths name some runs
    # differently, and alto's sync calls run its async path
    from langchain_core.callbacks import BaseCallbackHandler

    class Recorder(BaseCallbackHandler):
        def __init__(self) -> None:
            self.runs: dict[Any, tuple[str, Any]] = {}

        def on_chain_start(
            self, serialized: Any, inputs: Any, *, run_id: Any, parent_run_id: Any = None, **kw: Any
        ) -> None:
            self.runs[run_id] = (kw.get("name") or "", parent_run_id)

        def tree(self) -> list[tuple[str, str]]:
            """(run name, parent run name) for every node-level run."""
            names = {rid: name for rid, (name, _) in self.runs.items()}
            return sorted(
                (name, names.get(parent, "<root>")) for name, parent in self.runs.values()
            )

    def build() -> StateGraph:
        g = StateGraph(S)
        g.add_node("a", lambda s: {"log": ["a"]})
        g.add_node("b", lambda p: Command(goto=[Send("c", p)]))
        g.add_node("c", lambda p: {"log": [f"c{p['i']}"]})
        g.add_edge(START, "a")
        g.add_conditional_edges("a", lambda s: [Send("b", {"i": i}) for i in range(3)])
        return g

    trees = {}
    for backend in ("pregel", "alto"):
        rec = Recorder()
        out = await build().compile(backend=backend).ainvoke({"log": []}, {"callbacks": [rec]})
        assert out == {"log": ["a", "c0", "c1", "c2"]}
        trees[backend] = rec.tree()
    assert ("c", "LangGraph") in trees["alto"]
    assert trees["alto"] == trees["pregel"]
