"""Streaming nodes, stream-valued payloads and incremental folds.

An app opts in per node; the same code runs, with the same final state, on stock
LangGraph:

* ``@streaming`` marks a (async) generator node. Each item it yields is a partial state
  update (a dict), a ``Send`` or a ``Command``. On stock LangGraph the decorated node
  collects its items and returns them as one list of ``Command`` s, which LangGraph
  applies with the state's own reducers, in yield order. On alto each item is applied
  to the node's task the moment it is yielded: a ``Send`` starts its task at once, a
  partial update shows up in ``stream_mode="updates"``.
* A field of a yielded ``Send`` 's payload may be an iterator or async iterator (a token
  stream). When the ``Send`` goes to a ``@fold`` node, alto dispatches it at once and
  hands the chunks to the fold while the producer still generates them; elsewhere, and
  on stock LangGraph, the stream is first collected into a list.
* ``@fold(over="field")`` makes a node out of ``start`` / ``step`` / ``finish``: it
  consumes the payload's ``field`` chunk by chunk. It is a stateful stage: with several
  instances, a stream's chunks all go to the one instance running its fold.

The runtime side (who applies an item, where chunks travel) sits behind the *sink* a
streaming node finds in its config under ``CONFIG_KEY_YIELD``; without one, it runs
the stock way.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

from langchain_core.runnables.config import var_child_runnable_config
from langgraph.types import Command, Send

from ._langgraph import CONFIG_KEY_TASK_ID
from .config_keys import CONFIG_KEY_YIELD

__all__ = ["CONFIG_KEY_YIELD", "StreamRef", "fold", "is_fold", "is_streaming", "streaming"]

#: configurable key of a task whose streaming node applies items as they are yielded


class Sink(Protocol):
    """Where a streaming node's items go under alto (one per task)."""

    #: the task it belongs to: a graph invoked inside the node must not use it
    task_id: str
    #: fold node -> the payload field it consumes: that field of a Send to it stays a
    #: stream (every other stream-valued field arrives collected)
    folds: Mapping[str, str]

    def apply(self, item: Command) -> None: ...
    def open_stream(self) -> StreamRef: ...
    #: an event of a stream the node produces, from its thread (it may wait for room)
    def stream_event(self, ref: StreamRef, event: str, value: Any) -> None: ...
    #: the same, from the node's event loop
    async def astream_event(self, ref: StreamRef, event: str, value: Any) -> None: ...


# -- streams --------------------------------------------------------------------------

CHUNK, END, FAIL = "chunk", "end", "fail"

#: ``listener(seq, event, value, tag)``: ``seq`` is a chunk's index (an end's: the
#: number of chunks); ``tag`` is what the transport passed with the event
Listener = Callable[[int, str, Any, Any], None]


