"""Running model assertions beside a node (declared and attached in ``assertions.py``).

``AssertedNode`` wraps a node's runnable in the compiled graph, on stock LangGraph and
on alto alike (on alto outside the ``RemoteNode`` of a node in worker processes, so the
checks run in the app): it checks what the node returned, and keeps flags, counts and
the retry state of each task.

* A ``@streaming`` node's items are checked one by one, in yield order: on stock once
  the node returns them, on alto as each is applied (``_CheckedSink`` wraps the task's
  sink), so a ``fail`` stops the producer there.
* ``over="tokens"`` / ``"response"`` assertions watch the LM calls the node makes, as
  tokens arrive and once each ends (``_LMWatch``, a callback handler on the node's
  run): a ``fail`` raises from the model's token callback, which ends the call.
* Consistency assertions compare what they observe: the items of one run when it
  returns; the runs of one step when the step ends (``StepEnd``, a hidden channel the
  loop tells); a thread's earlier steps, kept in the flag store.
* A task that runs ahead of its superstep on alto keeps its flags (and counts them)
  only once the loop adopts its result (``CONFIG_KEY_ON_ADOPT``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
import warnings
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Protocol

from langchain_core.callbacks import BaseCallbackHandler, BaseCallbackManager
from langchain_core.runnables import Runnable, RunnableConfig, ensure_config
from langchain_core.runnables.config import var_child_runnable_config
from langgraph.channels.base import BaseChannel
from langgraph.types import Command, Send

from ._langgraph import (
    CONF,
    CONFIG_KEY_CHECKPOINT_NS,
    CONFIG_KEY_CHECKPOINTER,
    CONFIG_KEY_READ,
    CONFIG_KEY_RUNTIME,
    CONFIG_KEY_TASK_ID,
    MISSING,
)
from .config_keys import (
    CONFIG_KEY_ANCESTRY,
    CONFIG_KEY_ON_ADOPT,
    CONFIG_KEY_REQUEST,
    CONFIG_KEY_YIELD,
)
from .errors import AssertionCheckError, AssertionViolation
from .flagstore import FlagStore, to_json
from .streams import CHUNK, StreamRef, is_streaming, node_function, stream_refs
from .views import StateView, plain


class Assertion(Protocol):
    """What an ``assertions.Assertion`` declares, as the checks read it."""

    node: str
    name: str
    severity: str
    max_attempts: int
    over: str
    scope: str | None

    def check(self, input: Any, output: Any) -> Any: ...


#: the severities, least severe first
SEVERITIES = ("record", "retry", "fail")
#: where a node's config carries its retry assertions' feedback (shipped to workers:
#: configurable keys without ``__`` travel with a call)
CONFIG_KEY_FEEDBACK = "alto_assertion_feedback"
#: the custom callback event a firing sends (``on_custom_event`` handlers, tracing)
EVENT = "alto_assertion"
#: how many tasks' feedback is remembered at once (a task's is dropped when it ends)
_FEEDBACK_TASKS = 4096
#: the hidden channel of a graph with step-scope consistency assertions (``StepEnd``)
STEP_CHANNEL = "__alto_step_checks"


@dataclasses.dataclass
class _Tried:
    """One task's attempts so far: what its retry assertions said, how often each fired."""

    said: list[str] = dataclasses.field(default_factory=list)
    fired: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _Counts:
    checked: int = 0
    fired: int = 0
    seconds: float = 0.0


