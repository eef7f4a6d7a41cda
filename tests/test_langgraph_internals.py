"""The LangGraph internals alto relies on (_langgraph.py), checked directly, so
that a LangGraph upgrade that moves one fails here with a clear name."""

from __future__ import annotations

import dataclasses
import functools
import operator
from typing import Annotated, Any

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.graph import START, StateGraph
from langgraph.managed import RemainingSteps
from pydantic import BaseModel
from typing_extensions import TypedDict

from alto_langgraph import _langgraph as _pregel


class S(TypedDict):
    log: Annotated[list, operator.add]


class R(S, total=False):
    remaining_steps: RemainingSteps


class P(BaseModel):
    log: Annotated[list, operator.add] = []


@dataclasses.dataclass
class D:
    log: Annotated[list, operator.add] = dataclasses.field(default_factory=list)


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
    assert pad.resume == [] and pad.get_null_resume(True) is None


def test_a_rebuilt_scratchpad_answers_interrupts_as_the_loops_would() -> None:
    """What a stage instance rebuilds for a resumed task: its own resume values in
    order, then a resume for no interrupt id in particular, taken once."""
    from langgraph.types import interrupt

    pad = _pregel.new_scratchpad("t", "ns", 3, 10, ["first"], "later")
    from langchain_core.runnables.config import var_child_runnable_config

    sent: list = []
    config = {
        _pregel.CONF: {
            _pregel.CONFIG_KEY_SCRATCHPAD: pad,
            _pregel.CONFIG_KEY_CHECKPOINT_NS: "ns",
            _pregel.CONFIG_KEY_SEND: sent.extend,
        }
    }

    token = var_child_runnable_config.set(config)
    try:
        assert [interrupt("a?"), interrupt("b?")] == ["first", "later"]
    finally:
        var_child_runnable_config.reset(token)
    assert pad.get_null_resume(True) is None
    assert [v for _, v in sent][-1] == ["first", "later"]  # saved for the loop's task


def test_a_first_interrupt_is_named_after_its_tasks_namespace() -> None:
    """What alto renames when the loop's task adopts a twin's interrupt: a task with no
    resume values raises one Interrupt whose id is Interrupt.from_ns of its namespace."""
    from langchain_core.runnables.config import var_child_runnable_config
    from langgraph.errors import GraphInterrupt
    from langgraph.types import Interrupt, interrupt

    ns = "ask:0b7e2c3a-0000-4000-8000-000000000000"
    pad = _pregel.new_scratchpad("t", ns, 1, 10)
    config = {
        _pregel.CONF: {
            _pregel.CONFIG_KEY_SCRATCHPAD: pad,
            _pregel.CONFIG_KEY_CHECKPOINT_NS: ns,
            _pregel.CONFIG_KEY_SEND: lambda _: None,
        }
    }
    token = var_child_runnable_config.set(config)
    try:
        with pytest.raises(GraphInterrupt) as raised:
            interrupt("ok?")
    finally:
        var_child_runnable_config.reset(token)
    (only,) = raised.value.args[0]
    assert only.id == Interrupt.from_ns(None, ns).id and only.value == "ok?"


def test_a_refusing_saver_refuses_every_method_of_the_saver_interface() -> None:
    """What a graph finds inside a twin or a worker: any use raises the given error,
    including methods a LangGraph release adds to BaseCheckpointSaver."""
    import asyncio

    from langgraph.checkpoint.base import BaseCheckpointSaver

    saver = _pregel.RefusingSaver(lambda: LookupError("refused"))
    methods = [
        n
        for n, f in vars(BaseCheckpointSaver).items()
        if callable(f) and not n.startswith("_") and n != "with_allowlist"
    ]
    assert {"get_tuple", "aget_tuple", "put", "put_writes", "list"} <= set(methods)
    for name in methods:
        with pytest.raises(LookupError, match="refused"):
            result = getattr(saver, name)({"configurable": {}})
            if asyncio.iscoroutine(result):
                asyncio.run(result)
    assert isinstance(saver.with_allowlist([("x",)]), _pregel.RefusingSaver)


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


