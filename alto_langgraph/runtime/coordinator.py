"""Per-request coordination: logical supersteps without execution barriers.

LangGraph's Pregel loop stays the bookkeeper of a request: it decides which tasks make
up logical step ``k``, applies their writes in task-path order once all of them have
finished, emits ``values`` once per step, and counts the recursion limit. What alto
changes is *when tasks run*:

* A push task (a ``Send``) reads nothing but its payload, so the moment its sender
  finishes, ``RequestRun`` starts it ("run-ahead"), one logical step before the loop
  gets there. When the loop later schedules that step, the task is matched to its
  run-ahead execution and only the result is handed over. Run-ahead tasks send further
  run-ahead tasks, so Send chains run as fast as their own data allows.
* A pull task (a node triggered by an edge) reads the whole state at the end of its
  trigger step, so it waits for the loop, i.e. for the frontier of its own request.
* Conditional edges read the pre-step state too. A run-ahead task runs its node and
  plain writers early and its conditional edges when the loop reaches its step.

Every asyncio task this module starts is owned by its ``RequestRun`` and cancelled
when the request ends, whichever way it ends.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langchain_core.runnables import Runnable
from langchain_core.runnables.config import patch_config

from ._pregel import (
    CONF,
    CONFIG_KEY_CHECKPOINT_NS,
    CONFIG_KEY_READ,
    CONFIG_KEY_RUNNER_SUBMIT,
    CONFIG_KEY_RUNTIME,
    CONFIG_KEY_SCRATCHPAD,
    CONFIG_KEY_SEND,
    CONFIG_KEY_TASK_ID,
    NS_END,
    NS_SEP,
    PUSH,
    PUSH_TRIGGER,
    TASKS,
    ChannelWrite,
    PregelExecutableTask,
    PregelNode,
    Send,
    new_scratchpad,
)
from .executor import Executor, gather_cancelled
from .messages import Frame, Header, Message


@dataclasses.dataclass(frozen=True)
class NodeRunner:
    """How one node's task is split for run-ahead: the part that needs no state, and the rest."""

    node: PregelNode
    #: bound + the writers that only map the node's output (state updates, edges,
    #: ``Command`` gotos): safe to run before the pre-step state exists.
    early: Runnable
    #: conditional edges: they read the pre-step state, so they wait for the loop.
    late: tuple[Runnable, ...]

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
            return cls(node, proc, ())
        early = node.copy({"writers": writers[:split]}).node
        return cls(node, early, tuple(writers[split:]))


def node_runners(nodes: Mapping[str, PregelNode]) -> dict[str, NodeRunner]:
    return {name: r for name, node in nodes.items() if (r := NodeRunner.of(node)) is not None}


@dataclasses.dataclass
class RunAhead:
    """A push task started before the loop reached its step."""

    task: PregelExecutableTask
    ancestry: tuple[Frame, ...]
    runner: NodeRunner
    done: asyncio.Future[Any]  # result: the output of ``runner.early``
    claimed: bool = False


def _no_state_read(*_: Any, **__: Any) -> Any:
    raise RuntimeError(
        "alto: a task started ahead of its superstep tried to read graph state from "
        "inside its node; only conditional edges may read state (they run once the "
        "step is reached)"
    )