class AssertedNode(Runnable[Any, Any]):
    """A node's runnable, followed by its assertions over what it was given and returned."""

    def __init__(
        self,
        node: str,
        inner: Runnable[Any, Any],
        assertions: tuple[Assertion, ...],
        store: FlagStore,
        app: str,
    ) -> None:
        self.node = node
        self.inner = inner
        self.assertions = assertions
        self.store = store
        self.app = app
        self.name = inner.get_name()
        self.on_output = tuple(a for a in assertions if a.over == "output" and not a.scope)
        self.on_lm = tuple(a for a in assertions if a.over != "output")
        self.consistent = tuple(a for a in assertions if a.scope == "items")
        self.over_thread = tuple(a for a in assertions if a.scope == "thread")
        self.over_step = tuple(a for a in assertions if a.scope == "step")
        fn = node_function(inner)
        #: a @streaming node: its output assertions check each item it yields
        self.items = is_streaming(fn)
        self._lock = threading.Lock()
        self._counts = {a.name: _Counts() for a in assertions}
        #: task id -> its retry assertions' firings so far
        self._tried: OrderedDict[str, _Tried] = OrderedDict()

    def __reduce__(self) -> Any:
        # shipped inside node code: the same checks and store; counts start afresh there
        return (AssertedNode, (self.node, self.inner, self.assertions, self.store, self.app))

    def around(self, inner: Runnable[Any, Any]) -> AssertedNode:
        """The same assertions around another runnable (the ``RemoteNode`` standing in
        for ``self.inner`` when the node runs in worker processes)."""
        new = AssertedNode(self.node, inner, self.assertions, self.store, self.app)
        new._lock, new._counts, new._tried = self._lock, self._counts, self._tried
        new.items = self.items
        return new

    def __getattr__(self, name: str) -> Any:
        # what LangGraph and tools read off a node's runnable is the node's own
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)

    def __repr__(self) -> str:
        return f"AssertedNode({self.inner!r}, {[a.name for a in self.assertions]})"

    # -- running ---------------------------------------------------------------------
    def _prepare(self, input: Any, config: RunnableConfig | None) -> tuple[RunnableConfig, _Run]:
        config = ensure_config(config)
        conf = config.get(CONF) or {}
        task = conf.get(CONFIG_KEY_TASK_ID)
        info = getattr(conf.get(CONFIG_KEY_RUNTIME), "execution_info", None)
        with self._lock:
            if getattr(info, "node_attempt", None) == 1:
                self._tried.pop(task, None)  # left by a run that ended (resumed: same id)
            tried = self._tried.get(task) if task is not None else None
            said = list(tried.said) if tried is not None else []
        added: dict[str, Any] = {}
        if said:
            added[CONFIG_KEY_FEEDBACK] = (task, tuple(said))
        run = _Run(task, input)
        sink = conf.get(CONFIG_KEY_YIELD)
        if self.items and sink is not None and sink.task_id == task:
            # alto applies the items as they are yielded: checked there, in yield order
            run.sink = added[CONFIG_KEY_YIELD] = _CheckedSink(sink, run, self._item_check)
        if added:
            config = {**config, CONF: {**conf, **added}}
        if self.on_lm:
            run.watch = _LMWatch(self, run)
            config = {**config, "callbacks": _with_handler(config.get("callbacks"), run.watch)}
        run.config, run.changed = config, bool(added) or run.watch is not None
        return config, run

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        config, run = self._prepare(input, config)
        try:
            with _context(run):
                output = self.inner.invoke(input, config, **kwargs)
        except Exception:
            run.raise_violation()  # the node's own error, unless an assertion ended it
            raise
        return self._finish(run, output)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        config, run = self._prepare(input, config)
        try:
            with _context(run):
                output = await self.inner.ainvoke(input, config, **kwargs)
        except Exception:
            run.raise_violation()
            raise
        return self._finish(run, output)

    def stream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        # the output is checked whole before any of it goes on
        config, run = self._prepare(input, config)
        try:
            with _context(run):
                chunks = list(self.inner.stream(input, config, **kwargs))
        except Exception:
            run.raise_violation()
            raise
        self._finish(run, _whole(chunks))
        yield from chunks

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        config, run = self._prepare(input, config)
        try:
            with _context(run):
                chunks = [c async for c in self.inner.astream(input, config, **kwargs)]
        except Exception:
            run.raise_violation()
            raise
        self._finish(run, _whole(chunks))
        for chunk in chunks:
            yield chunk

    def _finish(self, run: _Run, output: Any) -> Any:
        """After the node returned: its output checked (or its items: those left to
        check, or on stock, where the node returns them all at once)."""
        run.raise_violation()  # an assertion over an LM call fired, and the node went on
        if self.items:
            if run.sink is not None:
                run.sink.drain(end=True)
            else:
                for command in output or ():
                    self._item_check(run, command)
        else:
            for a in (*self.over_step, *self.over_thread):
                self._note(run, a, output, None)
        if self.consistent:
            self._check_consistency(run)
        self._check(run, run.input, output, () if self.items else self.on_output, final=True)
        if self.over_step:  # the output stands: compared with the step's at its end
            self._join_step(run)
        if self.over_thread:  # ... and joins the thread's history
            self._check_thread(run)
        return output

    def _item_check(self, run: _Run, command: Any) -> None:
        """Check one item of a @streaming node, as the node yielded it, and note what
        its consistency assertions observe in it."""
        run.items += 1
        item = _item_of(command)
        self._check(run, run.input, item, self.on_output, item=run.items - 1)
        for a in (*self.consistent, *self.over_step, *self.over_thread):
            self._note(run, a, item, run.items - 1)

    def _note(self, run: _Run, a: Assertion, output: Any, index: int | None) -> None:
        """What consistency assertion ``a`` observes in an output (or an item)."""
        start = time.perf_counter()
        seen = _call(self.node, a, _given(run.input), output)
        if seen is None:
            return
        if not isinstance(seen, tuple) or len(seen) != 2:
            raise AssertionCheckError(
                a.name,
                self.node,
                TypeError(
                    f"it returned {seen!r}; a consistency assertion returns "
                    "(key, attributes), or None for an output it does not observe"
                ),
            )
        seconds = time.perf_counter() - start
        run.observed.setdefault(a.name, []).append((*seen, output, index, seconds))

    def _check(
        self,
        run: _Run,
        input: Any,
        output: Any,
        assertions: Sequence[Assertion],
        *,
        final: bool = False,
        item: int | None = None,
    ) -> list[Assertion]:
        """Run ``assertions`` over one output of the node; returns those that fired.
        Their flags are kept, and a fail (or retry) raises: once ``final``, the task's
        retry state goes."""
        checked: list[tuple[Assertion, float]] = []
        fired: list[_Fired] = []
        input = _given(input)
        try:
            for a in assertions:
                start = time.perf_counter()
                try:
                    result = _call(self.node, a, input, output)
                finally:
                    checked.append((a, time.perf_counter() - start))
                if (message := _verdict(a, result)) is not None:
                    fired.append(_Fired(a, message, output, item))
        except BaseException:  # a check that raised: what was seen is kept, its error goes out
            self._settle(run, input, checked, fired, final, violate=False)
            raise
        self._settle(run, input, checked, fired, final)
        return [f.a for f in fired]

    def _check_consistency(self, run: _Run) -> None:
        """The task's items, as observed by its consistency assertions: each that
        disagrees with the majority of its key fires, proposing the majority's value."""
        fired: list[_Fired] = []
        checked: list[tuple[Assertion, float]] = []
        for a in self.consistent:
            seen = run.observed.get(a.name, [])
            checked += [(a, seconds) for *_, seconds in seen]
            fired += _disagreements(a, [o[:4] for o in seen])
        self._settle(run, _given(run.input), checked, fired, final=True)

    def _join_step(self, run: _Run) -> None:
        """Hand what the step-scope consistency assertions observed to the step's
        ``StepEnd`` (once the loop adopts a task run ahead: through the loop task's
        own reader, as a twin may read no state)."""
        seen = [(a, o) for a in self.over_step for o in run.observed.get(a.name, ())]
        if not seen:
            return
        input = _given(run.input)

        def join(task_id: Any, cfg: RunnableConfig) -> None:
            step_end = cfg[CONF][CONFIG_KEY_READ](STEP_CHANNEL)
            for a, (key, attrs, output, index, seconds) in seen:
                order = (str(task_id), -1 if index is None else index)
                step_end.add(_Seen(order, self, a, key, attrs, output, index, seconds, input, cfg))

        twin, effects = run.config.get(CONF, {}).get(CONFIG_KEY_ON_ADOPT) or (None, None)
        if effects is not None and twin == run.task:
            effects.append(join)
        else:
            join(run.task, run.config)

    def _check_thread(self, run: _Run) -> None:
        """What the thread-scope consistency assertions observed at this step, against
        the thread's earlier steps: once the loop adopts the task (a task run ahead
        reads the thread's history when its step has come, as stock does)."""
        seen = [(a, o) for a in self.over_thread for o in run.observed.get(a.name, ())]
        if not seen:
            return
        conf = run.config.get(CONF) or {}
        thread = conf.get("thread_id")
        if thread is None or conf.get(CONFIG_KEY_CHECKPOINTER) is None:
            raise AssertionCheckError(
                seen[0][0].name,
                self.node,
                ValueError(
                    "a consistency assertion over a thread's turns needs the graph run "
                    "with a checkpointer and a thread_id in its config"
                ),
            )
        # the graph's place in the thread: the namespaces above the task's own, by node
        # name (a subgraph's task ids change from turn to turn)
        ns = "|".join(
            p.split(":")[0] for p in str(conf.get(CONFIG_KEY_CHECKPOINT_NS) or "").split("|")[:-1]
        )
        step = int((run.config.get("metadata") or {}).get("langgraph_step", 0))
        input = _given(run.input)
        ancestry = conf.get(CONFIG_KEY_ANCESTRY)

        def settle(task_id: Any, cfg: RunnableConfig) -> None:
            fired = []
            try:
                for a, (key, attrs, output, index, _) in seen:
                    where = {"app": self.app, "assertion": a.name, "thread_id": str(thread)}
                    before = self.store.observed(**where, ns=ns, before=step, key=key)
                    if (f := _against_history(a, key, attrs, output, index, before)) is not None:
                        fired.append(f)
                    self.store.observe(**where, ns=ns, step=step, key=key, attrs=attrs)
            except Exception as exc:  # monitoring must not fail the request
                self._store_failed(f"compare node {self.node!r}'s output with its thread's", exc)
            checked = [(a, o[-1]) for a, o in seen]
            self._observe(checked, fired, input, ancestry, cfg)

        _once_adopted(run.task, run.config, settle)

    def _settle(
        self,
        run: _Run,
        input: Any,
        checked: list[tuple[Assertion, float]],
        fired: list[_Fired],
        final: bool,
        violate: bool = True,
    ) -> None:
        """Count and keep what checks showed (once the loop adopts a task run ahead),
        keep the task's retry state, and raise the most severe firing but ``record``."""
        config, task = run.config, run.task
        conf = config.get(CONF) or {}
        ancestry = conf.get(CONFIG_KEY_ANCESTRY)
        retrying = self._retrying(task, fired)

        def observe(task_id: Any, cfg: RunnableConfig) -> None:
            self._observe(checked, fired, input, ancestry, cfg)

        def settle(task_id: Any, cfg: RunnableConfig) -> None:
            observe(task_id, cfg)
            self._remember(task_id, fired, retrying, final)

        twin, effects = conf.get(CONFIG_KEY_ON_ADOPT) or (None, None)
        if effects is None:
            settle(task, config)
        elif twin == task:  # a task run ahead: settled once the loop adopts it, as its own
            effects.append(settle)
        else:  # a node of a graph run inside a task run ahead: its own retries now
            self._remember(task, fired, retrying, final)
            effects.append(observe)
        if fired and violate:
            f = max(fired, key=lambda f: SEVERITIES.index(f.a.severity))
            if f.a.severity != "record":
                raise AssertionViolation(
                    f.a.name, self.node, f.a.severity, f.message, ancestry, retrying, f.item
                )

    def _retrying(self, task: Any, fired: list[_Fired]) -> bool:
        """Whether the node runs again: a retry assertion fired that has attempts left
        at this task, and no fail assertion fired."""
        if any(f.a.severity == "fail" for f in fired):
            return False
        with self._lock:
            tried = self._tried.get(task) if task is not None else None
            before = tried.fired if tried is not None else {}
            return any(
                before.get(f.a.name, 0) + 1 < f.a.max_attempts
                for f in fired
                if f.a.severity == "retry"
            )

    def _observe(
        self,
        checked: list[tuple[Assertion, float]],
        fired: list[_Fired],
        input: Any,
        ancestry: Any,
        config: RunnableConfig,
    ) -> None:
        """What checks of a task's outputs show: counts, flags kept and reported."""
        with self._lock:
            for a, seconds in checked:
                counts = self._counts[a.name]
                counts.checked += 1
                counts.seconds += seconds
            for f in fired:
                self._counts[f.a.name].fired += 1
        for f in fired:
            self._record(f, input, ancestry, config)

    def _remember(self, task: Any, fired: list[_Fired], retrying: bool, final: bool) -> None:
        """What the task's next attempt needs: its retry assertions' firings so far
        (forgotten once the task's last output is checked)."""
        if not retrying or task is None:
            if final:
                self._forget(task)
            return
        with self._lock:
            tried = self._tried.setdefault(task, _Tried())
            for f in fired:
                if f.a.severity == "retry":
                    tried.said.append(f.message)
                    tried.fired[f.a.name] = tried.fired.get(f.a.name, 0) + 1
            self._tried.move_to_end(task)
            while len(self._tried) > _FEEDBACK_TASKS:
                self._tried.popitem(last=False)

    def _forget(self, task: Any) -> None:
        if task is not None and self._tried:
            with self._lock:
                self._tried.pop(task, None)

    def _record(self, f: _Fired, input: Any, ancestry: Any, config: RunnableConfig) -> None:
        a, message = f.a, f.message
        conf = config.get(CONF) or {}
        try:
            self.store.record(
                app=self.app,
                thread_id=_text(conf.get("thread_id")),
                request_id=_text(conf.get(CONFIG_KEY_REQUEST)),
                ancestry=list(ancestry) if ancestry is not None else None,
                node=self.node,
                assertion=a.name,
                severity=a.severity,
                message=message,
                input=plain(input) if isinstance(input, StateView) else input,
                output=f.output,
                weak_label=f.weak_label,
            )
        except Exception as exc:  # monitoring must not fail the request
            self._store_failed(f"keep a flag of assertion {a.name!r} on node {self.node!r}", exc)
        from langchain_core.callbacks.manager import dispatch_custom_event

        try:  # seen by callback handlers and tracing (LangSmith shows custom events)
            dispatch_custom_event(
                EVENT,
                {
                    "node": self.node,
                    "assertion": a.name,
                    "severity": a.severity,
                    "message": message,
                },
                config=config,
            )
        except RuntimeError:  # no run to report it under (the node was called bare)
            pass

    def _observe_later(
        self,
        config: RunnableConfig,
        checked: list[tuple[Assertion, float]],
        fired: list[_Fired],
        input: Any,
    ) -> None:
        """``_observe``, now, or once the loop adopts the task run ahead that ``config``
        runs inside."""
        ancestry = (config.get(CONF) or {}).get(CONFIG_KEY_ANCESTRY)
        _once_adopted(
            None, config, lambda _, cfg: self._observe(checked, fired, input, ancestry, cfg)
        )

    def _store_failed(self, what: str, exc: Exception) -> None:
        warnings.warn(
            f"alto: could not {what} in {self.store.where}: {type(exc).__name__}: {exc}",
            RuntimeWarning,
            stacklevel=3,
        )

    def stats(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {
                a.name: {"severity": a.severity, **dataclasses.asdict(self._counts[a.name])}
                for a in self.assertions
            }


def _once_adopted(task: Any, config: RunnableConfig, effect: Callable[[Any, Any], None]) -> None:
    """``effect(task, config)`` now, or ``effect(its id, its config)`` once the loop
    adopts the task run ahead that ``config`` runs in (or inside)."""
    _, effects = (config.get(CONF) or {}).get(CONFIG_KEY_ON_ADOPT) or (None, None)
    if effects is None:
        effect(task, config)
    else:
        effects.append(effect)


class _Run:
    """One call of an asserted node: what its checks need while it runs."""

    def __init__(self, task: Any, input: Any) -> None:
        self.task = task
        self.input = input
        self.config: RunnableConfig = {}
        #: items of a @streaming node checked so far (this attempt)
        self.items = 0
        self.sink: _CheckedSink | None = None
        self.watch: _LMWatch | None = None
        #: consistency assertion -> (key, attributes, item, its index, seconds) seen
        self.observed: dict[str, list[tuple[Any, Any, Any, int, float]]] = {}
        #: the config differs from the one LangGraph put in the node's context
        self.changed = False

    def raise_violation(self) -> None:
        """Raise what an assertion over the node's LM calls raised, had the node caught it."""
        if self.watch is not None and self.watch.raised is not None:
            raise self.watch.raised


class _CheckedSink:
    """A @streaming node's sink (``streams.Sink``) that checks each item in yield order.

    An item is checked before it is applied, so a failing one starts nothing. One that
    carries streams (to folds) is applied first and checked once its streams have ended,
    with their chunks as stock sees them (collected); items after it wait their turn.
    """

    def __init__(self, inner: Any, run: _Run, check: Callable[[_Run, Any], None]) -> None:
        self.inner = inner
        self.task_id = inner.task_id
        self.folds = inner.folds
        self._run = run
        self._check = check
        self._waiting: deque[Any] = deque()

    def apply(self, item: Command) -> None:
        if not self._waiting and all(r.closed for r in stream_refs(item)):
            self._check(self._run, item)
            self.inner.apply(item)
        else:
            self._waiting.append(item)
            self.inner.apply(item)
            self.drain()

    def drain(self, end: bool = False) -> None:
        """Check the waiting items whose streams have ended, in order (``end``: the node
        returned, so all of them)."""
        while self._waiting:
            refs = stream_refs(self._waiting[0])
            if any(r.error is not None for r in refs):
                self._waiting.clear()  # the node fails with its stream's error, as on stock
                return
            if not end and not all(r.closed for r in refs):
                return
            self._check(self._run, self._waiting.popleft())

    def open_stream(self) -> StreamRef:
        return self.inner.open_stream()

    def stream_event(self, ref: StreamRef, event: str, value: Any) -> None:
        self.inner.stream_event(ref, event, value)
        if event != CHUNK:
            self.drain()

    async def astream_event(self, ref: StreamRef, event: str, value: Any) -> None:
        await self.inner.astream_event(ref, event, value)
        if event != CHUNK:
            self.drain()


class _LMCall:
    def __init__(self, messages: list[Any]) -> None:
        self.messages = messages
        self.text = ""
        self.checked: str | None = None
        #: record assertions that fired on this call already (one flag per call)
        self.done: set[str] = set()


class _LMWatch(BaseCallbackHandler):
    """A callback handler on the node's run: checks each LM call the node makes (and
    code it calls), as its tokens arrive and once it ends. A check that fails raises
    from the model's token callback, which ends the call (``ChatAlto`` cancels its
    request at once)."""

    run_inline = True  # in the model's own thread or task, in order
    raise_error = True

    def __init__(self, node: AssertedNode, run: _Run) -> None:
        self.node = node
        self.run = run
        self.calls: dict[Any, _LMCall] = {}
        self.raised: Exception | None = None
        self.tokens = tuple(a for a in node.on_lm if a.over == "tokens")

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: Any, **_: Any) -> None:
        self.calls[run_id] = _LMCall(list(messages[0]) if messages else [])

    def on_llm_start(self, serialized: Any, prompts: Any, *, run_id: Any, **_: Any) -> None:
        self.calls[run_id] = _LMCall(list(prompts[:1]))

    def on_llm_new_token(self, token: str, *, run_id: Any, **_: Any) -> None:
        call = self.calls.get(run_id)
        if call is not None and token and self.tokens:
            call.text += token
            call.checked = call.text
            self._check(call, self.tokens)

    def on_llm_end(self, response: Any, *, run_id: Any, **_: Any) -> None:
        call = self.calls.pop(run_id, None)
        if call is None:
            return
        generations = getattr(response, "generations", None) or [[]]
        if generations[0]:
            call.text = generations[0][0].text
        # the whole response: token checks that have not seen it yet, and response checks
        fresh = call.checked != call.text
        self._check(call, [a for a in self.node.on_lm if fresh or a.over == "response"])

    def on_llm_error(self, error: BaseException, *, run_id: Any, **_: Any) -> None:
        self.calls.pop(run_id, None)

    def _check(self, call: _LMCall, assertions: Sequence[Assertion]) -> None:
        todo = [a for a in assertions if a.name not in call.done]
        if not todo:
            return
        try:
            fired = self.node._check(self.run, call.messages, call.text, todo)
        except Exception as exc:
            self.raised = exc  # raised again after the node, should it catch this
            raise
        call.done.update(a.name for a in fired)


