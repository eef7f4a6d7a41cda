"""Building tasks for run-ahead: how a node's task splits around the pre-step state,
and the push task a ``Send`` becomes before LangGraph's loop builds it."""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections import deque
from collections.abc import Mapping
from typing import Any

from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import patch_config

from .._langgraph import (
    CONF,
    CONFIG_KEY_CHECKPOINT_NS,
    CONFIG_KEY_CHECKPOINTER,
    CONFIG_KEY_READ,
    CONFIG_KEY_READ_STATE,
    CONFIG_KEY_RUNTIME,
    CONFIG_KEY_SCRATCHPAD,
    CONFIG_KEY_SEND,
    CONFIG_KEY_TASK_ID,
    NS_END,
    NS_SEP,
    PULL,
    PUSH,
    PUSH_TRIGGER,
    ChannelWrite,
    ChannelWriteEntry,
    PregelExecutableTask,
    PregelNode,
    RefusingSaver,
    Send,
    branch_parts,
    branch_runnable,
    finish_branch,
    new_scratchpad,
)
from ..views import StateView, plain

#: Where a run-ahead task whose conditional edges must wait leaves its node's output
#: for them (a write in its own task's writes, taken out again on hand-over).
NODE_OUTPUT = "__alto_node_output__"


@dataclasses.dataclass(frozen=True)
class NodeRunner:
    """How one node's task is split for run-ahead: the part that needs no state, and the rest."""

    node: PregelNode
    #: what a run-ahead task runs: bound + the writers that only map the node's output
    #: (state updates, edges, ``Command`` gotos), safe before the pre-step state exists,
    #: + (when ``late`` is not empty) a write of the output to ``NODE_OUTPUT``.
    early: Runnable
    #: conditional edges: they read the pre-step state, so they wait for the loop.
    late: tuple[Runnable, ...]
    #: the writers of ``early`` (LangGraph applies a task's writers to a ``Command``
    #: a subgraph sends to its parent)
    early_writers: tuple[Runnable, ...]
    #: bound + every writer, the conditional edges reading a view of the state (a pull
    #: task that runs ahead; None when ``late`` holds a writer that is not an edge)
    complete: Runnable | None = None

    @classmethod
    def of(cls, node: PregelNode) -> NodeRunner | None:
        proc = node.node
        if proc is None:
            return None
        writers = list(node.flat_writers)
        split = next(
            (i for i, w in enumerate(writers) if not isinstance(w, ChannelWrite)), len(writers)
        )
        if split == len(writers):
            return cls(node, proc, (), tuple(writers))
        keep = ChannelWrite((ChannelWriteEntry(NODE_OUTPUT),))
        early = node.copy({"writers": [*writers[:split], keep]})
        viewed = [_on_view(w) for w in writers[split:]]
        complete = None
        if all(v is not None for v in viewed):
            complete = node.copy({"writers": [*writers[:split], *viewed]}).node
        return cls(node, early.node, tuple(writers[split:]), tuple(early.flat_writers), complete)

    def hand_over(self, twin_writes: Any) -> tuple[list[tuple[str, Any]], Any]:
        """The twin's writes for the loop's task, and the node output its late writers need."""
        if not self.late:
            return list(twin_writes), None
        output = None
        writes = []
        for chan, value in twin_writes:
            if chan == NODE_OUTPUT:
                output = value
            else:
                writes.append((chan, value))
        return writes, output


def _on_view(runnable: Runnable) -> Runnable | None:
    """A conditional edge that routes on a state view as it routes on the state: LangGraph
    hands a dict state's router the node's output keys under the state (a copy, which
    would read the whole view); here the copy is a view too."""
    parts = branch_parts(runnable)
    if parts is None:
        return None
    spec, reader, writer = parts

    def value(input: Any, config: Any, reader: Any) -> Any:
        if reader is None:
            return input
        state = reader(config)
        if isinstance(state, dict) and isinstance(input, dict) and spec.input_schema is None:
            if isinstance(state, StateView):
                return StateView({**input, **plain(state)}, state._log)
            return {**input, **state}
        return state

    # ``config: RunnableConfig``: how LangGraph's RunnableCallable knows to pass it
    def route(input: Any, config: RunnableConfig, *, reader: Any, writer: Any) -> Any:
        result = spec.path.invoke(value(input, config, reader), config)
        return finish_branch(spec, writer, input, result, config)

    async def aroute(input: Any, config: RunnableConfig, *, reader: Any, writer: Any) -> Any:
        result = await spec.path.ainvoke(value(input, config, reader), config)
        return finish_branch(spec, writer, input, result, config)

    return branch_runnable(route, aroute, reader, writer)


