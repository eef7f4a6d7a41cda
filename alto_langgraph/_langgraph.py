"""Every LangGraph internal that alto relies on, imported in one place.

alto keeps LangGraph's own Pregel loop as the bookkeeper of logical supersteps (it
applies writes per step in task-path order, emits ``values``, counts the recursion
limit) and replaces only *when* tasks execute, through the loop's runner-submit hook.
The names below are private to LangGraph (and, for ``langchain_core``, to LangChain):
no other module of alto imports one. pyproject states the range they were checked
against (CI runs the conformance suite on its lowest and highest LangGraph), and
``tests/test_langgraph_internals.py`` checks each, so a release that moves one fails a
named test, never silently.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from langchain_core.tracers._streaming import _StreamingCallbackHandler as StreamingCallbackHandler
from langgraph._internal._config import ensure_config
from langgraph._internal._constants import (
    CONF,
    CONFIG_KEY_CALL,
    CONFIG_KEY_CHECKPOINT_NS,
    CONFIG_KEY_CHECKPOINTER,
    CONFIG_KEY_NODE_ERROR,
    CONFIG_KEY_READ,
    CONFIG_KEY_RUNNER_SUBMIT,
    CONFIG_KEY_RUNTIME,
    CONFIG_KEY_SCRATCHPAD,
    CONFIG_KEY_SEND,
    CONFIG_KEY_TASK_ID,
    NS_END,
    NS_SEP,
    NULL_TASK_ID,
    PULL,
    PUSH,
    RESUME,
    TASKS,
)
from langgraph._internal._future import chain_future
from langgraph._internal._runnable import RunnableCallable
from langgraph._internal._scratchpad import PregelScratchpad
from langgraph._internal._typing import MISSING
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph._branch import BranchSpec
from langgraph.graph.state import _coerce_state
from langgraph.managed.base import is_managed_value
from langgraph.pregel._algo import PUSH_TRIGGER, _scratchpad, task_path_str
from langgraph.pregel._messages import StreamMessagesHandler
from langgraph.pregel._read import PregelNode
from langgraph.pregel._retry import arun_with_retry, run_with_retry
from langgraph.pregel._tools import StreamToolCallHandler
from langgraph.pregel._write import ChannelWrite, ChannelWriteEntry
from langgraph.runtime import DEFAULT_RUNTIME, RunControl, Runtime
from langgraph.runtime import _no_op_heartbeat as no_op_heartbeat
from langgraph.runtime import _no_op_stream_writer as no_op_stream_writer
from langgraph.types import PregelExecutableTask, Send

try:  # LangGraph 1.2.23: a Send task's state, as an edge would give it (ToolNode reads it)
    from langgraph._internal._constants import CONFIG_KEY_READ_STATE
except ImportError:  # older: nothing sets it; ToolNode then reads CONFIG_KEY_READ
    CONFIG_KEY_READ_STATE = "__pregel_read_state"

__all__ = [
    "CONF",
    "DEFAULT_RUNTIME",
    "MISSING",
    "CONFIG_KEY_CALL",
    "CONFIG_KEY_CHECKPOINT_NS",
    "CONFIG_KEY_CHECKPOINTER",
    "CONFIG_KEY_NODE_ERROR",
    "CONFIG_KEY_READ",
    "CONFIG_KEY_READ_STATE",
    "CONFIG_KEY_RUNNER_SUBMIT",
    "CONFIG_KEY_RUNTIME",
    "CONFIG_KEY_SCRATCHPAD",
    "CONFIG_KEY_SEND",
    "CONFIG_KEY_TASK_ID",
    "ChannelWrite",
    "ChannelWriteEntry",
    "chain_future",
    "ensure_config",
    "NS_END",
    "NS_SEP",
    "PULL",
    "PUSH",
    "PUSH_TRIGGER",
    "PregelExecutableTask",
    "PregelNode",
    "PregelScratchpad",
    "RefusingSaver",
    "RunControl",
    "Runtime",
    "Send",
    "StreamMessagesHandler",
    "StreamToolCallHandler",
    "StreamingCallbackHandler",
    "TASKS",
    "arun_with_retry",
    "branch_parts",
    "branch_runnable",
    "finish_branch",
    "input_schema_of",
    "is_managed_value",
    "task_path_str",
    "run_with_retry",
    "no_op_heartbeat",
    "no_op_stream_writer",
    "loop_of",
    "new_scratchpad",
    "read_task_state",
    "reads_state",
    "resolve_checkpointer",
    "with_task_proc",
    "wrap_loop_stream",
]


def loop_of(call: Any) -> Any:
    """The Pregel loop behind a task's ``CONFIG_KEY_CALL`` (LangGraph binds the loop's
    ``accept_push`` into it), or None."""
    schedule = getattr(call, "keywords", {}).get("schedule_task")
    return getattr(schedule, "__self__", None)


class RefusingSaver(BaseCheckpointSaver):
    """A checkpointer each use of which raises ``error()``: what a graph run inside a
    node finds where the run's own checkpointer cannot reach (a task that ran ahead of
    its step, a worker process). Every method of LangGraph's saver interface refuses,
    those a later release adds too; a graph reads its checkpoint first, so it fails
    before it ran anything."""

    def __init__(self, error: Callable[[], BaseException]) -> None:
        super().__init__()
        self._error = error

    def _refuse(self, *_: Any, **__: Any) -> Any:
        raise self._error()


for _name, _member in vars(BaseCheckpointSaver).items():
    # with_allowlist derives a copy (LangGraph applies a graph's serde allowlist)
    if callable(_member) and not _name.startswith("_") and _name != "with_allowlist":
        setattr(RefusingSaver, _name, RefusingSaver._refuse)


def new_scratchpad(
    task_id: str,
    checkpoint_ns: str,
    step: int,
    stop: int,
    resume: list[Any] | None = None,
    null_resume: Any = None,
) -> PregelScratchpad:
    """A task's scratchpad: a fresh one (a task that ran ahead has no resume values),
    or one rebuilt in a stage instance with the resume values of the loop's task
    (``resume``: its own, in order; ``null_resume``: a ``Command(resume=value)`` not
    addressed to an interrupt id, None if there is none)."""
    pending: list[Any] = []
    if null_resume is not None:
        pending.append((NULL_TASK_ID, RESUME, null_resume))
    if resume:
        pending.append((task_id, RESUME, list(resume)))
    return _scratchpad(None, pending, task_id, checkpoint_ns, None, step, stop)


def resolve_checkpointer(graph: Any, config: Any) -> Any:
    """The checkpointer a run of ``graph`` with ``config`` uses (None: none), as
    LangGraph decides it: ``checkpointer=False`` none, else the one a parent lends
    through the config, else the graph's own."""
    return graph._resolve_checkpointer(config)