def _with_handler(callbacks: Any, handler: BaseCallbackHandler) -> Any:
    """A run config's ``callbacks`` with ``handler`` added (inherited by child runs)."""
    if callbacks is None:
        return [handler]
    if isinstance(callbacks, list):
        return [*callbacks, handler]
    if isinstance(callbacks, BaseCallbackManager):
        callbacks = callbacks.copy()
        callbacks.add_handler(handler, inherit=True)
        return callbacks
    raise TypeError(f"alto: cannot watch the LM calls of a run whose callbacks are {callbacks!r}")


def _item_of(command: Any) -> Any:
    """An item of a @streaming node as it yielded it (an update, a Send, a Command),
    with the chunks of any stream it carries collected into a list, as on stock."""
    if not isinstance(command, Command):
        return command
    gotos = command.goto if isinstance(command.goto, (list, tuple)) else [command.goto]
    gotos = [_collected_send(g) if isinstance(g, Send) else g for g in gotos]
    if command.graph is None and command.resume is None:
        if not gotos or command.goto == ():
            return command.update
        if command.update is None and len(gotos) == 1 and not isinstance(command.goto, list):
            return gotos[0]
    goto = gotos if isinstance(command.goto, (list, tuple)) else gotos[0]
    return Command(graph=command.graph, update=command.update, resume=command.resume, goto=goto)