def node_runners(nodes: Mapping[str, PregelNode]) -> dict[str, NodeRunner]:
    return {name: r for name, node in nodes.items() if (r := NodeRunner.of(node)) is not None}


class StateNotReady(BaseException):
    """A task that ran ahead of its superstep read graph state, which is not known
    before its step: the twin is dropped and the node runs at its step (a miss). A
    ``BaseException``, so node code that catches ``Exception`` cannot swallow it."""


class _StateNotReadyReader:
    """A twin's state readers (``CONFIG_KEY_READ``, ``CONFIG_KEY_READ_STATE``): any use
    raises ``StateNotReady``; LangGraph's reader is a ``functools.partial``, and ToolNode
    reads its ``args``, so those raise too."""

    def __call__(self, *_: Any, **__: Any) -> Any:
        raise StateNotReady("alto: a task that ran ahead of its step read graph state")

    @property
    def args(self) -> Any:
        return self()

    func = keywords = args


STATE_NOT_READY = _StateNotReadyReader()


class MemoryNotReady(StateNotReady):
    """A task that ran ahead of its superstep started a graph that keeps its memory in
    the run's checkpointer (a subgraph): its checkpoints belong to the loop's task,
    whose id (part of their namespace) is known only at its step. The twin is dropped
    before the nested graph ran anything, and its node no longer runs ahead."""


#: a twin's checkpointer, in place of the run's: nothing a twin runs is ever saved
NOT_YET_SAVER = RefusingSaver(
    lambda: MemoryNotReady("alto: a task that ran ahead of its step started a graph with memory")
)


def new_id() -> str:
    """A random UUID-shaped id. Not ``uuid.uuid4()``: apps (and LangGraph's own tests)
    patch that to get deterministic ids, and alto must not consume them."""
    return str(uuid.UUID(bytes=os.urandom(16), version=4))


_TASK_SPECIFIC_CONFIGURABLE = frozenset((CONFIG_KEY_CHECKPOINT_NS, "checkpoint_id"))


def _is_task_metadata(key: str, node_metadata: set[str]) -> bool:
    """Metadata that belongs to one task (LangGraph's, or its node's), not to the run."""
    return (
        key.startswith("langgraph_") or key in node_metadata or key in _TASK_SPECIFIC_CONFIGURABLE
    )


def scratchpad_of(task: PregelExecutableTask) -> Any:
    return task.config[CONF][CONFIG_KEY_SCRATCHPAD]


def push_task_for(
    sender: PregelExecutableTask,
    sender_node: PregelNode | None,
    send: Send,
    runner: NodeRunner,
    idx: int,
    step: int,
    stop: int,
    extra: dict[str, Any],
) -> PregelExecutableTask:
    """The push task LangGraph would build for ``send`` at ``step``, built from its
    sender (``twin_task``). The Send index in ``langgraph_path`` is provisional: the
    loop numbers Sends only once the step is complete."""
    timeout = send.timeout if send.timeout is not None else runner.node.timeout
    return twin_task(
        sender,
        sender_node,
        runner,
        send.node,
        send.arg,
        (PUSH, idx, False),
        PUSH_TRIGGER,
        step,
        stop,
        extra,
        timeout,
    )


def pull_task_for(
    sender: PregelExecutableTask,
    sender_node: PregelNode | None,
    runner: NodeRunner,
    name: str,
    input: Any,
    step: int,
    stop: int,
    extra: dict[str, Any],
    complete: bool = False,
) -> PregelExecutableTask:
    """The pull task of node ``name`` that LangGraph would build at ``step``, on
    ``input`` (a view of the state), built from the task whose writes trigger it;
    ``complete``: it runs the node's conditional edges too (they read the view)."""
    node = runner.node
    triggers = tuple(sorted(node.triggers))
    return twin_task(
        sender,
        sender_node,
        runner,
        name,
        input,
        (PULL, name),
        triggers,
        step,
        stop,
        extra,
        node.timeout,
        complete,
    )


