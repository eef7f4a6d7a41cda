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
import concurrent.futures
import contextvars
import dataclasses
import functools
import threading
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from langchain_core.runnables import Runnable, RunnableConfig

from ._pregel import (
    CONF,
    CONFIG_KEY_RUNNER_SUBMIT,
    CONFIG_KEY_SCRATCHPAD,
    CONFIG_KEY_SEND,
    CONFIG_KEY_TASK_ID,
    PUSH,
    TASKS,
    PregelExecutableTask,
    PregelNode,
    Send,
)
from .executor import Executor, gather_cancelled
from .messages import Frame, Header, Message
from .tasks import NodeRunner, push_task_for, scratchpad_of


@dataclasses.dataclass
class RunAhead:
    """A push task started before the loop reached its step."""

    task: PregelExecutableTask
    ancestry: tuple[Frame, ...]
    runner: NodeRunner
    #: resolves once the task has run (an asyncio future on the async path, a
    #: concurrent one on the sync path); its results are in ``task.writes``
    done: Any


class TaskView(Protocol):
    """What adoption and run-ahead read of a task: a ``PregelExecutableTask``, or the
    same facts gathered from the config of a task LangGraph runs inline."""

    id: str
    name: str
    writes: Any
    config: RunnableConfig


@dataclasses.dataclass
class _InlineTask:
    id: str
    name: str
    writes: Any
    config: RunnableConfig


