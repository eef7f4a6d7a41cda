"""The LangGraph internals alto relies on (runtime/_pregel.py), checked directly, so
that a LangGraph upgrade that moves one fails here with a clear name."""

from __future__ import annotations

import functools
import operator
from typing import Annotated, Any

from langgraph.graph import START, StateGraph
from typing_extensions import TypedDict

from alto_langgraph.runtime import _pregel


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