def twin_task(
    sender: PregelExecutableTask,
    sender_node: PregelNode | None,
    runner: NodeRunner,
    name: str,
    input: Any,
    path: tuple[Any, ...],
    triggers: Any,
    step: int,
    stop: int,
    extra: dict[str, Any],
    timeout: Any,
    complete: bool = False,
) -> PregelExecutableTask:
    """A task of node ``name`` at ``step``, as LangGraph would build it, for a twin
    (``complete``: with all the node's writers; else those that need no state).

    The loop's config is not reachable from a runner hook, so this derives it from the
    sender's task config (the task whose writes create this one) by replacing
    everything task-specific, as LangGraph's ``prepare_single_task`` sets it. The task
    id is provisional; everything else matches. The twin makes one attempt (no retry
    policy: retries belong to the loop's task); ``extra`` is added to its configurable.
    """
    node = runner.node
    conf = sender.config[CONF]
    sender_ns = conf[CONFIG_KEY_CHECKPOINT_NS]
    parent_ns = sender_ns.rsplit(NS_SEP, 1)[0] if NS_SEP in sender_ns else ""
    task_id = new_id()
    checkpoint_ns = f"{parent_ns}{NS_SEP}{name}" if parent_ns else name
    task_ns = f"{checkpoint_ns}{NS_END}{task_id}"
    # The sender's own node metadata and tags were merged into its config; drop them.
    sender_node_meta = set(sender_node.metadata or ()) if sender_node else set()
    # LangChain copies configurable values into metadata (checkpoint_ns among them):
    # drop those that are the sender's own, they are re-derived from the new config.
    metadata = {
        k: v
        for k, v in sender.config.get("metadata", {}).items()
        if not _is_task_metadata(k, sender_node_meta)
    }
    metadata.update(
        langgraph_step=step,
        langgraph_node=name,
        langgraph_triggers=triggers,
        langgraph_path=path,
        langgraph_checkpoint_ns=task_ns,
    )
    if node.metadata:
        metadata.update(node.metadata)
    sender_tags = set(sender_node.tags or ()) if sender_node else set()
    tags = [t for t in sender.config.get("tags", []) if t not in sender_tags]
    tags += [t for t in (node.tags or []) if t not in tags]
    callbacks = sender.config.get("callbacks")
    if callbacks is not None and hasattr(callbacks, "copy"):
        # the step's child manager of the graph run; the sender's run added its own
        # metadata to it, which the twin's run must not inherit
        callbacks = callbacks.copy()
        callbacks.remove_tags([f"graph:step:{step - 1}"])
        callbacks.add_tags([f"graph:step:{step}"], False)
        callbacks.remove_metadata(
            [k for k in callbacks.metadata if _is_task_metadata(k, sender_node_meta)]
        )
    writes: deque[tuple[str, Any]] = deque()
    runtime = conf[CONFIG_KEY_RUNTIME]
    if runtime.execution_info is not None:
        runtime = runtime.override(
            execution_info=dataclasses.replace(
                runtime.execution_info, checkpoint_ns=task_ns, task_id=task_id
            )
        )
    config = patch_config(
        {**sender.config, "tags": tags},
        run_name=name,
        callbacks=callbacks,
        configurable={
            CONFIG_KEY_TASK_ID: task_id,
            CONFIG_KEY_SEND: writes.extend,
            CONFIG_KEY_READ: STATE_NOT_READY,
            CONFIG_KEY_READ_STATE: STATE_NOT_READY,
            CONFIG_KEY_CHECKPOINT_NS: task_ns,
            CONFIG_KEY_SCRATCHPAD: new_scratchpad(task_id, task_ns, step, stop),
            CONFIG_KEY_RUNTIME: runtime,
            **extra,
        },
    )
    if config[CONF].get(CONFIG_KEY_CHECKPOINTER) is not None:
        config[CONF][CONFIG_KEY_CHECKPOINTER] = NOT_YET_SAVER
    config["metadata"] = metadata  # after patch_config, which copies the sender's ns in
    return PregelExecutableTask(
        name,
        input,
        runner.complete if complete else runner.early,
        writes,
        config,
        triggers,
        (),
        None,
        task_id,
        path,
        writers=tuple(node.flat_writers) if complete else runner.early_writers,
        subgraphs=node.subgraphs,
        timeout=timeout,
    )