class RequestRun:
    """Run-ahead scheduling for one run of one graph (one request, or one subgraph call).

    An instance is installed as LangGraph's runner-submit hook: the runner calls it to
    get ``submit`` and passes every task it would otherwise run on its own executor.
    ``AsyncRequestRun`` serves ``astream`` (asyncio tasks), ``SyncRequestRun`` serves
    ``stream`` (a thread pool); this base holds what they share: which Sends have run
    ahead, and matching the loop's push tasks to them.
    """

    def __init__(
        self,
        *,
        request_id: str,
        runners: Mapping[str, NodeRunner],
        retry_policy: Sequence[Any],
        executor: Executor,
    ) -> None:
        self.request_id = request_id
        self.runners = runners
        self.retry_policy = retry_policy
        self.executor = executor
        # (step, node, id(Send.arg)) -> run-aheads in the order they were started
        self._ready: dict[tuple[int, str, int], deque[RunAhead]] = defaultdict(deque)
        self._sends_started: dict[str, int] = {}  # task id -> TASKS writes run ahead
        self._lock = threading.Lock()  # the sync path touches the tables from threads
        self._closed = False
        #: task id -> exception, for adopted inline tasks whose twin failed
        self.inline_failures: dict[str, BaseException] = {}
        #: counters, for tests and benchmarks: how many tasks ran ahead / were adopted
        self.stats = {"run_ahead": 0, "adopted": 0}

    def __call__(self) -> Callable[..., Any]:
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
    ) -> Any:
        # Nested graphs must not inherit this run's hook through the task config.
        task.config[CONF].pop(CONFIG_KEY_RUNNER_SUBMIT, None)
        # The runner calls submit from one thread, and only once the step before is
        # complete, so every twin of this step is registered by now: an empty table
        # needs no lock (the common case, a fan-out whose sender ran alone).
        if self._ready and task.path[0] == PUSH:
            ahead = self._claim(task)
            if ahead is not None:
                self.stats["adopted"] += 1
                return self._adopt(ahead, task)
        return self._execute(fn, task, args, kwargs)

    # what the two paths implement
    def _execute(
        self, fn: Callable[..., Any], task: PregelExecutableTask, args: tuple, kwargs: dict
    ) -> Any:
        raise NotImplementedError

    def _adopt(self, ahead: RunAhead, task: PregelExecutableTask) -> Any:
        """A future that completes once ``ahead``'s result has been handed to ``task``."""
        raise NotImplementedError

    def _launch(self, ahead: RunAhead) -> None:
        raise NotImplementedError

    def _future(self) -> Any:
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------
    def _header(self, task: PregelExecutableTask, ancestry: tuple[Frame, ...]) -> Header:
        return Header(
            request_id=self.request_id,
            ancestry=ancestry,
            stage=task.name,
            step=scratchpad_of(task).step,
        )

    def _start_sends(self, sender: PregelExecutableTask, ancestry: tuple[Frame, ...]) -> None:
        """Start every Send that ``sender`` wrote and that has not run ahead yet."""
        sends = [v for c, v in sender.writes if c == TASKS and isinstance(v, Send)]
        if not sends:
            return
        pad = scratchpad_of(sender)
        step = pad.step + 1
        if step > pad.stop:  # the loop stops with GraphRecursionError before this step
            return
        sender_runner = self.runners.get(sender.name)
        started = []
        with self._lock:
            first = self._sends_started.get(sender.id, 0)
            if self._closed or first >= len(sends):
                return
            self._sends_started[sender.id] = len(sends)
            for idx in range(first, len(sends)):
                send = sends[idx]
                runner = self.runners.get(send.node)
                if runner is None:  # unknown node: the loop warns and skips it
                    continue
                twin = push_task_for(
                    sender,
                    sender_runner.node if sender_runner else None,
                    send,
                    runner.node,
                    runner.early,
                    idx,
                    step,
                    pad.stop,
                    self.retry_policy,
                )
                ahead = RunAhead(twin, (*ancestry, (sender.name, idx)), runner, self._future())
                self._ready[(step, send.node, id(send.arg))].append(ahead)
                self.stats["run_ahead"] += 1
                started.append(ahead)
        for ahead in started:
            self._launch(ahead)

    def _hand_over(self, ahead: RunAhead, task: TaskView) -> None:
        """Give ``task`` (the loop's) the writes of its run-ahead twin, then run its
        conditional edges, which read the pre-step state through ``task.config``."""
        writes, output = ahead.runner.hand_over(ahead.task.writes)
        task.writes.extend(writes)
        if ahead.runner.late:
            config = _as_child(task.config)
            for writer in ahead.runner.late:
                output = writer.invoke(output, config)
            self._late_sends_from(ahead, task)

    async def _ahand_over(self, ahead: RunAhead, task: TaskView) -> None:
        writes, output = ahead.runner.hand_over(ahead.task.writes)
        task.writes.extend(writes)
        if ahead.runner.late:
            config = _as_child(task.config)
            for writer in ahead.runner.late:
                output = await writer.ainvoke(output, config)
            self._late_sends_from(ahead, task)

    def _late_sends_from(self, ahead: RunAhead, task: TaskView) -> None:
        """After an adopted task's conditional edges ran: start the Sends they wrote."""
        with self._lock:
            self._sends_started[task.id] = self._sends_started.pop(ahead.task.id, 0)
        self._start_sends(task, ahead.ancestry)

    def _claim(self, task: PregelExecutableTask) -> RunAhead | None:
        return self._claim_key((scratchpad_of(task).step, task.name, id(task.input)))

    def claim_inline(self, input: Any, config: RunnableConfig) -> RunAhead | None:
        """For ``RunAheadAwareProc``: the run-ahead twin of the task running with this
        config, if LangGraph runs it inline (a single-task step skips the submit hook)."""
        metadata = config.get("metadata") or {}
        path = metadata.get("langgraph_path") or ()
        if not path or path[0] != PUSH:
            return None
        step = config[CONF][CONFIG_KEY_SCRATCHPAD].step
        ahead = self._claim_key((step, metadata.get("langgraph_node"), id(input)))
        if ahead is not None:
            with self._lock:
                self.stats["adopted"] += 1
        return ahead

    def _claim_key(self, key: tuple[int, Any, int]) -> RunAhead | None:
        with self._lock:
            queue = self._ready.get(key)
            if not queue:
                return None
            ahead = queue.popleft()
            if not queue:
                del self._ready[key]
            return ahead

    def _close_tables(self) -> list[RunAhead]:
        with self._lock:
            self._closed = True
            unclaimed = [a for q in self._ready.values() for a in q]
            self._ready.clear()
        return unclaimed