def _collected_send(send: Send) -> Send:
    arg = _given(send.arg)
    return send if arg is send.arg else Send(send.node, arg, timeout=send.timeout)


def _given(input: Any) -> Any:
    """A node's input as stock gives it: a fold's stream field is the list of its chunks."""
    if isinstance(input, dict) and any(isinstance(v, StreamRef) for v in input.values()):
        return {k: list.copy(v) if isinstance(v, StreamRef) else v for k, v in input.items()}
    return input


@dataclasses.dataclass(frozen=True)
class _Fired:
    """An assertion that fired, on which output (an item's: its index)."""

    a: Assertion
    message: str
    output: Any
    item: int | None = None
    #: a consistency assertion's proposal: the value the majority of its key had
    weak_label: Any = None


def _call(node: str, a: Assertion, input: Any, output: Any) -> Any:
    """What ``a``'s check says; its ``AssertionError`` is its message."""
    try:
        return a.check(input, output)
    except AssertionError as exc:
        return str(exc)
    except Exception as exc:
        raise AssertionCheckError(a.name, node, exc) from exc


def _disagreements(a: Assertion, seen: list[tuple[Any, Any, Any, int | None]]) -> list[_Fired]:
    """Of ``(key, attrs, output, item)`` observations, those whose attrs differ from the
    majority of their key (all of a key's, on a tie), in the order seen."""
    by_key: dict[Any, list[Any]] = {}
    for key, attrs, *_ in seen:
        by_key.setdefault(_hashable(key), []).append(attrs)
    tallies = {key: _tally(values) for key, values in by_key.items()}
    fired = []
    for key, attrs, output, item in seen:
        distinct = tallies[_hashable(key)]
        if len(distinct) < 2:
            continue
        top = _majority(distinct)
        if top is not None and attrs == top[0]:
            continue
        said = (
            f"{key!r}: {attrs!r} here, but {top[0]!r} in {top[1]} of {sum(n for _, n in distinct)}"
            if top is not None
            else f"{key!r}: no majority among {[v for v, _ in distinct]!r}"
        )
        fired.append(_Fired(a, said, output, item, top[0] if top is not None else None))
    return fired


