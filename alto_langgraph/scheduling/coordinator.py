"""Per-request coordination: logical supersteps without execution barriers.

LangGraph's Pregel loop stays the bookkeeper of a request: it decides which tasks make
up logical step ``k``, applies their writes in task-path order once all of them have
finished, emits ``values`` once per step, and counts the recursion limit. What alto
changes is *when tasks run*:

* A push task (a ``Send``) reads nothing but its payload, so the moment its sender
  finishes, ``RequestRun`` starts a twin of it ("run-ahead"), one logical step before
  the loop gets there. When the loop later runs that step, the task's proc (a
  ``RunAheadAwareProc``) finds the twin and hands its result over instead of running
  the node again. Twins start twins, so Send chains run as fast as their data allows.
* A pull task (a node triggered by an edge) reads the state at the end of its trigger
  step. When a task finishes while its step's siblings still run, the tasks its writes
  trigger start as twins on a view of the writes known so far (``progress.py``), which
  records what they read; at hand-over the twin is adopted if nothing it read received
  a write it did not see, else the node runs again at its step (a miss). The app
  learns what nodes read and write, and holds a twin that it can tell would miss.
* Conditional edges read the pre-step state too. A Send's twin runs its node and plain
  writers early, and its conditional edges at hand-over, when the loop is at its step;
  a pull twin's route on its view (their reads are checked with the node's).

With a checkpointer, the loop saves a task's writes when the task finishes, and a
twin's writes (or its interrupt) reach it only through the loop's task that adopts
them: nothing speculative is saved. What names the loop's task, whose id is known only
at its step, is renamed or not done by a twin: the id of its node's ``interrupt()`` is
derived again from the loop's task at hand-over; a graph run inside the twin that
interrupts or keeps checkpoints makes it a miss (its namespaces name the twin).

A twin makes a single attempt. The hand-over happens inside LangGraph's own retry loop
around the loop's task, so a twin that failed (or conditional edges that fail at
hand-over) count as that task's first attempt and LangGraph retries from there,
running the node as it would have. Every task this module starts is owned by its
``RequestRun`` and cancelled (asyncio) or abandoned (threads) when the request ends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import dataclasses
import functools
import threading
import time
from collections import defaultdict, deque
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from typing import Any

from langchain_core.runnables import Runnable, RunnableConfig
from langgraph.errors import GraphInterrupt
from langgraph.types import Command, Interrupt

from .._langgraph import (
    CONF,
    CONFIG_KEY_CALL,
    CONFIG_KEY_CHECKPOINT_NS,
    CONFIG_KEY_READ,
    CONFIG_KEY_RUNNER_SUBMIT,
    CONFIG_KEY_SCRATCHPAD,
    CONFIG_KEY_SEND,
    CONFIG_KEY_TASK_ID,
    PULL,
    PUSH,
    TASKS,
    PregelExecutableTask,
    PregelNode,
    Send,
    arun_with_retry,
    chain_future,
    loop_of,
    new_scratchpad,
    run_with_retry,
    task_path_str,
    with_task_proc,
    wrap_loop_stream,
)
from ..config_keys import CONFIG_KEY_ANCESTRY, CONFIG_KEY_ON_ADOPT, CONFIG_KEY_YIELD, Frame
from ..views import ReadLog, StateView, tracked_input, untrack
from .partial import HeldUpdates, StreamedUpdates, TaskSink
from .progress import Basis, BranchReader, Finished, PullNode, RunAheadStats, StepLog
from .tasks import (
    MemoryNotReady,
    NodeRunner,
    StateNotReady,
    pull_task_for,
    push_task_for,
    scratchpad_of,
)

#: set on the config of every task the submit hook saw, to the run that saw it
_SUBMITTED_BY = "__alto_submitted_by"
#: set on the config of a loop task that runs its node: when it was submitted
_STARTED = "__alto_started"


class DeferredCalls:
    """``CONFIG_KEY_CALL`` of a twin: functional-API ``@task`` calls made inside it.

    Such a call becomes a task of the loop's step, so it cannot run before the loop
    is there. Calls wait here until the loop reaches the twin's step, then go through
    the call machinery of the loop's own task (``bind``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._target: Callable[..., Any] | None = None
        self._pending: list[tuple[tuple[Any, ...], dict[str, Any], Any]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            if self._target is None:
                try:  # the kind of future the caller awaits, as LangGraph's own
                    fut: Any = asyncio.get_running_loop().create_future()
                except RuntimeError:
                    fut = concurrent.futures.Future()
                self._pending.append((args, kwargs, fut))
                return fut
        return self._target(*args, **kwargs)

    def bind(self, target: Callable[..., Any] | None) -> None:
        """Send the calls made so far, and any later, through ``target`` (once)."""
        if target is None:
            return
        with self._lock:
            if self._target is not None:
                return
            self._target, pending, self._pending = target, self._pending, []
        for args, kwargs, fut in pending:
            try:
                chain_future(target(*args, **kwargs), fut)
            except Exception as exc:  # handed to the waiting twin, not to the binder
                _fail(fut, exc)

    def abandon(self) -> None:
        """The request ended before the loop reached the twin: fail its waiting calls
        (a twin blocked on one would keep its thread, and the process, alive)."""
        self.bind(_request_ended)


def _fail(fut: Any, exc: BaseException) -> None:
    if isinstance(fut, asyncio.Future):
        fut.get_loop().call_soon_threadsafe(lambda: fut.done() or fut.set_exception(exc))
    elif fut.set_running_or_notify_cancel():
        fut.set_exception(exc)


def _request_ended(*_: Any, **__: Any) -> Any:
    raise RuntimeError("alto: the request ended before this run-ahead task's step")


@dataclasses.dataclass(eq=False)
class RunAhead:
    """A task started before the loop reached its step: a Send's push task, or a pull
    task on a view of the state (``basis``)."""

    task: PregelExecutableTask
    ancestry: tuple[Frame, ...]
    runner: NodeRunner
    calls: DeferredCalls
    #: resolves once the twin has run (an asyncio future on the async path, a
    #: concurrent one on the sync path); its results are in ``task.writes``
    done: Any
    #: what the twin raised; kept here, not in ``done``: nobody may ever claim the
    #: twin, and a future's unretrieved exception would be logged
    error: BaseException | None = None
    #: a pull task's: what its view of the state was built from, and what it read
    basis: Basis | None = None
    reads: ReadLog | None = None
    #: a streaming node's: its partial updates, until the loop adopts its result
    held: HeldUpdates | None = None
    #: its conditional edges ran too (on its view): nothing is left for hand-over
    complete: bool = False
    #: when it was started (``time.perf_counter``)
    started: float = dataclasses.field(default_factory=time.perf_counter)

    @property
    def step(self) -> int:
        return scratchpad_of(self.task).step

    @property
    def key(self) -> Any:
        """Its entry in the run's ``StepLog``: a pull task's node, or the twin itself."""
        return (PULL, self.task.name) if self.basis is not None else self


@dataclasses.dataclass
class _TaskView:
    """The loop's task as a proc sees it: its id, name and config; ``writes`` records
    what the hand-over sends, which also goes to LangGraph through ``send``."""

    id: str
    name: str
    writes: deque[tuple[str, Any]]
    config: RunnableConfig | None


class RequestRun:
    """Run-ahead scheduling for one run of one graph (one request, or one subgraph call).

    An instance is installed as LangGraph's runner-submit hook: the runner calls it to
    get ``submit`` and passes every task it would otherwise run on its own executor.
    ``AsyncRequestRun`` serves ``astream`` (asyncio tasks), ``SyncRequestRun`` serves
    ``stream`` (a thread pool); this base holds what they share: which Sends have run
    ahead, and handing a twin's result to the loop's task.
    """

    def __init__(
        self,
        *,
        request_id: str,
        runners: Mapping[str, NodeRunner],
        retry_policy: Sequence[Any],
        root: tuple[Frame, ...] = (),
        streaming: frozenset[str] = frozenset(),
        folds: Mapping[str, str] | None = None,
        at_step: frozenset[str] = frozenset(),
        pulls: Mapping[str, PullNode] | None = None,
        barriers: frozenset[str] = frozenset(),
        never_ahead: frozenset[str] = frozenset(),
        ahead_stats: RunAheadStats | None = None,
    ) -> None:
        self.request_id = request_id
        #: nodes none of whose tasks run ahead (``run_ahead=False``)
        self.never_ahead = never_ahead
        #: the app's run-ahead counters (nodes that keep missing stop running ahead)
        self.ahead_stats = ahead_stats or RunAheadStats()
        #: nodes whose edge-triggered (pull) tasks may run ahead, and what is known of
        #: this run's steps to start and check them (None: no such node)
        self.pulls = pulls or {}
        self._log = StepLog(self.pulls, barriers) if self.pulls else None
        self._pregel: Any = None  # LangGraph's loop of this run, once a task shows it
        self._pulls_started: set[tuple[int, str]] = set()
        #: some node that may run ahead has not shown yet what it reads
        self.learning = any(n not in self.ahead_stats.reads for n in self.pulls)
        #: nodes whose Send tasks read graph state: they run at their step, not ahead
        self.at_step = at_step
        #: ancestry of this run's scope: () for a request, the calling task's for a
        #: graph run inside a node (a subgraph)
        self.root = root
        self.runners = runners
        self.retry_policy = retry_policy
        # (step, node, id(Send.arg)) -> run-aheads in the order they were started
        self._ready: dict[tuple[int, Any, int], deque[RunAhead]] = defaultdict(deque)
        # loop task id -> the twin the submit hook matched it with
        self._claimed: dict[str, RunAhead] = {}
        self._adopted: set[str] = set()  # loop task ids that looked for their twin
        # task id -> its Sends that have a twin (by id; the Send is kept, so its id is)
        self._sends_started: dict[str, dict[int, Send]] = {}
        #: nodes whose tasks apply what they yield at once (``partial.py``), and the
        #: loop's stream their partial updates go to
        self.streaming = streaming
        self.folds = folds or {}
        self._updates: StreamedUpdates | None = None
        self._output_keys: Any = ()
        # (step, node, id(Send.arg)) -> ancestries of Sends that have no twin (their
        # sender ran inline, where twins would not gain a step, or their node reads
        # state, so they wait for their step)
        self._send_ancestry: dict[tuple[int, Any, int], deque[tuple[Frame, ...]]] = defaultdict(
            deque
        )
        self._lock = threading.Lock()  # the sync path touches the tables from threads
        self._closed = False
        #: counters, for tests and benchmarks: how many tasks ran ahead, were adopted
        #: (their result handed over), and were misses (ran again at their step)
        self.stats = {"run_ahead": 0, "adopted": 0, "missed": 0}

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
        # The runner calls submit from one thread, and only once the step before is
        # complete, so every twin of this step is registered by now: an empty table
        # needs no lock (the common case, a fan-out whose sender ran alone).
        ahead = None
        ancestry = self.root
        step = scratchpad_of(task).step
        if self._log is not None:
            self._enter(step, kwargs.get("configurable", {}).get(CONFIG_KEY_CALL))
        if task.path[0] == PUSH:
            key = (step, task.name, id(task.input))
            if self._ready:
                ahead = self._claim_key(key)
            if ahead is None and self._send_ancestry:
                ancestry = self._pop_ancestry(key)
        elif self._ready:
            ahead = self._claim_key((step, task.name, PULL))
        if ahead is not None:
            ancestry = ahead.ancestry
            with self._lock:
                self._claimed[task.id] = ahead
            # the twin's @task calls may wait for this: let them go now, not at
            # hand-over (the hand-over waits for the twin)
            ahead.calls.bind(kwargs.get("configurable", {}).get(CONFIG_KEY_CALL))
        conf = task.config[CONF]
        conf[_SUBMITTED_BY] = self  # not inline (nested runs' tasks inherit another run)
        if self._log is not None and ahead is None:  # how long its node takes
            conf[_STARTED] = time.perf_counter()
        # graphs run inside the node (subgraphs) start their scope from here
        conf[CONFIG_KEY_ANCESTRY] = ancestry
        if self.streaming:
            self._find_loop(kwargs.get("configurable", {}).get(CONFIG_KEY_CALL))
            if task.name in self.streaming:
                conf[CONFIG_KEY_YIELD] = self._sink(task, ancestry)
        work = functools.partial(fn, task, *args, **kwargs)
        return self._execute(work, task, ancestry, ahead, kwargs)

    def _enter(self, step: int, call: Any) -> None:
        """Note the loop's tasks of ``step`` (from the loop's thread, as it starts them)."""
        log = self._log
        assert log is not None
        if log.entered(step):
            return
        if self._pregel is None:
            self._pregel = loop_of(call)
            if self._pregel is None:  # no loop to read: pull tasks wait for their step
                self._log = None
                return
        with self._lock:
            log.enter(step, self._pregel.tasks.values())
            # what the twins still to be handed over were built on, and this step's
            # predecessor, whose finished tasks the next views start from, are kept
            live = [a for q in self._ready.values() for a in q] + list(self._claimed.values())
            log.prune(min([a.basis.base for a in live if a.basis is not None] + [step - 1]))

    def watch_reads(
        self, input: Any, config: RunnableConfig
    ) -> tuple[Any, Callable[[], None] | None]:
        """For ``RunAheadAwareProc``: the first run of a node that may run ahead, at its
        step, records what it reads (on a view of its input), so that the app knows
        before it ever runs the node ahead whether a sibling still running would make
        it miss. Returns the input to run on, and what to call once the node has run."""
        metadata = config.get("metadata") or {}
        name = metadata.get("langgraph_node")
        path = metadata.get("langgraph_path") or ()
        if (
            name not in self.pulls
            or name in self.ahead_stats.reads
            or not path
            or path[0] != PULL
            or type(input) is not dict
        ):
            return input, None
        log = ReadLog(input)
        view = StateView(input, log)
        inputs = self.pulls[name].channels

        def learned() -> None:
            self.ahead_stats.read(name, log.channels(inputs))

        return view, learned

    def enter_inline(self, config: RunnableConfig) -> None:
        """For ``RunAheadAwareProc``: a task LangGraph runs inline starts its step. Not
        noted before this run's first twin: twins start only from steps of several
        tasks (which the submit hook notes), and no view reaches back before them."""
        if self._log is not None and self.stats["run_ahead"]:
            conf = config[CONF]
            self._enter(conf[CONFIG_KEY_SCRATCHPAD].step, conf.get(CONFIG_KEY_CALL))

    def _pop_ancestry(self, key: tuple[int, Any, int]) -> tuple[Frame, ...]:
        # no lock: entries are added (by tasks of the step before) before the loop
        # moves to the step whose tasks take them, and only the runner's thread takes
        # them (the submit hook, and tasks LangGraph runs inline, which run there)
        queue = self._send_ancestry.get(key)
        if not queue:
            return self.root
        ancestry = queue.popleft()
        if not queue:
            del self._send_ancestry[key]
        return ancestry

    def inline_config(self, input: Any, config: RunnableConfig) -> RunnableConfig:
        """For ``RunAheadAwareProc``: the config of a task LangGraph runs inline (without
        the hook) and that adopts no twin, with its ancestry, and recording its Sends'
        ancestry: they get no twin (this task is its step's only one)."""
        conf = config[CONF]
        metadata = config.get("metadata") or {}
        path = metadata.get("langgraph_path") or ()
        name = metadata.get("langgraph_node")
        pad = conf[CONFIG_KEY_SCRATCHPAD]
        ancestry = self.root
        if path and path[0] == PUSH and self._send_ancestry:
            ancestry = self._pop_ancestry((pad.step, name, id(input)))
        send, counter = conf[CONFIG_KEY_SEND], iter(range(1 << 62))
        if self.streaming:
            self._find_loop(conf.get(CONFIG_KEY_CALL))
            if name in self.streaming:
                # its Sends get twins as they are yielded: the node is still running
                view = _TaskView(conf[CONFIG_KEY_TASK_ID], name, deque(), None)

                def record_streamed(values: Sequence[tuple[str, Any]]) -> None:
                    view.writes.extend(values)
                    send(values)

                view_conf = {**conf, CONFIG_KEY_SEND: record_streamed}
                view_conf[CONFIG_KEY_ANCESTRY] = ancestry
                view.config = {**config, CONF: view_conf}
                view_conf[CONFIG_KEY_YIELD] = self._sink(view, ancestry)
                return view.config

        def record(values: Sequence[tuple[str, Any]]) -> None:
            for chan, value in values:
                if chan == TASKS and isinstance(value, Send):
                    key = (pad.step + 1, value.node, id(value.arg))
                    self._send_ancestry[key].append((*ancestry, (name, next(counter))))
            send(values)

        return {
            **config,
            CONF: {**conf, CONFIG_KEY_SEND: record, CONFIG_KEY_ANCESTRY: ancestry},
        }

    # -- streaming nodes -----------------------------------------------------------
    def _find_loop(self, call: Any) -> None:
        """Note the loop of this run (from a task's call hook), once: its stream gets the
        partial updates of streaming nodes instead of their whole-task updates."""
        if self._updates is not None:
            return
        loop = loop_of(call)
        if loop is None:
            return
        found = wrap_loop_stream(
            loop,
            lambda stream, ns: (
                stream  # a run of the same loop (a retry): wrapped already
                if isinstance(stream, StreamedUpdates)
                else StreamedUpdates(stream, ns, self.streaming)
            ),
        )
        if found is not None:
            self._updates, self._output_keys = found

    def _sink(
        self, task: Any, ancestry: tuple[Frame, ...], held: HeldUpdates | None = None
    ) -> TaskSink:
        writer = self.runners[task.name].node.writers[0]  # StateGraph's update writer
        return TaskSink(
            task,
            writer,
            self._output_keys,
            self._updates if held is None else held,
            self.folds,
            functools.partial(self._sends_ready, task, ancestry),
        )

    def _sends_ready(self, sender: Any, ancestry: tuple[Frame, ...]) -> None:
        """A streaming node yielded Sends: start them now (from the node's thread)."""
        self._start_sends(sender, ancestry)

    @staticmethod
    def _sends_of(sender: Any) -> list[Send]:
        return [v for c, v in sender.writes if c == TASKS and isinstance(v, Send)]

    # what the two paths implement
    def _execute(
        self,
        work: Callable[[], Any],
        task: PregelExecutableTask,
        ancestry: tuple[Frame, ...],
        ahead: RunAhead | None,
        kwargs: dict,
    ) -> Any:
        """Run the loop's task: ``work`` is the task function bound to its arguments;
        ``ahead`` the twin its proc will adopt, if any."""
        raise NotImplementedError

    def _launch(self, ahead: RunAhead) -> None:
        raise NotImplementedError

    def _future(self) -> Any:
        raise NotImplementedError

    # -- run-ahead ---------------------------------------------------------------
    def _start_sends(
        self, sender: Any, ancestry: tuple[Frame, ...], sends: list[Send] | None = None
    ) -> None:
        """Start a twin for every Send that ``sender`` wrote and that has none yet
        (``sends``: its Sends, taken by the thread that writes them)."""
        if sends is None:
            sends = self._sends_of(sender)
        if not sends:
            return
        pad = scratchpad_of(sender)
        step = pad.step + 1
        if step > pad.stop:  # the loop stops with GraphRecursionError before this step
            return
        with self._lock:
            done = self._sends_started.setdefault(sender.id, {})
            todo = [(i, s) for i, s in enumerate(sends) if id(s) not in done]
            if self._closed or not todo:
                return
            done.update((id(s), s) for _, s in todo)
        sender_runner = self.runners.get(sender.name)
        started = []
        for idx, send in todo:  # built first: nothing half-registered
            runner = self.runners.get(send.node)
            if runner is None:  # unknown node: the loop warns and skips it
                continue
            frames = (*ancestry, (sender.name, idx))
            if (
                send.node in self.at_step  # it would read state too early
                or send.node in self.never_ahead
                or send.node in self.ahead_stats.stopped
            ):  # no twin: it runs at its step
                with self._lock:
                    self._send_ancestry[(step, send.node, id(send.arg))].append(frames)
                continue
            calls = DeferredCalls()
            twin = push_task_for(
                sender,
                sender_runner.node if sender_runner else None,
                send,
                runner,
                idx,
                step,
                pad.stop,
                {CONFIG_KEY_CALL: calls, CONFIG_KEY_ANCESTRY: frames},
            )
            self._twin_config(twin, frames)
            started.append(RunAhead(twin, frames, runner, calls, self._future()))
        self._register(started, step)

    def _twin_config(
        self, twin: PregelExecutableTask, ancestry: tuple[Frame, ...], held: bool = False
    ) -> HeldUpdates | None:
        """Finish a twin's config, derived from its sender's: a twin's proc is not a
        ``RunAheadAwareProc``, so nothing would strip the hook on the way to graphs run
        inside the node; it never carries it. A streaming node's twin gets its own sink
        (``held``: its partial updates wait for its hand-over, which are returned)."""
        conf = twin.config[CONF]
        conf.pop(CONFIG_KEY_RUNNER_SUBMIT, None)
        conf.pop(_SUBMITTED_BY, None)
        conf[CONFIG_KEY_ON_ADOPT] = (twin.id, [])  # its own, not its sender's
        if twin.name not in self.streaming:
            conf.pop(CONFIG_KEY_YIELD, None)
            return None
        partials = HeldUpdates() if held else None
        conf[CONFIG_KEY_YIELD] = self._sink(twin, ancestry, partials)
        return partials

    def _task_done(self, task: PregelExecutableTask, ancestry: tuple[Frame, ...]) -> None:
        """A loop task finished (before the loop sees it): start what its writes allow."""
        log = self._log
        if log is not None:
            started = task.config[CONF].get(_STARTED)
            if started is not None:
                self.ahead_stats.took(task.name, time.perf_counter() - started)
            step = scratchpad_of(task).step
            with self._lock:
                twin = log.adopted.get(task.id)
                key = (PULL, task.name) if task.path[0] == PULL else (twin or task.id)
                # the loop changes channels only between steps, and this step is not over
                log.snapshot(step, self._pregel.channels)
                done = Finished(twin or task.id, task_path_str(task.path), task.writes, task.name)
                log.finish(step, key, done, loop_task=True)
            wrote = frozenset(chan for chan, _ in task.writes)
            self.ahead_stats.wrote(task.name, wrote)
        self._start_sends(task, ancestry)
        if log is not None:
            self._start_pulls(task, wrote)

    def _twin_done(self, ahead: RunAhead) -> None:
        """A twin finished: start what its writes allow (its conditional edges, if it has
        any, run at hand-over: what they start is known only then)."""
        log = self._log
        if log is not None:
            self.ahead_stats.took(ahead.task.name, time.perf_counter() - ahead.started)
            with self._lock:
                done = Finished(
                    ahead, task_path_str(ahead.task.path), ahead.task.writes, ahead.task.name
                )
                log.finish(ahead.step, ahead.key, done, loop_task=False)
            wrote = frozenset(chan for chan, _ in ahead.task.writes)
            self.ahead_stats.wrote(ahead.task.name, wrote)
        self._start_sends(ahead.task, ahead.ancestry)
        if log is not None and (ahead.complete or not ahead.runner.late):
            self._start_pulls(ahead.task, wrote)

    def _start_pulls(self, sender: Any, wrote: frozenset[str]) -> None:
        """Start a twin for every pull task of the next step that ``sender``'s writes
        (to the channels ``wrote``) create, with the writes known so far, if its step
        is not over yet."""
        log = self._log
        assert log is not None
        pad = scratchpad_of(sender)
        step = pad.step + 1
        if step > pad.stop:  # the loop stops with GraphRecursionError before this step
            return
        stopped = self.ahead_stats.stopped
        with self._lock:
            if self._closed or not log.behind(pad.step):
                return
            names = [
                n
                for n in log.candidates(wrote)
                if (step, n) not in self._pulls_started and n not in stopped
            ]
            if names:
                names = log.triggered(pad.step, names, wrote)
            if not names:
                return
            running = log.running(pad.step)
            if not self.ahead_stats.worth_waiting_for(running):
                # nothing still runs, or only quick tasks: the loop gets there as soon
                for n in names:
                    self.ahead_stats.add(n, "skipped")
                return
            held = [
                n for n in names if self.ahead_stats.would_miss(n, running, self.pulls[n].channels)
            ]
            if held:  # the loop starts them at their step
                names = [n for n in names if n not in held]
                for n in held:
                    self.ahead_stats.add(n, "held")
                if not names:
                    return
            self._pulls_started.update((step, n) for n in names)
            pad_then = new_scratchpad("", "", step, pad.stop)
            managed = functools.partial(_managed_value, self._pregel, pad_then)
            views = [(n, log.view(self.pulls[n], step, managed)) for n in names]
        sender_runner = self.runners.get(sender.name)
        started = []
        for name, made in views:
            if made is None:  # nothing to build its state on: it waits for its step
                continue
            values, basis = made
            node = self.pulls[name]
            runner = self.runners[name]
            reads = ReadLog(values)
            calls = DeferredCalls()
            # conditional edges too, on the view, when it holds what they may read
            complete = runner.complete is not None and bool(node.branch_reads)
            twin = pull_task_for(
                sender,
                sender_runner.node if sender_runner else None,
                runner,
                name,
                tracked_input(values, node.schema, reads),
                step,
                pad.stop,
                {CONFIG_KEY_CALL: calls, CONFIG_KEY_ANCESTRY: self.root},
                complete=complete,
            )
            if complete:
                twin.config[CONF][CONFIG_KEY_READ] = BranchReader(
                    basis, twin.writes, reads, managed
                )
            partials = self._twin_config(twin, self.root, held=True)
            started.append(
                RunAhead(
                    twin,
                    self.root,
                    runner,
                    calls,
                    self._future(),
                    basis=basis,
                    reads=reads,
                    held=partials,
                    complete=complete,
                )
            )
        self._register(started, step)

    def _register(self, started: list[RunAhead], step: int) -> None:
        with self._lock:
            if self._closed:
                return
            for ahead in started:
                key = (step, ahead.task.name, PULL if ahead.basis else id(ahead.task.input))
                self._ready[key].append(ahead)
            self.stats["run_ahead"] += len(started)
        for ahead in started:
            self.ahead_stats.add(ahead.task.name, "run_ahead")
            self._launch(ahead)

    def _claim_key(self, key: tuple[int, Any, int]) -> RunAhead | None:
        with self._lock:
            queue = self._ready.get(key)
            if not queue:
                return None
            ahead = queue.popleft()
            if not queue:
                del self._ready[key]
            return ahead

    def adoption(self, input: Any, config: RunnableConfig) -> tuple[RunAhead, _TaskView] | None:
        """For ``RunAheadAwareProc``: the twin of the loop's task running with ``config``
        (matched by the submit hook, or now if LangGraph runs a lone task inline), and
        a view of that task. Each twin is adopted once: a retry runs the node."""
        conf = config[CONF]
        task_id = conf.get(CONFIG_KEY_TASK_ID, "")
        with self._lock:
            if task_id in self._adopted:  # a retry: it runs the node, adopts nothing
                return None
            self._adopted.add(task_id)
            ahead = self._claimed.pop(task_id, None)
        if ahead is None:
            metadata = config.get("metadata") or {}
            path = metadata.get("langgraph_path") or ()
            if not self._ready or not path or path[0] not in (PUSH, PULL):
                return None
            step = conf[CONFIG_KEY_SCRATCHPAD].step
            node = metadata.get("langgraph_node")
            ahead = self._claim_key((step, node, id(input) if path[0] == PUSH else PULL))
            if ahead is None:
                return None
        # Record what the hand-over writes (to find Sends in it) while passing it on;
        # LangGraph may wrap the send function (node timeouts do).
        send, writes = conf[CONFIG_KEY_SEND], deque()

        def record(values: Sequence[tuple[str, Any]]) -> None:
            writes.extend(values)
            send(values)

        view_conf = {**conf, CONFIG_KEY_SEND: record, CONFIG_KEY_ANCESTRY: ahead.ancestry}
        ahead.calls.bind(conf.get(CONFIG_KEY_CALL))
        return ahead, _TaskView(task_id, ahead.task.name, writes, {**config, CONF: view_conf})

    def _deliver(self, ahead: RunAhead, task: _TaskView) -> tuple[Any, RunnableConfig] | None:
        """Give the loop's task its twin's writes (or raise what the twin raised); if
        conditional edges remain, return their input and config: they read the pre-step
        state through the task's config, so they run now."""
        # what the twin's node does only once its result is the loop task's (its
        # failure included: that counts as the task's first attempt)
        for effect in ahead.task.config[CONF][CONFIG_KEY_ON_ADOPT][1]:
            effect(task.id, task.config)
        exc = _twin_error(ahead)
        if exc is not None and not isinstance(exc, GraphInterrupt):
            raise exc
        with self._lock:  # the twin's Sends have twins already: continue after them
            self._sends_started[task.id] = self._sends_started.pop(ahead.task.id, {})
            if self._log is not None:
                self._log.adopted[task.id] = ahead
            self.stats["adopted"] += 1
        self.ahead_stats.add(ahead.task.name, "adopted")
        if exc is not None:  # the node's interrupt(), as the loop's task raises it
            raise _interrupt_of(exc, task.config)  # type: ignore[arg-type]
        writes, output = ahead.runner.hand_over(ahead.task.writes)
        if ahead.held is not None:  # a streaming node's partial updates, in order
            ahead.held.replay(self._updates)
        task.config[CONF][CONFIG_KEY_SEND](writes)
        if ahead.complete or not ahead.runner.late:
            return None
        return output, _writers_config(task.config, output)

    def missed(self, ahead: RunAhead) -> bool:
        """Whether the twin's result is not the one its step would give: it read graph
        state it could not know (a Send's task), a graph run inside it interrupted or
        kept memory, or a channel of its view received a write it did not see (a pull
        task's). Then the loop's task runs the node now, at its step, as LangGraph
        would (a miss)."""
        if ahead.done.cancelled():
            return False
        # A twin that called interrupt() is adopted, its interrupt renamed after the
        # loop's task (as its id would be); an interrupt from deeper (a graph run in
        # the node) names a namespace of the twin's: the node runs again at its step.
        error = ahead.error
        foreign_interrupt = isinstance(error, GraphInterrupt) and not _own_interrupt(ahead)
        miss = isinstance(error, StateNotReady) or foreign_interrupt
        if foreign_interrupt or isinstance(error, MemoryNotReady):  # it would miss each time
            self.ahead_stats.stop(ahead.task.name)
        if ahead.basis is not None:
            untrack(ahead.task.input)
            if not miss:
                assert self._log is not None and ahead.reads is not None
                node = self.pulls[ahead.task.name]
                inputs = (*node.channels, *node.branch_reads) if ahead.complete else node.channels
                with self._lock:
                    read = ahead.reads.channels(inputs)
                    miss = not self._log.valid(ahead.basis, read)
                self.ahead_stats.read(ahead.task.name, read)
        if not miss:
            return False
        with self._lock:
            self.stats["missed"] += 1
            self._sends_started.pop(ahead.task.id, None)
            if self._log is not None:
                self._log.forget(ahead.step, ahead.key)
        self.ahead_stats.add(ahead.task.name, "missed")
        return True

    def reran(self, ahead: RunAhead, task: _TaskView) -> None:
        """A miss ran at its step: start the Sends it wrote, as a hand-over does."""
        self._start_sends(task, ahead.ancestry)

    def hand_over(self, ahead: RunAhead, task: _TaskView) -> None:
        if (late := self._deliver(ahead, task)) is not None:
            output, config = late
            for writer in ahead.runner.late:
                output = writer.invoke(output, config)
            self._start_sends(task, ahead.ancestry)

    async def ahand_over(self, ahead: RunAhead, task: _TaskView) -> None:
        if (late := self._deliver(ahead, task)) is not None:
            output, config = late
            for writer in ahead.runner.late:
                output = await writer.ainvoke(output, config)
            self._start_sends(task, ahead.ancestry)

    def _close_tables(self) -> list[RunAhead]:
        with self._lock:
            self._closed = True
            unclaimed = [a for q in self._ready.values() for a in q]
            unclaimed += self._claimed.values()
            self._ready.clear()
            self._claimed.clear()
        for ahead in unclaimed:
            ahead.calls.abandon()
            self.ahead_stats.add(ahead.task.name, "dropped")
            if ahead.basis is not None:
                untrack(ahead.task.input)
        return unclaimed


class AsyncRequestRun(RequestRun):
    """Run-ahead for ``astream``: every task is an asyncio task owned by this run."""

    def __init__(self, *, max_concurrency: int | None, **kw: Any) -> None:
        super().__init__(**kw)
        self._limit = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        self._owned: set[asyncio.Task[Any]] = set()
        self._stream_procs = False
        self._loop = asyncio.get_running_loop()

    def _sends_ready(self, sender: Any, ancestry: tuple[Frame, ...]) -> None:
        # twins are asyncio tasks of the run's loop; a sync node yields on a thread
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._start_sends(sender, ancestry)
        else:  # the node's thread still writes: take its Sends here, not on the loop
            sends = self._sends_of(sender)
            self._loop.call_soon_threadsafe(self._start_sends, sender, ancestry, sends)

    def _future(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    def _own(self, coro: Any, name: str) -> asyncio.Task[Any]:
        t = asyncio.get_running_loop().create_task(coro, name=f"alto:{name}")
        self._owned.add(t)
        t.add_done_callback(self._owned.discard)
        return t

    async def _run_limited(self, work: Callable[[], Awaitable[Any]]) -> Any:
        async with self._limit:  # type: ignore[union-attr]
            return await work()

    def _execute(
        self,
        work: Callable[[], Any],
        task: PregelExecutableTask,
        ancestry: tuple[Frame, ...],
        ahead: RunAhead | None,
        kwargs: dict,
    ) -> Any:
        # LangGraph streams procs when an astream_events/astream_log handler listens;
        # twins must do the same to produce the same events
        self._stream_procs = kwargs.get("stream", False)
        # The task function's own coroutine, no wrapper: its value matters (a
        # functional-API @task call inside a node reads it), and this is the hot path.
        # A task adopting a twin takes no concurrency slot: it waits for the twin,
        # which may need one (only a retry after a failed twin runs beyond the limit).
        if self._limit is None or ahead is not None:
            coro = work()
        else:
            coro = self._run_limited(work)
        t = self._own(coro, task.name)
        t.add_done_callback(functools.partial(self._after, task))
        return t

    def _after(self, task: PregelExecutableTask, done: asyncio.Task[Any]) -> None:
        # runs before LangGraph's own done callback (added later), i.e. before the loop
        # sees the task finish
        if not done.cancelled() and done.exception() is None:
            self._task_done(task, task.config[CONF][CONFIG_KEY_ANCESTRY])

    def _launch(self, ahead: RunAhead) -> None:
        work = functools.partial(arun_with_retry, ahead.task, None, stream=self._stream_procs)

        async def execute_ahead() -> None:
            try:
                if self._limit is None:
                    await work()
                else:
                    await self._run_limited(work)
            except asyncio.CancelledError:
                ahead.done.cancel()
                raise
            except BaseException as exc:  # the loop's task raises it at hand-over
                _settle(ahead, exc=exc)
                return
            # successors first: once ``done`` resolves, the loop may move to their step
            self._twin_done(ahead)
            _settle(ahead)

        self._own(execute_ahead(), ahead.task.name)

    async def aclose(self) -> None:
        """Cancel whatever is still running (a failed request, or run-ahead never claimed)."""
        self._close_tables()
        while self._owned:
            await gather_cancelled(set(self._owned))


class SyncRequestRun(RequestRun):
    """Run-ahead for ``stream``: tasks run on a thread pool owned by this run, as
    LangGraph's own sync executor runs them (single-task steps stay on the caller's
    thread). A task adopting a twin starts only once the twin is done, so no pool
    thread ever waits for another."""

    def __init__(self, *, config: dict[str, Any], **kw: Any) -> None:
        super().__init__(**kw)
        # max_workers = config["max_concurrency"], as LangGraph's sync executor. Not
        # LangChain's get_executor_for_config: that context manager always waits for
        # the pool on exit, and a twin nobody will claim must not hold up a failed
        # request.
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=config.get("max_concurrency"), thread_name_prefix="alto"
        )
        self._loop_futures: set[concurrent.futures.Future[Any]] = set()
        self._ahead_futures: set[concurrent.futures.Future[Any]] = set()

    def _future(self) -> concurrent.futures.Future[Any]:
        return concurrent.futures.Future()

    def _spawn(
        self, owner: set[concurrent.futures.Future[Any]], fn: Callable[[], Any]
    ) -> concurrent.futures.Future[Any]:
        fut = self._pool.submit(contextvars.copy_context().run, fn)
        with self._lock:
            owner.add(fut)
        fut.add_done_callback(functools.partial(self._forget, owner))
        return fut

    def _forget(
        self, owner: set[concurrent.futures.Future[Any]], fut: concurrent.futures.Future[Any]
    ) -> None:
        with self._lock:
            owner.discard(fut)

    def _execute(
        self,
        work: Callable[[], Any],
        task: PregelExecutableTask,
        ancestry: tuple[Frame, ...],
        ahead: RunAhead | None,
        kwargs: dict,
    ) -> Any:
        def execute() -> Any:
            value = work()
            self._task_done(task, ancestry)
            return value

        if ahead is None:
            return self._spawn(self._loop_futures, execute)
        result: concurrent.futures.Future[Any] = concurrent.futures.Future()
        ctx = contextvars.copy_context()

        def start(done: concurrent.futures.Future[Any]) -> None:
            if done.cancelled() or self._closed:  # the request ended meanwhile
                result.cancel()
                return
            chain_future(ctx.run(self._spawn, self._loop_futures, execute), result)

        ahead.done.add_done_callback(start)
        return result

    def _launch(self, ahead: RunAhead) -> None:
        work = functools.partial(run_with_retry, ahead.task, None)

        def execute_ahead() -> None:
            try:
                work()
            except BaseException as exc:  # the loop's task raises it at hand-over
                _settle(ahead, exc=exc)
                return
            # successors first: once ``done`` resolves, the loop may move to their step
            self._twin_done(ahead)
            _settle(ahead)

        try:
            self._spawn(self._ahead_futures, execute_ahead)
        except RuntimeError:  # the pool is shut down: the request ended meanwhile
            ahead.done.cancel()

    def close(self) -> None:
        """Cancel work not started yet; wait for the loop's own tasks, as LangGraph does,
        but not for twins nobody will claim (a failed request returns at once; they
        finish on their thread and their results are dropped)."""
        for ahead in self._close_tables():
            ahead.done.cancel()
        with self._lock:
            pending = self._loop_futures | self._ahead_futures
            loop_futures = set(self._loop_futures)
        for fut in pending:
            fut.cancel()
        concurrent.futures.wait(loop_futures)
        self._pool.shutdown(wait=False, cancel_futures=True)


class RunAheadAwareProc(Runnable[Any, Any]):
    """A node's task proc that knows about run-ahead.

    When the loop's task has a twin (matched by the submit hook, or here when LangGraph
    runs a step's only task inline, without the hook), this hands the twin's result
    over instead of running the node a second time. It also strips the hook from the
    config, so that graphs invoked inside the node never see this run's hook.
    """

    def __init__(self, proc: Runnable[Any, Any]) -> None:
        self.proc = proc
        self.name = proc.get_name()

    def _adopted(
        self, input: Any, config: RunnableConfig | None
    ) -> tuple[
        tuple[RequestRun, RunAhead, _TaskView] | None,
        RunnableConfig | None,
        Any,
        Callable[[], None] | None,
    ]:
        """(run, twin, task view) when this task has a twin to adopt; the config without
        the hook either way; the input to run the node on, and what to call once it has
        run (the first run of a node that may run ahead records what it reads). Cheap
        when nothing ran ahead: it runs for every task."""
        conf = config.get(CONF) if config else None
        run = conf.get(CONFIG_KEY_RUNNER_SUBMIT) if conf else None
        if not isinstance(run, RequestRun):
            return None, config, input, None
        conf = dict(conf)
        del conf[CONFIG_KEY_RUNNER_SUBMIT]
        config = {**config, CONF: conf}  # type: ignore[misc]
        inline = conf.get(_SUBMITTED_BY) is not run  # the submit hook has not seen it
        if inline:
            run.enter_inline(config)
        found = run.adoption(input, config) if (run._ready or run._claimed) else None
        if found is not None:
            return (run, *found), config, input, None
        if inline:
            config = run.inline_config(input, config)
        learned = None
        if run.learning:
            input, learned = run.watch_reads(input, config)
        return None, config, input, learned

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        adopted, config, input, learned = self._adopted(input, config)
        if adopted is None:
            output = self.proc.invoke(input, config, **kwargs)
            if learned is not None:
                learned()
            return output
        run, ahead, task = adopted
        _wait(ahead.done)
        if run.missed(ahead):
            output = self.proc.invoke(input, task.config, **kwargs)
            run.reran(ahead, task)
            return output
        return run.hand_over(ahead, task)

    def ainvoke(  # type: ignore[override]
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Awaitable[Any]:
        # returns the awaitable rather than awaiting it: one coroutine frame less per task
        adopted, config, input, learned = self._adopted(input, config)
        if adopted is None:
            if learned is not None:
                return self._alearn(input, config, learned, kwargs)
            return self.proc.ainvoke(input, config, **kwargs)
        return self._ahand_over(*adopted, input, kwargs)

    async def _alearn(
        self, input: Any, config: RunnableConfig | None, learned: Callable[[], None], kwargs: Any
    ) -> Any:
        output = await self.proc.ainvoke(input, config, **kwargs)
        learned()
        return output

    async def _ahand_over(
        self, run: RequestRun, ahead: RunAhead, task: _TaskView, input: Any, kwargs: Any
    ) -> Any:
        await asyncio.wait([ahead.done])  # not shielded away: cancellation reaches us
        if run.missed(ahead):
            output = await self.proc.ainvoke(input, task.config, **kwargs)
            run.reran(ahead, task)
            return output
        return await run.ahand_over(ahead, task)

    # LangGraph streams a task's proc when an astream_log/astream_events handler listens
    def stream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        adopted, config, input, learned = self._adopted(input, config)
        if adopted is None:
            yield from self.proc.stream(input, config, **kwargs)
            if learned is not None:
                learned()
        else:
            run, ahead, task = adopted
            _wait(ahead.done)
            if run.missed(ahead):
                yield from self.proc.stream(input, task.config, **kwargs)
                run.reran(ahead, task)
            else:
                yield run.hand_over(ahead, task)

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        adopted, config, input, learned = self._adopted(input, config)
        if adopted is None:
            async for chunk in self.proc.astream(input, config, **kwargs):
                yield chunk
            if learned is not None:
                learned()
        else:
            run, ahead, task = adopted
            await asyncio.wait([ahead.done])
            if run.missed(ahead):
                async for chunk in self.proc.astream(input, task.config, **kwargs):
                    yield chunk
                run.reran(ahead, task)
            else:
                yield await run.ahand_over(ahead, task)


def run_ahead_aware(node: PregelNode) -> PregelNode:
    """``node`` whose task proc is a ``RunAheadAwareProc``."""
    return with_task_proc(node, RunAheadAwareProc)


def _managed_value(loop: Any, scratchpad: Any, chan: str) -> Any:
    """A managed value (``RemainingSteps``...) of a task with ``scratchpad``."""
    return loop.managed[chan].get(scratchpad)


def _settle(ahead: RunAhead, *, exc: BaseException | None = None) -> None:
    """Resolve a twin's ``done`` unless the run was closed (and cancelled it) meanwhile."""
    ahead.error = exc
    fut = ahead.done
    try:
        if isinstance(fut, asyncio.Future):
            if not fut.done():
                fut.set_result(None)
        else:
            fut.set_result(None)
    except concurrent.futures.InvalidStateError:
        pass


def _own_interrupt(ahead: RunAhead) -> bool:
    """Whether the twin's ``GraphInterrupt`` is its node's one ``interrupt()`` call:
    its id is the one LangGraph derives from the twin's namespace (a twin has no
    resume values, so its first call raises)."""
    interrupts = ahead.error.args[0] if ahead.error is not None and ahead.error.args else ()
    if len(interrupts) != 1 or not isinstance(interrupts[0], Interrupt):
        return False
    ns = ahead.task.config[CONF][CONFIG_KEY_CHECKPOINT_NS]
    return interrupts[0].id == Interrupt.from_ns(None, ns).id


def _interrupt_of(exc: GraphInterrupt, config: RunnableConfig) -> GraphInterrupt:
    """A twin's interrupt as the loop's task (``config``) raises it: its id names the
    loop's task, which is what resuming by id looks for."""
    (twin,) = exc.args[0]
    ns = config[CONF][CONFIG_KEY_CHECKPOINT_NS]
    renamed = Interrupt.from_ns(twin.value, ns, response_schema=twin.response_schema)
    return GraphInterrupt((renamed,))


def _twin_error(ahead: RunAhead) -> BaseException | None:
    if ahead.done.cancelled():
        return RuntimeError(f"alto: run-ahead of task {ahead.task.name!r} was cancelled")
    exc = ahead.error
    if exc is not None and hasattr(exc, "__notes__"):
        # LangGraph's retry loop around the loop's task adds its own note
        twin_note = f"During task with name '{ahead.task.name}' and id '{ahead.task.id}'"
        exc.__notes__ = [n for n in exc.__notes__ if n != twin_note]
    return exc


def _wait(fut: concurrent.futures.Future[Any] | asyncio.Future[Any]) -> None:
    if isinstance(fut, concurrent.futures.Future):
        concurrent.futures.wait([fut])
    elif not fut.done():  # a sync proc of an async run: cannot block the loop
        raise RuntimeError("alto: a synchronous proc cannot wait for an asyncio run-ahead")


def _writers_config(config: RunnableConfig, output: Any) -> RunnableConfig:
    """The config LangGraph runs a task's writers with: as steps of the task's proc
    (without the task's run name), or, for a ``Command`` a subgraph sent to this graph
    (LangGraph applies it in its retry loop), the task's own config."""
    if isinstance(output, Command) and output.graph is not None:
        return config
    return {k: v for k, v in config.items() if k not in ("run_name", "run_id")}  # type: ignore[return-value]


async def gather_cancelled(tasks: set[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until each has finished (no fire-and-forget)."""
    for t in tasks:
        t.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