class AsyncRequestRun(RequestRun):
    """Run-ahead for ``astream``: every task is an asyncio task owned by this run."""

    def __init__(self, *, max_concurrency: int | None, **kw: Any) -> None:
        super().__init__(**kw)
        self._limit = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        self._owned: set[asyncio.Task[Any]] = set()
        self._stream_procs = False

    def _future(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    def _own(self, coro: Any, name: str) -> asyncio.Task[Any]:
        t = asyncio.get_running_loop().create_task(coro, name=f"alto:{name}")
        self._owned.add(t)
        t.add_done_callback(self._owned.discard)
        return t

    async def _run_limited(self, msg: Message) -> Any:
        async with self._limit:  # type: ignore[union-attr]
            return await self.executor.run(msg)

    def _execute(
        self, fn: Callable[..., Any], task: PregelExecutableTask, args: tuple, kwargs: dict
    ) -> Any:
        # LangGraph streams procs when an astream_events/astream_log handler listens;
        # twins must do the same to produce the same events
        self._stream_procs = kwargs.get("stream", False)
        msg = Message(self._header(task, ()), (fn, (task, *args), kwargs))
        # The task function's own coroutine, no wrapper: its value matters (a
        # functional-API @task call inside a node reads it), and this is the hot path.
        coro = self.executor.run(msg) if self._limit is None else self._run_limited(msg)
        t = self._own(coro, task.name)
        t.add_done_callback(functools.partial(self._sends_after, task))
        return t

    def _sends_after(self, task: PregelExecutableTask, done: asyncio.Task[Any]) -> None:
        # runs before LangGraph's own done callback (added later), i.e. before the loop
        # sees the task finish
        if not done.cancelled() and done.exception() is None:
            self._start_sends(task, ())

    def _launch(self, ahead: RunAhead) -> None:
        from langgraph.pregel._retry import arun_with_retry

        msg = Message(
            self._header(ahead.task, ahead.ancestry),
            (arun_with_retry, (ahead.task, self.retry_policy), {"stream": self._stream_procs}),
        )

        async def execute_ahead() -> None:
            try:
                if self._limit is None:
                    await self.executor.run(msg)
                else:
                    await self._run_limited(msg)
            except BaseException as exc:  # handed to the loop when it reaches this step
                if not ahead.done.done():
                    ahead.done.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                return
            if not ahead.done.done():
                ahead.done.set_result(None)
            self._start_sends(ahead.task, ahead.ancestry)

        self._own(execute_ahead(), ahead.task.name)

    def _adopt(self, ahead: RunAhead, task: PregelExecutableTask) -> Any:
        async def adopt() -> None:
            await asyncio.shield(ahead.done)
            await self._ahand_over(ahead, task)

        return self._own(adopt(), task.name)

    async def aclose(self) -> None:
        """Cancel whatever is still running (a failed request, or run-ahead never claimed)."""
        unclaimed = self._close_tables()
        while self._owned:
            await gather_cancelled(set(self._owned))
        for ahead in unclaimed:
            if ahead.done.done() and not ahead.done.cancelled():
                ahead.done.exception()  # retrieved: nobody will claim it


class SyncRequestRun(RequestRun):
    """Run-ahead for ``stream``: tasks run on a thread pool owned by this run, as
    LangGraph's own sync executor runs them (single-task steps stay on the caller's
    thread). Adopting never blocks a pool thread: it chains on the run-ahead future."""

    def __init__(self, *, config: dict[str, Any], **kw: Any) -> None:
        super().__init__(**kw)
        # max_workers = config["max_concurrency"], as LangGraph's sync executor. Not
        # LangChain's get_executor_for_config: that context manager always waits for
        # the pool on exit, and a run-ahead task nobody will claim must not hold up
        # a failed request.
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=config.get("max_concurrency"), thread_name_prefix="alto"
        )
        self._loop_futures: set[concurrent.futures.Future[Any]] = set()
        self._ahead_futures: set[concurrent.futures.Future[Any]] = set()

    def _future(self) -> concurrent.futures.Future[Any]:
        return concurrent.futures.Future()

    def _spawn(
        self, owner: set[concurrent.futures.Future[Any]], fn: Callable[..., Any]
    ) -> concurrent.futures.Future[Any]:
        fut = self._pool.submit(contextvars.copy_context().run, fn)
        with self._lock:
            owner.add(fut)
        fut.add_done_callback(lambda f: self._forget(owner, f))
        return fut

    def _forget(
        self, owner: set[concurrent.futures.Future[Any]], fut: concurrent.futures.Future[Any]
    ) -> None:
        with self._lock:
            owner.discard(fut)

    def _execute(
        self, fn: Callable[..., Any], task: PregelExecutableTask, args: tuple, kwargs: dict
    ) -> Any:
        def execute() -> Any:
            value = self.executor.run_sync(
                Message(self._header(task, ()), (fn, (task, *args), kwargs))
            )
            self._start_sends(task, ())
            return value

        return self._spawn(self._loop_futures, execute)

    def _launch(self, ahead: RunAhead) -> None:
        from langgraph.pregel._retry import run_with_retry

        msg = Message(
            self._header(ahead.task, ahead.ancestry),
            (run_with_retry, (ahead.task, self.retry_policy), {}),
        )

        def execute_ahead() -> None:
            try:
                self.executor.run_sync(msg)
            except BaseException as exc:  # handed to the loop when it reaches this step
                _settle(ahead.done, exc=exc)
                return
            _settle(ahead.done, value=None)
            self._start_sends(ahead.task, ahead.ancestry)

        self._spawn(self._ahead_futures, execute_ahead)

    def _adopt(self, ahead: RunAhead, task: PregelExecutableTask) -> Any:
        result: concurrent.futures.Future[None] = concurrent.futures.Future()
        ctx = contextvars.copy_context()

        def finish(done: concurrent.futures.Future[Any]) -> None:
            try:
                done.result()
                ctx.run(self._hand_over, ahead, task)
            except BaseException as exc:
                result.set_exception(exc)
            else:
                result.set_result(None)

        ahead.done.add_done_callback(finish)
        return result

    def close(self) -> None:
        """Cancel work not started yet; wait for the loop's own tasks, as LangGraph does,
        but not for run-ahead tasks nobody will claim (a failed request returns at once;
        they finish on their thread and their results are dropped)."""
        unclaimed = self._close_tables()
        for ahead in unclaimed:
            ahead.done.cancel()
        with self._lock:
            pending = self._loop_futures | self._ahead_futures
            loop_futures = set(self._loop_futures)
        for fut in pending:
            fut.cancel()
        concurrent.futures.wait(loop_futures)
        self._pool.shutdown(wait=False, cancel_futures=True)