@dataclasses.dataclass(frozen=True)
class _Seen:
    """What a step-scope consistency assertion observed in one output of a task."""

    order: tuple[str, int]  # (task id, item index): the same on stock and alto
    node: AssertedNode
    a: Assertion
    key: Any
    attrs: Any
    output: Any
    index: int | None
    seconds: float
    input: Any
    config: RunnableConfig


class StepEnd(BaseChannel):  # type: ignore[type-arg]
    """A channel no task writes, holding the observations of step-scope consistency
    assertions until the step ends. LangGraph's ``apply_writes`` tells every available
    channel that got no write that a step ended (``update([])``), after the step's
    writes are applied, on stock and on alto alike (alto runs LangGraph's loop): the
    observations are compared then, in task-id order. Never written, so never
    versioned, so never checkpointed; each run has its own (``from_checkpoint``)."""

    def __init__(self, typ: Any = object, key: str = "") -> None:
        super().__init__(typ, key)
        self._seen: list[_Seen] = []
        self._lock = threading.Lock()

    @property
    def ValueType(self) -> Any:  # noqa: N802 (LangGraph's name)
        return object

    @property
    def UpdateType(self) -> Any:  # noqa: N802
        return object

    def from_checkpoint(self, checkpoint: Any) -> StepEnd:
        return StepEnd(self.typ, self.key)

    def checkpoint(self) -> Any:
        return MISSING

    def get(self) -> StepEnd:
        return self

    def is_available(self) -> bool:
        return True  # (else apply_writes would not tell it that the step ended)

    def add(self, seen: _Seen) -> None:
        with self._lock:
            self._seen.append(seen)

    def update(self, values: Sequence[Any]) -> bool:
        with self._lock:
            seen, self._seen = sorted(self._seen, key=lambda s: s.order), []
        if seen:
            _step_ended(seen)
        return False  # no new version: it triggers nothing


