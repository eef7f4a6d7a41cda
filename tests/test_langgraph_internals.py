"""The LangGraph internals alto relies on (_langgraph.py), checked directly, so
that a LangGraph upgrade that moves one fails here with a clear name."""

from __future__ import annotations

import functools
import operator
from typing import Annotated, Any

from langgraph.graph import START, StateGraph
from typing_extensions import TypedDict

from alto_langgraph import _langgraph as _pregel


class S(TypedDict):
    log: Annotated[list, operator.add]


def two_parallel_then_one() -> StateGraph:
    g = StateGraph(S)
    g.add_node("a", lambda s: {"log": ["a"]})
    g.add_node("b", lambda s: {"log": ["b"]})
    g.add_node("c", lambda s: {"log": ["c"]})
    g.add_edge(START, "a")
    g.add_edge(START, "b")
    g.add_edge("a", "c")
    return g


def test_every_internal_name_imports() -> None:
    for name in _pregel.__all__:
        assert getattr(_pregel, name) is not None, name


def test_runner_submit_hook_receives_tasks_and_lone_tasks_bypass_it() -> None:
    """alto's whole scheduling hangs on this hook; a step's only task skips it, which
    is why every node proc is wrapped (RunAheadAwareProc)."""
    seen: list[str] = []

    class Hook:
        def __call__(self) -> Any:
            return self.submit

        def submit(self, fn: Any, task: Any, *args: Any, **kwargs: Any) -> Any:
            import concurrent.futures

            for k in ("__name__", "__cancel_on_exit__", "__reraise_on_exit__", "__next_tick__"):
                kwargs.pop(k, None)
            seen.append(task.name)
            fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
            fut.set_result(fn(task, *args, **kwargs))
            return fut

    app = two_parallel_then_one().compile()
    out = app.invoke({"log": []}, {"configurable": {_pregel.CONFIG_KEY_RUNNER_SUBMIT: Hook()}})
    assert out == {"log": ["a", "b", "c"]}
    assert sorted(seen) == ["a", "b"]  # c ran alone: inline, without the hook


def test_pregel_node_proc_is_a_cached_property_over_bound_and_writers() -> None:
    prop = _pregel.PregelNode.__dict__["node"]
    assert isinstance(prop, functools.cached_property)
    node = two_parallel_then_one().compile().nodes["a"]
    assert all(isinstance(w, _pregel.ChannelWrite) for w in node.flat_writers)
    assert node.node is not None


def test_scratchpad_carries_step_and_stop() -> None:
    pad = _pregel.new_scratchpad("t", "ns", 3, 10)
    assert (pad.step, pad.stop) == (3, 10)


def test_a_list_of_commands_is_folded_by_the_reducers_in_order() -> None:
    """What a @streaming node returns on stock LangGraph: its items as Commands, each
    update applied through the state's reducer in list order, each Send a task."""
    from langgraph.types import Command, Send

    g = StateGraph(S)
    g.add_node(
        "a",
        lambda s: [
            Command(update={"log": ["1"]}),
            Command(goto=Send("b", {"log": ["from a"]})),
            Command(update={"log": ["2"]}),
        ],
    )
    g.add_node("b", lambda p: {"log": p["log"]})
    g.add_edge(START, "a")
    assert g.compile().invoke({"log": []}) == {"log": ["1", "2", "from a"]}


def test_the_first_writer_of_a_node_maps_updates_and_commands_to_writes() -> None:
    """A streaming node's task applies each item through this writer (partial.py)."""
    from langgraph.types import Command, Send

    node = two_parallel_then_one().compile().nodes["a"]
    writes: list[tuple[str, Any]] = []
    conf = {_pregel.CONF: {_pregel.CONFIG_KEY_SEND: writes.extend}}
    node.writers[0].invoke({"log": ["x"]}, conf)
    node.writers[0].invoke(Command(update={"log": ["y"]}, goto=Send("c", {})), conf)
    assert writes == [("log", ["x"]), ("log", ["y"]), (_pregel.TASKS, Send("c", {}))]


def test_a_tasks_call_hook_leads_to_its_loop_and_the_loop_streams_updates_per_task() -> None:
    """alto finds the loop (to stream partial updates, and to drop the whole-task
    update of a streaming node) through the loop method bound into CONFIG_KEY_CALL."""
    from langchain_core.runnables import RunnableConfig

    found: list[Any] = []

    def a(state: S, config: RunnableConfig) -> dict:
        found.append(_pregel.loop_of(config["configurable"][_pregel.CONFIG_KEY_CALL]))
        return {"log": ["a"]}

    g = StateGraph(S)
    g.add_node("a", a)
    g.add_edge(START, "a")
    chunks = list(g.compile().stream({"log": []}, stream_mode="updates"))
    loop = found[0]
    assert loop is not None and callable(loop.stream) and "updates" in loop.stream.modes
    assert loop.checkpoint_ns == () and "log" in loop.output_keys
    assert chunks == [{"a": {"log": ["a"]}}]