def _as_child(config: RunnableConfig) -> RunnableConfig:
    """The task's config as its own steps see it: LangGraph runs a task's writers as
    steps of its proc, which do not carry the task's run name."""
    return {k: v for k, v in config.items() if k not in ("run_name", "run_id")}  # type: ignore[return-value]


def _settle(
    fut: concurrent.futures.Future[Any], *, value: Any = None, exc: BaseException | None = None
) -> None:
    """Resolve ``fut`` unless the run was closed (and cancelled it) meanwhile."""
    try:
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)
    except concurrent.futures.InvalidStateError:
        pass


class RunAheadAwareProc(Runnable[Any, Any]):
    """A node's task proc that knows about run-ahead.

    LangGraph's runner executes a step's only task inline, without the submit hook; if
    that task already ran ahead, this hands its result over instead of running the node
    a second time. It also strips the hook from the config, so that graphs invoked
    inside the node never see this run's hook.
    """

    def __init__(self, proc: Runnable[Any, Any]) -> None:
        self.proc = proc
        self.name = proc.get_name()

    def _adopted(
        self, input: Any, config: RunnableConfig | None
    ) -> tuple[tuple[RequestRun, RunAhead, TaskView] | None, RunnableConfig | None]:
        """(run, ahead, task) when this inline task has a run-ahead twin; the config
        without the hook either way. Cheap when nothing ran ahead: it runs per task."""
        conf = config.get(CONF) if config else None
        run = conf.get(CONFIG_KEY_RUNNER_SUBMIT) if conf else None
        if not isinstance(run, RequestRun):
            return None, config
        conf = dict(conf)
        del conf[CONFIG_KEY_RUNNER_SUBMIT]
        config = {**config, CONF: conf}  # type: ignore[misc]
        if not (run._ready or run.inline_failures):
            return None, config
        writes = getattr(conf.get(CONFIG_KEY_SEND), "__self__", None)  # the task's deque
        if writes is None:
            return None, config
        task = _InlineTask(conf.get(CONFIG_KEY_TASK_ID, ""), self.name, writes, config)
        failed = run.inline_failures.get(task.id)
        if failed is not None:  # a retry of an adopted task: its twin already retried
            raise failed
        ahead = run.claim_inline(input, config)
        return ((run, ahead, task) if ahead is not None else None), config

    @staticmethod
    def _hand_over(adopted: tuple[RequestRun, RunAhead, TaskView]) -> Any:
        run, ahead, task = adopted
        try:
            ahead.done.result()
            return run._hand_over(ahead, task)
        except BaseException as exc:
            run.inline_failures[task.id] = exc
            raise

    @staticmethod
    async def _ahand_over(adopted: tuple[RequestRun, RunAhead, TaskView]) -> Any:
        run, ahead, task = adopted
        try:
            await asyncio.shield(ahead.done)
            return await run._ahand_over(ahead, task)
        except BaseException as exc:
            run.inline_failures[task.id] = exc
            raise

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        adopted, config = self._adopted(input, config)
        if adopted is None:
            return self.proc.invoke(input, config, **kwargs)
        return self._hand_over(adopted)

    def ainvoke(  # type: ignore[override]
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Awaitable[Any]:
        # returns the awaitable rather than awaiting it: one coroutine frame less per task
        adopted, config = self._adopted(input, config)
        if adopted is None:
            return self.proc.ainvoke(input, config, **kwargs)
        return self._ahand_over(adopted)

    # LangGraph streams a task's proc when an astream_log/astream_events handler listens
    def stream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        adopted, config = self._adopted(input, config)
        if adopted is None:
            yield from self.proc.stream(input, config, **kwargs)
        else:
            yield self._hand_over(adopted)

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        adopted, config = self._adopted(input, config)
        if adopted is None:
            async for chunk in self.proc.astream(input, config, **kwargs):
                yield chunk
        else:
            yield await self._ahand_over(adopted)


class _RunAheadAwareNode(PregelNode):
    @functools.cached_property
    def node(self) -> Runnable[Any, Any] | None:  # type: ignore[override]
        proc = PregelNode.node.func(self)  # type: ignore[attr-defined]
        return None if proc is None else RunAheadAwareProc(proc)


def run_ahead_aware(node: PregelNode) -> PregelNode:
    """``node`` whose task proc is a ``RunAheadAwareProc``."""
    attrs = {
        k: v
        for k, v in node.__dict__.items()
        if k not in ("flat_writers", "node", "input_cache_key")
    }
    return _RunAheadAwareNode(**attrs)