def _step_ended(seen: list[_Seen]) -> None:
    """Compare one step's observations, per node and assertion; keep the flags (once
    the loop adopts the task, for a graph run inside a task run ahead), and fail the
    run on a ``fail`` that fired."""
    groups: dict[tuple[int, str], list[_Seen]] = {}
    for s in seen:
        groups.setdefault((id(s.node), s.a.name), []).append(s)
    failing: AssertionViolation | None = None
    for group in groups.values():
        a, node = group[0].a, group[0].node
        said = _disagreements(a, [(s.key, s.attrs, s, s.index) for s in group])
        fired = {id(f.output): f for f in said}  # (each firing's output: its _Seen)
        for s in group:
            f = fired.get(id(s))
            firings = [_Fired(a, f.message, s.output, s.index, f.weak_label)] if f else []
            node._observe_later(s.config, [(a, s.seconds)], firings, s.input)
            if f and a.severity == "fail" and failing is None:
                ancestry = (s.config.get(CONF) or {}).get(CONFIG_KEY_ANCESTRY)
                failing = AssertionViolation(a.name, node.node, "fail", f.message, ancestry)
    if failing is not None:
        raise failing


def _against_history(
    a: Assertion, key: Any, attrs: Any, output: Any, index: int | None, before: list[str]
) -> _Fired | None:
    """A firing if ``attrs`` differ from the majority of the earlier turns' (as JSON)."""
    top = _majority(_tally(before))
    if top is None or to_json(attrs) == top[0]:
        return None  # nothing before, no majority, or the majority's
    majority, n = top
    value = json.loads(majority)
    said = f"{key!r}: {attrs!r} now, but {value!r} in {n} of {len(before)} earlier turns"
    return _Fired(a, said, output, index, value)