# -- signatures and field sets alto builds or calls -----------------------------------


def _params(fn: Any) -> list[str]:
    import inspect

    return list(inspect.signature(fn).parameters)


def test_the_task_alto_builds_for_a_run_ahead_send_has_langgraphs_fields_in_order() -> None:
    """tasks.push_task_for builds PregelExecutableTask positionally."""
    import dataclasses

    names = [f.name for f in dataclasses.fields(_pregel.PregelExecutableTask)]
    assert names[:10] == [
        "name",
        "input",
        "proc",
        "writes",
        "config",
        "triggers",
        "retry_policy",
        "cache_key",
        "id",
        "path",
    ]
    assert {"writers", "subgraphs", "timeout"} <= set(names)


def test_retry_runners_take_the_task_and_a_retry_policy() -> None:
    assert _params(_pregel.run_with_retry)[:2] == ["task", "retry_policy"]
    assert _params(_pregel.arun_with_retry)[:2] == ["task", "retry_policy"]
    assert "stream" in _params(_pregel.arun_with_retry)


def test_runtime_has_the_fields_a_process_stage_ships() -> None:
    """shipping.py rebuilds a node's Runtime in a worker from these fields."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(_pregel.Runtime)}
    assert {"context", "store", "stream_writer", "heartbeat", "previous"} <= fields
    assert {"execution_info", "server_info", "control"} <= fields
    control = _pregel.RunControl()
    runtime = _pregel.DEFAULT_RUNTIME.override(control=control)
    control.request_drain("why")
    assert runtime.control.drain_requested and runtime.control.drain_reason == "why"


def test_callback_handlers_alto_relays_keep_their_constructors() -> None:
    """relay.py subclasses these (stream_mode="messages" and "tools")."""
    for cls in (_pregel.StreamMessagesHandler, _pregel.StreamToolCallHandler):
        assert _params(cls.__init__)[1:4] == ["stream", "subgraphs", "parent_ns"]
    assert "dedupe" in _params(_pregel.StreamMessagesHandler._emit)
    tools = _pregel.StreamToolCallHandler(lambda chunk: None, False)
    assert callable(tools.stream) and tools.run_inline
    for name in ("tap_output_iter", "tap_output_aiter"):
        assert callable(getattr(_pregel.StreamingCallbackHandler, name))


def test_a_graph_resolves_its_checkpointer_from_the_config() -> None:
    from langgraph.checkpoint.memory import InMemorySaver

    saver = InMemorySaver()
    assert _pregel.resolve_checkpointer(two_parallel_then_one().compile(), {}) is None
    lent = {_pregel.CONF: {_pregel.CONFIG_KEY_CHECKPOINTER: saver}}
    assert _pregel.resolve_checkpointer(two_parallel_then_one().compile(), lent) is saver


def test_a_send_tasks_state_reader_gives_the_state_of_its_step() -> None:
    """read_task_state: what a ToolNode reached by Send reads (READ_STATE, or READ's
    channels on LangGraph before 1.2.23)."""
    from langgraph.types import Send

    read: list[Any] = []

    def b(payload: dict, config: RunnableConfig) -> dict:
        read.append(_pregel.read_task_state(config["configurable"]))
        return {"log": ["b"]}

    g = StateGraph(S)
    g.add_node("a", lambda s: {"log": ["a"]})
    g.add_node("b", b)
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("b", {})], ["b"])
    g.compile().invoke({"log": []})
    assert read == [{"log": ["a"]}]


def test_a_node_proc_can_be_wrapped_and_copies_keep_the_wrapper() -> None:
    wrapped: list[Any] = []

    def wrap(proc: Any) -> Any:
        wrapped.append(proc)
        return proc

    node = two_parallel_then_one().compile().nodes["a"]
    new = _pregel.with_task_proc(node, wrap)
    assert new.node is wrapped[0] and new.bound is node.bound
    copied = new.copy({"tags": ["t"]})
    assert copied.node is wrapped[1] and copied.tags == ["t"]


def test_the_submit_hook_gets_only_keywords_alto_knows() -> None:
    """coordinator.RequestRun.submit names LangGraph's private keywords; any other
    would reach the task function."""
    import concurrent.futures
    import inspect

    from alto_langgraph.scheduling.coordinator import RequestRun

    passed: set[str] = set()

    class Hook:
        def __call__(self) -> Any:
            return self.submit

        def submit(self, fn: Any, task: Any, *args: Any, **kwargs: Any) -> Any:
            passed.update(kwargs)
            private = {k: kwargs.pop(k) for k in list(kwargs) if k.startswith("__")}
            assert private.keys() <= known
            fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
            fut.set_result(fn(task, *args, **kwargs))
            return fut

    known = {k for k in inspect.signature(RequestRun.submit).parameters if k.startswith("__")}
    app = two_parallel_then_one().compile()
    app.invoke({"log": []}, {"configurable": {_pregel.CONFIG_KEY_RUNNER_SUBMIT: Hook()}})
    assert {k for k in passed if k.startswith("__")} <= known
    assert passed  # the hook was called with keywords at all


# -- what edge-triggered run-ahead reads of the loop ----------------------------------


def test_the_loop_exposes_its_tasks_channels_and_managed_values_while_a_step_runs() -> None:
    """progress.py snapshots ``loop.channels`` and notes ``loop.tasks`` while a step's
    tasks run; channels copy, and change only between steps."""

    seen: dict[str, Any] = {}

    def a(state: R, config: RunnableConfig) -> dict:
        loop = _pregel.loop_of(config["configurable"][_pregel.CONFIG_KEY_CALL])
        seen["tasks"] = sorted(t.name for t in loop.tasks.values())
        copy = loop.channels["log"].copy()
        copy.update([["x"]])
        seen["log"] = (loop.channels["log"].get(), copy.get())
        pad = _pregel.new_scratchpad("", "", 3, 10)
        seen["remaining"] = loop.managed["remaining_steps"].get(pad)
        return {"log": ["a"]}

    g = StateGraph(R)
    g.add_node("a", a)
    g.add_node("b", lambda s: {"log": ["b"]})
    g.add_edge(START, "a")
    g.add_edge(START, "b")
    g.compile().invoke({"log": ["in"]})
    assert seen == {"tasks": ["a", "b"], "log": (["in"], ["in", "x"]), "remaining": 7}


def test_writes_of_a_step_apply_in_task_path_order() -> None:
    """progress.py orders the writes a view folds as LangGraph's apply_writes does:
    pull tasks by node name, then push tasks by Send index."""
    from langgraph.types import Send

    PULL, PUSH = _pregel.PULL, _pregel.PUSH
    paths = [(PUSH, 1, False), (PULL, "c"), (PUSH, 0, False), (PULL, "b")]
    ordered = sorted(paths, key=_pregel.task_path_str)
    assert ordered == [(PULL, "b"), (PULL, "c"), (PUSH, 0, False), (PUSH, 1, False)]

    g = StateGraph(S)
    g.add_node("a", lambda s: {"log": []})
    g.add_node("b", lambda s: {"log": ["b"]})
    g.add_node("c", lambda s: {"log": ["c"]})
    g.add_node("w", lambda p: {"log": [f"w{p}"]})
    g.add_edge(START, "a")
    g.add_edge("a", "c")
    g.add_edge("a", "b")
    g.add_conditional_edges("a", lambda s: [Send("w", 0), Send("w", 1)])
    assert g.compile().invoke({"log": []})["log"] == ["b", "c", "w0", "w1"]


def test_a_nodes_input_schema_is_known_from_its_mapper() -> None:
    """views.py builds a pull task's input as LangGraph's mapper does: ``schema(**values)``
    for pydantic and dataclass states, a dict otherwise; managed values are told apart
    from channels."""
    for schema, expected in ((P, P), (D, D), (S, None), (R, None)):
        g = StateGraph(schema)
        g.add_node("a", lambda s: {"log": ["a"]})
        g.add_edge(START, "a")
        compiled = g.compile()
        assert _pregel.input_schema_of(compiled.nodes["a"]) is expected, schema
    assert _pregel.is_managed_value(compiled.channels["remaining_steps"])  # R's
    assert not _pregel.is_managed_value(compiled.channels["log"])


def test_a_conditional_edge_is_a_branch_runnable_alto_can_rebuild() -> None:
    """tasks.py rebuilds a node's conditional edges to route on a state view: it takes
    BranchSpec, reader and writer out of the runnable BranchSpec.run made, and builds
    the same kind of runnable around its own route, which ends in BranchSpec._finish."""
    g = two_parallel_then_one()
    g.add_conditional_edges(
        "c", lambda s: "a" if len(s["log"]) < 4 else "__end__", ["a", "__end__"]
    )
    compiled = g.compile()
    late = [w for w in compiled.nodes["c"].flat_writers if not isinstance(w, _pregel.ChannelWrite)]
    assert len(late) == 1
    spec, reader, writer = _pregel.branch_parts(late[0])
    assert callable(reader) and callable(writer) and spec.input_schema is None
    assert _pregel.branch_parts(compiled.nodes["c"].flat_writers[0]) is None

    calls: list[Any] = []

    # LangGraph passes config to a parameter annotated RunnableConfig
    def route(input: Any, config: RunnableConfig, *, reader: Any, writer: Any) -> Any:
        calls.append(reader(config))
        result = spec.path.invoke(calls[-1], config)
        return _pregel.finish_branch(spec, writer, input, result, config)

    rebuilt = _pregel.branch_runnable(route, None, reader, writer)
    node = compiled.nodes["c"]
    compiled.nodes["c"] = node.copy({"writers": [*node.writers[:-1], rebuilt]})
    assert compiled.invoke({"log": []})["log"] == ["a", "b", "c", "a", "c"]
    assert [sorted(c) for c in calls] == [["log"], ["log"]]


def test_a_channel_no_task_writes_is_told_of_each_step_s_end_and_never_saved() -> None:
    """What step-scope consistency assertions rely on (``checking.StepEnd``): the loop
    calls ``update([])`` on an available channel that got no write, once per step, after
    the step's writes are applied; a channel that is never written is never versioned,
    so a checkpoint holds nothing of it; a task reads it through CONFIG_KEY_READ."""
    from langgraph.checkpoint.memory import InMemorySaver

    from alto_langgraph.checking import STEP_CHANNEL, StepEnd

    told: list[list] = []

    class Spy(StepEnd):
        def from_checkpoint(self, checkpoint: Any) -> Spy:
            return Spy()

        def update(self, values: Any) -> bool:
            told.append(list(values))
            return super().update(values)

    def node(s: S, config: RunnableConfig) -> dict:
        seen = config["configurable"][_pregel.CONFIG_KEY_READ](STEP_CHANNEL)
        return {"log": [type(seen).__name__]}

    g = StateGraph(S)
    g.add_node("a", node)
    g.add_node("b", node)
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    saver = InMemorySaver()
    app = g.compile(checkpointer=saver)
    app.channels[STEP_CHANNEL] = Spy()
    config: Any = {"configurable": {"thread_id": "t"}}
    assert app.invoke({"log": []}, config) == {"log": ["Spy", "Spy"]}
    assert told == [[], [], []]  # the input step, "a", "b"
    for saved in saver.list(config):
        assert STEP_CHANNEL not in saved.checkpoint["channel_values"]
        assert STEP_CHANNEL not in saved.checkpoint["channel_versions"]