class RequestRun:
    """Run-ahead scheduling for one run of one graph (one request, or one subgraph call).

    An instance is installed as LangGraph's runner-submit hook: the runner calls
    ``run_ahead()`` to get ``submit`` and passes it every task it would otherwise run
    on its own executor.
    """

    def __init__(
        self,
        *,
        request_id: str,
        runners: Mapping[str, NodeRunner],
        retry_policy: Sequence[Any],
        executor: Executor,
        max_concurrency: int | None,
    ) -> None:
        self.request_id = request_id
        self.runners = runners
        self.retry_policy = retry_policy
        self.executor = executor
        self._limit = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        self._owned: set[asyncio.Task[Any]] = set()
        # (step, node, id(Send.arg)) -> run-aheads in the order they were started
        self._ready: dict[tuple[int, str, int], deque[RunAhead]] = defaultdict(deque)
        self._ancestry: dict[str, tuple[Frame, ...]] = {}  # task id -> ancestry
        self._sends_started: dict[str, int] = {}  # task id -> TASKS writes run ahead
        self._closed = False
        #: counters, for tests and ``explain``: how many tasks ran ahead / were adopted
        self.stats = {"submitted": 0, "run_ahead": 0, "adopted": 0}

    # -- the runner-submit hook --------------------------------------------------
    def __call__(self) -> Callable[..., asyncio.Future[Any]]:
        # LangGraph calls the hook (a WeakMethod by default) to get the submit function.
        return self.submit

    def submit(
        self,
        fn: Callable[..., Any],
        task: PregelExecutableTask,
        *args: Any,
        __name__: str | None = None,
        __cancel_on_exit__: bool = False,
        __reraise_on_exit__: bool = True,
        __next_tick__: bool = False,
        **kwargs: Any,
    ) -> asyncio.Future[Any]:
        # Nested graphs must not inherit this run's hook through the task config.
        task.config[CONF].pop(CONFIG_KEY_RUNNER_SUBMIT, None)
        self.stats["submitted"] += 1
        ahead = self._claim(task) if task.path[0] == PUSH else None
        if ahead is not None:
            coro = self._adopt(ahead, task)
        else:
            coro = self._execute(fn, task, args, kwargs)
        return self._own(coro, __name__ or task.name)

    # -- execution ---------------------------------------------------------------
    def _own(self, coro: Any, name: str) -> asyncio.Task[Any]:
        t = asyncio.get_running_loop().create_task(coro, name=f"alto:{name}")
        self._owned.add(t)
        t.add_done_callback(self._owned.discard)
        return t

    def _header(self, task: PregelExecutableTask, ancestry: tuple[Frame, ...]) -> Header:
        return Header(
            request_id=self.request_id,
            ancestry=ancestry,
            stage=task.name,
            step=_scratchpad_of(task).step,
        )

    async def _execute(
        self, fn: Callable[..., Any], task: PregelExecutableTask, args: tuple, kwargs: dict
    ) -> None:
        ancestry = self._ancestry.pop(task.id, ())
        msg = Message(self._header(task, ancestry), (fn, (task, *args), kwargs))
        if self._limit is None:
            await self.executor.run(msg)
        else:
            async with self._limit:
                await self.executor.run(msg)
        self._start_sends(task, ancestry)

    async def _execute_ahead(self, ahead: RunAhead) -> None:
        from langgraph.pregel._retry import arun_with_retry

        task = ahead.task
        out: list[Any] = []
        early = _capture_output(ahead.runner.early, out) if ahead.runner.late else None
        run_task = dataclasses.replace(task, proc=early) if early is not None else task
        msg = Message(
            self._header(task, ahead.ancestry),
            (arun_with_retry, (run_task, self.retry_policy), {}),
        )
        try:
            if self._limit is None:
                await self.executor.run(msg)
            else:
                async with self._limit:
                    await self.executor.run(msg)
        except BaseException as exc:  # handed to the loop when it reaches this step
            if not ahead.done.done():
                ahead.done.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        if not ahead.done.done():
            ahead.done.set_result(out[0] if out else None)
        self._start_sends(task, ahead.ancestry)

    async def _adopt(self, ahead: RunAhead, task: PregelExecutableTask) -> None:
        """The loop reached the step of a task that already ran ahead: hand over its result."""
        self.stats["adopted"] += 1
        output = await asyncio.shield(ahead.done)
        task.writes.extend(ahead.task.writes)
        if ahead.runner.late:
            # Conditional edges: the loop's task config reads the pre-step state.
            for writer in ahead.runner.late:
                output = await writer.ainvoke(output, task.config)
            self._sends_started[task.id] = self._sends_started.pop(ahead.task.id, 0)
            self._start_sends(task, ahead.ancestry)

    # -- run-ahead ---------------------------------------------------------------
    def _start_sends(self, sender: PregelExecutableTask, ancestry: tuple[Frame, ...]) -> None:
        """Start every Send that ``sender`` wrote and that has not run ahead yet."""
        if self._closed:
            return
        sends = [v for c, v in sender.writes if c == TASKS and isinstance(v, Send)]
        first = self._sends_started.get(sender.id, 0)
        if first >= len(sends):
            return
        self._sends_started[sender.id] = len(sends)
        pad = _scratchpad_of(sender)
        step = pad.step + 1
        if step > pad.stop:  # the loop will stop with GraphRecursionError first
            return
        for idx in range(first, len(sends)):
            send = sends[idx]
            runner = self.runners.get(send.node)
            if runner is None:  # unknown node: the loop warns and skips it
                continue
            frames = (*ancestry, (sender.name, idx))
            sender_runner = self.runners.get(sender.name)
            twin = _push_task_for(
                sender,
                sender_runner.node if sender_runner else None,
                send,
                runner.node,
                idx,
                step,
                pad.stop,
                self.retry_policy,
            )
            ahead = RunAhead(twin, frames, runner, asyncio.get_running_loop().create_future())
            self._ready[(step, send.node, id(send.arg))].append(ahead)
            self.stats["run_ahead"] += 1
            self._own(self._execute_ahead(ahead), send.node)

    def _claim(self, task: PregelExecutableTask) -> RunAhead | None:
        key = (_scratchpad_of(task).step, task.name, id(task.input))
        queue = self._ready.get(key)
        if not queue:
            return None
        ahead = queue.popleft()
        if not queue:
            del self._ready[key]
        ahead.claimed = True
        return ahead

    # -- lifecycle ---------------------------------------------------------------
    async def aclose(self) -> None:
        """Cancel whatever is still running (a failed request, or run-ahead never claimed)."""
        self._closed = True
        while self._owned:
            await gather_cancelled(set(self._owned))
        for queue in self._ready.values():
            for ahead in queue:
                if ahead.done.done() and not ahead.done.cancelled():
                    ahead.done.exception()  # mark retrieved: nobody will claim it
        self._ready.clear()