def read_task_state(configurable: Any) -> Any:
    """The state a Send task's node reads through its config (``ToolNode`` with a list
    of tool calls as its payload: ``InjectedState``, ``ToolRuntime.state``), read now,
    as LangGraph's ToolNode reads it; None when the task has no state reader."""
    read_state = configurable.get(CONFIG_KEY_READ_STATE)
    if read_state is not None:
        return read_state()
    read = configurable.get(CONFIG_KEY_READ)
    if read is None:
        return None
    # CONFIG_KEY_READ is functools.partial(local_read, scratchpad, channels, ...)
    return read(list(read.args[1]), True)


def wrap_loop_stream(loop: Any, wrap: Callable[[Any, str], Any]) -> tuple[Any, Any] | None:
    """Replace the stream a live Pregel loop writes its chunks to by ``wrap(stream,
    checkpoint_ns)``; returns (the new stream, the loop's output keys), or None when the
    loop streams nothing."""
    if loop.stream is None:
        return None
    loop.stream = wrap(loop.stream, loop.checkpoint_ns)
    return loop.stream, loop.output_keys


def with_task_proc(node: PregelNode, wrap: Callable[[Any], Any]) -> PregelNode:
    """A copy of ``node`` whose task proc (the node's runnable with its writers, which
    LangGraph builds and caches on first use) is ``wrap(proc)``."""
    return _WrappedProcNode(wrap, **_without_cached(node.__dict__))


def _without_cached(attrs: dict[str, Any]) -> dict[str, Any]:
    """A PregelNode's ``__dict__`` less its cached properties (rebuilt on first use)."""
    return {k: v for k, v in attrs.items() if k not in ("flat_writers", "node", "input_cache_key")}


class _WrappedProcNode(PregelNode):
    def __init__(self, wrap: Callable[[Any], Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._wrap_proc = wrap

    def copy(self, update: dict[str, Any]) -> PregelNode:
        attrs = {k: v for k, v in {**self.__dict__, **update}.items() if k != "_wrap_proc"}
        return with_task_proc(PregelNode(**_without_cached(attrs)), self._wrap_proc)

    @functools.cached_property
    def node(self) -> Any:  # type: ignore[override]
        proc = PregelNode.node.func(self)  # type: ignore[attr-defined]
        return None if proc is None else self._wrap_proc(proc)


def input_schema_of(node: PregelNode) -> type | None | bool:
    """The class a StateGraph node's input is built as (``schema(**values)``, for a
    pydantic model or a dataclass); None for a dict; False for a mapper alto does not
    know."""
    mapper = node.mapper
    if mapper is None:
        return None
    if isinstance(mapper, functools.partial) and mapper.func is _coerce_state and mapper.args:
        return mapper.args[0]
    return False


def branch_parts(runnable: Any) -> tuple[Any, Any, Any] | None:
    """(BranchSpec, reader, writer) of a conditional edge's runnable, as
    ``BranchSpec.run`` builds it among a node's writers; None for another runnable."""
    spec = getattr(getattr(runnable, "func", None), "__self__", None)
    if not isinstance(spec, BranchSpec):
        return None
    kwargs = getattr(runnable, "kwargs", {})
    return spec, kwargs.get("reader"), kwargs.get("writer")


def branch_runnable(
    route: Callable[..., Any], aroute: Callable[..., Any], reader: Any, writer: Any
) -> Any:
    """A conditional edge's runnable as ``BranchSpec.run`` builds it, routing with
    ``route``/``aroute`` (called with the node's output and config, ``reader`` and
    ``writer``; what they return, a writer, runs next)."""
    return RunnableCallable(
        func=route, afunc=aroute, writer=writer, reader=reader, name=None, trace=False
    )


def finish_branch(spec: Any, writer: Any, input: Any, result: Any, config: Any) -> Any:
    """The writes of a conditional edge that routed to ``result`` (``BranchSpec._finish``)."""
    return spec._finish(writer, input, result, config)


def reads_state(runnable: Any) -> bool:
    """Whether a node's runnable reads the graph state through its config when a Send
    runs it: langgraph.prebuilt's ``ToolNode`` does for a list of tool calls."""
    try:
        from langgraph.prebuilt import ToolNode
    except ImportError:  # pragma: no cover - langgraph ships langgraph-prebuilt
        return False
    return isinstance(runnable, ToolNode)