class StreamRef(list):  # type: ignore[type-arg]
    """A stream-valued payload field under alto: the list of the stream's chunks so
    far, which grows as the producer yields them.

    As a list it never waits: read once the stream has ended (by a checkpointer saving
    the Send that carries it, by a stream of tasks), it is the collected value stock
    LangGraph has there; read before (by a callback handler as the fold starts), it is
    what has come so far. ``chunks()`` and ``achunks()`` (what a ``@fold`` reads) get
    each chunk as the producer makes it, and wait for the next until the stream ends.
    It is put from any thread, read by any number of consumers, or forwarded to
    listeners (other processes).

    Between alto's own processes it travels as its id, and the chunks follow as
    messages; anything else that pickles or copies it gets a plain list of the chunks
    it holds.
    """

    __slots__ = ("sid", "readable", "origin", "closed", "error", "_cond", "_wakers", "_listeners")

    def __init__(self, sid: str | None = None, readable: bool = True) -> None:
        super().__init__()
        self.sid = sid or os.urandom(8).hex()
        #: False where only the producer is (its chunks go elsewhere as they are made)
        self.readable = readable
        #: the transport's note of where the chunks come from (a producer's call)
        self.origin: Any = None
        self.closed = False
        self.error: BaseException | None = None
        self._cond = threading.Condition()
        self._wakers: list[Callable[[], None]] = []
        self._listeners: list[Listener] = []

    def event(self, event: str, value: Any = None, tag: Any = None) -> None:
        with self._cond:
            if self.closed:
                return  # after a failure the producer's remaining events mean nothing
            seq = len(self)
            if event == CHUNK:
                self.append(value)
            else:
                self.closed = True
                self.error = value if event == FAIL else None
            for listener in self._listeners:
                listener(seq, event, value, tag)
            self._cond.notify_all()
            wakers, self._wakers = self._wakers, []
        for wake in wakers:
            wake()

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` for every event so far and every later one, in order;
        returns a function that stops it."""
        with self._cond:
            for seq, chunk in enumerate(list.copy(self)):
                listener(seq, CHUNK, chunk, None)
            if self.closed:
                listener(len(self), FAIL if self.error is not None else END, self.error, None)
            else:
                self._listeners.append(listener)

        def stop() -> None:
            with self._cond, contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return stop

    def _read(self, i: int) -> tuple[bool, Any]:
        """(True, chunk i), or (False, None) at the end; raises the producer's error.
        Call with the lock held, once chunk i or the end is there."""
        if i < len(self):
            return True, list.__getitem__(self, i)
        if self.error is not None:
            raise self.error
        return False, None

    def _check_readable(self) -> None:
        if not self.readable:
            raise RuntimeError(f"alto: stream {self.sid} is not readable in this process")

    def chunks(self) -> Iterator[Any]:
        """Each chunk as it comes, until the end (raises the producer's error)."""
        self._check_readable()
        return self._chunks()

    def _chunks(self) -> Iterator[Any]:
        i = 0
        while True:
            with self._cond:
                while i >= len(self) and not self.closed:
                    self._cond.wait()
                more, chunk = self._read(i)
            if not more:
                return
            yield chunk
            i += 1

    def achunks(self) -> AsyncIterator[Any]:
        """``chunks()``, on an event loop."""
        self._check_readable()
        return self._achunks()

    async def _achunks(self) -> AsyncIterator[Any]:
        loop = asyncio.get_running_loop()
        i = 0
        while True:
            with self._cond:
                ready = i < len(self) or self.closed
                if not ready:
                    fut = loop.create_future()
                    self._wakers.append(lambda f=fut: loop.call_soon_threadsafe(_resolve_future, f))
            if not ready:
                await fut
                continue
            with self._cond:
                more, chunk = self._read(i)
            if not more:
                return
            yield chunk
            i += 1

    def __reduce__(self) -> Any:
        # alto's own transport sends the id (``arrived``); anything else, the chunks
        return (list, (list.copy(self),))


def _resolve_future(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_result(None)


#: sid -> stream, for stream references arriving in this process (set by a call that
#: receives messages which may carry them: ``receiving``)
_RECEIVING: contextvars.ContextVar[dict[str, StreamRef] | None] = contextvars.ContextVar(
    "alto_streams_receiving", default=None
)


def arrived(sid: str) -> StreamRef:
    """A stream reference, unpickled: this process's stream of that id (made on first
    sight), which the call receiving it feeds from its stream messages."""
    table = _RECEIVING.get()
    if table is None:
        raise RuntimeError(f"alto: stream {sid} arrived outside a call that can feed it")
    ref = table.get(sid)
    if ref is None:
        ref = table[sid] = StreamRef(sid)
    return ref


@contextlib.contextmanager
def receiving(table: dict[str, StreamRef]) -> Iterator[None]:
    """Stream references unpickled inside resolve to streams of ``table`` (created on
    first sight), which the call feeds from its stream messages."""
    token = _RECEIVING.set(table)
    try:
        yield
    finally:
        _RECEIVING.reset(token)


def stream_refs(value: Any) -> list[StreamRef]:
    """The stream references among a payload's fields (a Send's, a Command's gotos)."""
    if isinstance(value, Command):
        gotos = value.goto if isinstance(value.goto, (list, tuple)) else [value.goto]
        return [r for g in gotos if isinstance(g, Send) for r in stream_refs(g.arg)]
    if isinstance(value, Send):
        return stream_refs(value.arg)
    if isinstance(value, dict):
        return [v for v in value.values() if isinstance(v, StreamRef)]
    return []


def _is_stream(value: Any) -> bool:
    if isinstance(value, (str, bytes, bytearray, dict, StreamRef)):
        return False
    return isinstance(value, (Iterator, AsyncIterator))


# -- @streaming -----------------------------------------------------------------------


def streaming(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a generator (or async generator) function as a streaming node.

    It yields partial updates (dicts), ``Send`` s and ``Command`` s. Add it to a
    ``StateGraph`` as any node; its signature (``state``, ``config``, ``runtime``...) is
    read by LangGraph as usual.
    """
    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        async def anode(*args: Any, **kwargs: Any) -> Any:
            sink = _sink()
            items = fn(*args, **kwargs)
            if sink is None:
                return _as_output([await _acollected(i) async for i in items])
            async for item in items:
                await _astream_item(sink, item)
            return None

        node: Callable[..., Any] = anode
    elif inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def snode(*args: Any, **kwargs: Any) -> Any:
            sink = _sink()
            items = fn(*args, **kwargs)
            if sink is None:
                return _as_output([_collected(i) for i in items])
            for item in items:
                _stream_item(sink, item)
            return None

        node = snode
    else:
        raise TypeError(
            f"@streaming needs a generator function (one that yields), got {fn!r}; "
            "a function that returns its update needs no decorator"
        )
    node.__alto_streaming__ = True  # type: ignore[attr-defined]
    return node


def is_streaming(fn: Any) -> bool:
    return bool(getattr(fn, "__alto_streaming__", False))


def _sink() -> Sink | None:
    conf = (var_child_runnable_config.get() or {}).get("configurable") or {}
    sink = conf.get(CONFIG_KEY_YIELD)
    # a node of a graph run inside the streaming node inherits the config: not its sink
    if sink is None or conf.get(CONFIG_KEY_TASK_ID) != sink.task_id:
        return None
    return sink


def _as_command(item: Any) -> Command:
    if isinstance(item, Command):
        return item
    if isinstance(item, Send):
        return Command(goto=item)
    if item is None or isinstance(item, (list, tuple, str, bytes)):
        raise TypeError(
            "a @streaming node yields partial updates (dicts or state objects), Sends "
            f"or Commands, one at a time; it yielded {type(item).__name__}"
        )
    return Command(update=item)


def _sends(cmd: Command) -> list[Send]:
    gotos = cmd.goto if isinstance(cmd.goto, (list, tuple)) else [cmd.goto]
    return [g for g in gotos if isinstance(g, Send)]


def _replace_sends(cmd: Command, new: dict[int, Send]) -> Command:
    """``cmd`` with the Sends at the given positions of its gotos replaced."""
    if not new:
        return cmd
    if not isinstance(cmd.goto, (list, tuple)):
        return Command(graph=cmd.graph, update=cmd.update, resume=cmd.resume, goto=new[0])
    out, n = [], 0
    for g in cmd.goto:
        if isinstance(g, Send):
            g, n = new.get(n, g), n + 1
        out.append(g)
    return Command(graph=cmd.graph, update=cmd.update, resume=cmd.resume, goto=out)


def _stream_fields(send: Send) -> list[str]:
    arg = send.arg
    return [k for k, v in arg.items() if _is_stream(v)] if isinstance(arg, dict) else []


def _collected(item: Any, ready: dict[int, list[Any]] | None = None) -> Command:
    """An item as stock LangGraph gets it: streams in Send payloads collected
    (``ready``: async streams already collected, by id)."""
    cmd = _as_command(item)
    new = {}
    for i, send in enumerate(_sends(cmd)):
        fields = _stream_fields(send)
        if fields:
            arg = dict(send.arg)
            for k in fields:
                if ready is not None and id(arg[k]) in ready:
                    arg[k] = ready[id(arg[k])]
                elif isinstance(arg[k], AsyncIterator):
                    raise TypeError(
                        f"a sync @streaming node yielded a Send to {send.node!r} whose "
                        f"field {k!r} is an async iterator; make the node async"
                    )
                else:
                    arg[k] = list(arg[k])
            new[i] = Send(send.node, arg, timeout=send.timeout)
    return _replace_sends(cmd, new)


async def _acollected(item: Any) -> Command:
    cmd = _as_command(item)
    ready = {
        id(v): [c async for c in v]
        for send in _sends(cmd)
        for k in _stream_fields(send)
        if isinstance(v := send.arg[k], AsyncIterator)
    }
    return _collected(cmd, ready)


def _as_output(commands: list[Command]) -> Any:
    return commands or None


def _split(sink: Sink, item: Any) -> tuple[Command, list[tuple[StreamRef, Any]]]:
    """The item to apply (streams to folds replaced by references) and the streams to
    pump after applying it. Streams to other nodes are left for the caller to collect."""
    cmd = _as_command(item)
    new, pumps = {}, []
    for i, send in enumerate(_sends(cmd)):
        over = sink.folds.get(send.node)
        if over is not None and over in _stream_fields(send):
            ref = sink.open_stream()
            pumps.append((ref, send.arg[over]))
            new[i] = Send(send.node, {**send.arg, over: ref}, timeout=send.timeout)
    return _replace_sends(cmd, new), pumps


def _stream_item(sink: Sink, item: Any) -> None:
    cmd, pumps = _split(sink, item)
    try:
        sink.apply(_collected(cmd))
        # The Sends are out: each fold runs while its stream is generated, here, in
        # yield order (as stock LangGraph collects them before the node goes on).
        for ref, source in pumps:
            if isinstance(source, AsyncIterator):
                raise TypeError(
                    "a sync @streaming node yielded a Send whose stream is an async "
                    "iterator; make the node async"
                )
            _pump(sink, ref, source)
    except BaseException as exc:
        _fail_all(sink, pumps, exc)
        raise


async def _astream_item(sink: Sink, item: Any) -> None:
    cmd, pumps = _split(sink, item)
    try:
        sink.apply(await _acollected(cmd))
        for ref, source in pumps:
            if isinstance(source, AsyncIterator):
                async for chunk in source:
                    await sink.astream_event(ref, CHUNK, chunk)
            else:
                for chunk in source:
                    await sink.astream_event(ref, CHUNK, chunk)
            await sink.astream_event(ref, END, None)
    except BaseException as exc:
        _fail_all(sink, pumps, exc)
        raise


def _pump(sink: Sink, ref: StreamRef, source: Iterable[Any]) -> None:
    for chunk in source:
        sink.stream_event(ref, CHUNK, chunk)
    sink.stream_event(ref, END, None)


def _fail_all(sink: Sink, pumps: list[tuple[StreamRef, Any]], exc: BaseException) -> None:
    """The item failed: each of its streams not ended yet fails with that exception,
    so no fold waits for chunks that will never come (an ended stream ignores it)."""
    for ref, _ in pumps:
        sink.stream_event(ref, FAIL, exc)


# -- @fold ----------------------------------------------------------------------------


def fold(over: str) -> Callable[[Any], Callable[..., Any]]:
    """Make a node from a class (or an object) with ``start(payload) -> acc``,
    ``step(acc, chunk) -> acc`` and ``finish(acc, payload) -> update``, which consumes
    the payload field ``over`` chunk by chunk. The class is instantiated once per
    process, with no arguments; any of the three methods may be async.

    ``finish`` gets the payload with ``over`` as the list of all chunks, as on stock
    LangGraph, where the node runs once the whole value is there. ``start`` should not
    read ``over``: on alto the stream has only begun.
    """
    if not isinstance(over, str) or not over:
        raise TypeError(f"fold(over=...) names the payload field to consume, got {over!r}")

    def decorate(impl: Any) -> Callable[..., Any]:
        for method in ("start", "step", "finish"):
            if not callable(getattr(impl, method, None)):
                raise TypeError(f"@fold: {impl!r} has no {method}() method")
        get = _Lazy(impl) if isinstance(impl, type) else (lambda: impl)
        is_async = any(
            inspect.iscoroutinefunction(getattr(impl, m)) for m in ("start", "step", "finish")
        )
        name = getattr(impl, "__name__", type(impl).__name__)

        def payload_of(payload: Any) -> Any:
            if not isinstance(payload, dict) or over not in payload:
                raise ValueError(
                    f"fold node {name!r} consumes payload field {over!r}; "
                    f"its input has no such field: {type(payload).__name__}"
                )
            return payload[over]

        if is_async:

            async def anode(payload: Any) -> Any:
                obj, value = get(), payload_of(payload)
                acc = await _maybe(obj.start(payload))
                chunks = []
                if isinstance(value, (StreamRef, AsyncIterator)):
                    source = value.achunks() if isinstance(value, StreamRef) else value
                    async for chunk in source:
                        chunks.append(chunk)
                        acc = await _maybe(obj.step(acc, chunk))
                else:
                    for chunk in value:
                        chunks.append(chunk)
                        acc = await _maybe(obj.step(acc, chunk))
                return await _maybe(obj.finish(acc, {**payload, over: chunks}))

            node: Callable[..., Any] = anode
        else:

            def snode(payload: Any) -> Any:
                obj, value = get(), payload_of(payload)
                acc = obj.start(payload)
                chunks = []
                for chunk in value.chunks() if isinstance(value, StreamRef) else value:
                    chunks.append(chunk)
                    acc = obj.step(acc, chunk)
                return obj.finish(acc, {**payload, over: chunks})

            node = snode
        node.__name__ = node.__qualname__ = name
        node.__doc__ = getattr(impl, "__doc__", None)
        node.__alto_fold__ = over  # type: ignore[attr-defined]
        return node

    return decorate


def is_fold(fn: Any) -> bool:
    return getattr(fn, "__alto_fold__", None) is not None


class _Lazy:
    """The fold's object: made on first use in each process (it ships as its class)."""

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self._lock = threading.Lock()
        self._made: list[Any] = []

    def __call__(self) -> Any:
        if not self._made:
            with self._lock:
                if not self._made:
                    self._made.append(self.cls())
        return self._made[0]

    def __reduce__(self) -> Any:
        return (_Lazy, (self.cls,))


async def _maybe(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def node_function(runnable: Any) -> Any:
    """The function behind a node's runnable (LangGraph wraps it in a RunnableCallable)."""
    for attr in ("afunc", "func"):
        fn = getattr(runnable, attr, None)
        if fn is not None and (is_streaming(fn) or is_fold(fn)):
            return fn
    return None