_TASK_SPECIFIC_CONFIGURABLE = frozenset((CONFIG_KEY_CHECKPOINT_NS, "checkpoint_id"))


def _is_task_metadata(key: str, node_metadata: set[str]) -> bool:
    """Metadata that belongs to one task (LangGraph's, or its node's), not to the run."""
    return (
        key.startswith("langgraph_") or key in node_metadata or key in _TASK_SPECIFIC_CONFIGURABLE
    )


def _scratchpad_of(task: PregelExecutableTask) -> Any:
    return task.config[CONF][CONFIG_KEY_SCRATCHPAD]


def _capture_output(proc: Runnable, out: list[Any]) -> Runnable:
    """``proc`` followed by a step that records its output (for the late writers)."""
    from langchain_core.runnables import RunnableLambda

    def keep(value: Any) -> Any:
        out.append(value)
        return value

    return proc | RunnableLambda(keep, name="alto:keep")


def _push_task_for(
    sender: PregelExecutableTask,
    sender_node: PregelNode | None,
    send: Send,
    node: PregelNode,
    idx: int,
    step: int,
    stop: int,
    retry_policy: Sequence[Any],
) -> PregelExecutableTask:
    """The push task LangGraph would build for ``send`` at ``step``, built from its sender.

    The loop's config is not reachable from a runner hook, so this derives it from the
    sender's task config by replacing everything task-specific, as LangGraph's
    ``prepare_push_task_send`` sets it. The task id and the Send index in
    ``langgraph_path`` are provisional (the loop numbers Sends only once the step is
    complete); everything else matches.
    """
    conf = sender.config[CONF]
    sender_ns = conf[CONFIG_KEY_CHECKPOINT_NS]
    parent_ns = sender_ns.rsplit(NS_SEP, 1)[0] if NS_SEP in sender_ns else ""
    task_id = str(uuid.uuid4())
    checkpoint_ns = f"{parent_ns}{NS_SEP}{send.node}" if parent_ns else send.node
    task_ns = f"{checkpoint_ns}{NS_END}{task_id}"
    path = (PUSH, idx, False)
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
        langgraph_node=send.node,
        langgraph_triggers=PUSH_TRIGGER,
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
        run_name=send.node,
        callbacks=callbacks,
        configurable={
            CONFIG_KEY_TASK_ID: task_id,
            CONFIG_KEY_SEND: writes.extend,
            CONFIG_KEY_READ: _no_state_read,
            CONFIG_KEY_CHECKPOINT_NS: task_ns,
            CONFIG_KEY_SCRATCHPAD: new_scratchpad(task_id, task_ns, step, stop),
            CONFIG_KEY_RUNTIME: runtime,
        },
    )
    config["metadata"] = metadata  # after patch_config, which copies the sender's ns in
    return PregelExecutableTask(
        send.node,
        send.arg,
        node.node,
        writes,
        config,
        PUSH_TRIGGER,
        node.retry_policy or retry_policy,
        None,
        task_id,
        path,
        writers=node.flat_writers,
        subgraphs=node.subgraphs,
        timeout=send.timeout if send.timeout is not None else node.timeout,
    )