def _tally(values: list[Any]) -> list[tuple[Any, int]]:
    """Each distinct value and how often it occurs, most often first (ties: first seen)."""
    counts: list[list[Any]] = []
    for v in values:
        for entry in counts:
            if entry[0] == v:
                entry[1] += 1
                break
        else:
            counts.append([v, 1])
    return sorted(((v, n) for v, n in counts), key=lambda e: -e[1])


def _majority(tally: list[tuple[Any, int]]) -> tuple[Any, int] | None:
    """The most frequent value of a ``_tally`` and its count; None on a tie or none."""
    if not tally or (len(tally) > 1 and tally[0][1] == tally[1][1]):
        return None
    return tally[0]


def _hashable(key: Any) -> Any:
    try:
        hash(key)
        return key
    except TypeError:
        return repr(key)


def _verdict(a: Assertion, result: Any) -> str | None:
    """None if the check held, else its message."""
    if type(result).__name__ == "bool_":  # numpy's, from np.all(...) and the like
        result = bool(result)
    if result is None or result is True:
        return None
    if result is False:
        return f"assertion {a.name!r} did not hold"
    if isinstance(result, str):
        return result or f"assertion {a.name!r} did not hold"
    raise AssertionCheckError(
        a.name,
        a.node,
        TypeError(
            f"it returned {result!r}; an assertion returns True or None when it holds, "
            "False or a message (str) when it does not"
        ),
    )


@contextlib.contextmanager
def _context(run: _Run) -> Iterator[None]:
    """Node code reads its config from the context (``get_config()``, ``feedback()``,
    a @streaming node's sink, an LM call's callbacks), which LangGraph set before
    calling this wrapper: what ``_prepare`` added must be in it too."""
    if not run.changed:
        yield
        return
    token = var_child_runnable_config.set(run.config)
    try:
        yield
    finally:
        var_child_runnable_config.reset(token)


def _whole(chunks: list[Any]) -> Any:
    """A runnable's output from the chunks it streamed (a node's is one chunk)."""
    if not chunks:
        return None
    out = chunks[0]
    for chunk in chunks[1:]:
        out = out + chunk
    return out


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
