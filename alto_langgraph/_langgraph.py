"""Every LangGraph internal that alto relies on, imported in one place.

alto keeps LangGraph's own Pregel loop as the bookkeeper of logical supersteps (it
applies writes per step in task-path order, emits ``values``, counts the recursion
limit) and replaces only *when* tasks execute, through the loop's runner-submit hook.
The names below are private to LangGraph; pyproject pins the range they were checked
against, and ``tests/test_pregel_internals.py`` fails loudly if one of them moves.
"""

from __future__ import annotations

from typing import Any

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
    PULL,
    PUSH,
    TASKS,
)
from langgraph._internal._future import chain_future
from langgraph._internal._scratchpad import PregelScratchpad
from langgraph.pregel._algo import PUSH_TRIGGER, _scratchpad
from langgraph.pregel._messages import StreamMessagesHandler
from langgraph.pregel._read import PregelNode
from langgraph.pregel._retry import arun_with_retry, run_with_retry
from langgraph.pregel._write import ChannelWrite, ChannelWriteEntry
from langgraph.runtime import DEFAULT_RUNTIME, Runtime
from langgraph.runtime import _no_op_heartbeat as no_op_heartbeat
from langgraph.runtime import _no_op_stream_writer as no_op_stream_writer
from langgraph.types import PregelExecutableTask, Send

__all__ = [
    "CONF",
    "DEFAULT_RUNTIME",
    "CONFIG_KEY_CALL",
    "CONFIG_KEY_CHECKPOINT_NS",
    "CONFIG_KEY_CHECKPOINTER",
    "CONFIG_KEY_NODE_ERROR",
    "CONFIG_KEY_READ",
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
    "Runtime",
    "Send",
    "StreamMessagesHandler",
    "TASKS",
    "arun_with_retry",
    "run_with_retry",
    "no_op_heartbeat",
    "no_op_stream_writer",
    "loop_of",
    "new_scratchpad",
    "resolve_checkpointer",
]


def loop_of(call: Any) -> Any:
    """The Pregel loop behind a task's ``CONFIG_KEY_CALL`` (LangGraph binds the loop's
    ``accept_push`` into it), or None."""
    schedule = getattr(call, "keywords", {}).get("schedule_task")
    return getattr(schedule, "__self__", None)


def new_scratchpad(task_id: str, checkpoint_ns: str, step: int, stop: int) -> PregelScratchpad:
    """A fresh scratchpad for a task that has no resume values (alto never resumes)."""
    return _scratchpad(None, [], task_id, checkpoint_ns, None, step, stop)


def resolve_checkpointer(graph: Any, config: Any) -> Any:
    """The checkpointer a run of ``graph`` with ``config`` uses (None: none), as
    LangGraph decides it: ``checkpointer=False`` none, else the one a parent lends
    through the config, else the graph's own."""
    return graph._resolve_checkpointer(config)
