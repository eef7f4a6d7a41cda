"""``RemoteNode``: a node's runnable whose code runs on an instance of its stage.

It takes the node runnable's place inside the task's proc in the app process, so only
the node's own code moves; LangGraph's writers, retries, timeouts and callbacks stay
here:

    task (app) --TASK--> router --> instance k of the stage --RESULT--> router --> task
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import Runnable, RunnableConfig

from .. import streams
from .._langgraph import CONF, CONFIG_KEY_CALL, CONFIG_KEY_RUNTIME, CONFIG_KEY_SEND, DEFAULT_RUNTIME
from ..config_keys import (
    CONFIG_KEY_ANCESTRY,
    CONFIG_KEY_IN_PROCESS,
    CONFIG_KEY_REQUEST,
    CONFIG_KEY_YIELD,
)
from ..errors import StageInstanceLost
from ..views import ReadLog, StateView, plain
from . import flow, relay, shipping, wire
from .rpc import TERMINAL, Deliver
from .spec import routing_key

if TYPE_CHECKING:
    from .deployment import Deployment


class RemoteNode(Runnable[Any, Any]):
    """A node's runnable, run on an instance of its stage in a worker process.

    It takes the node runnable's place inside the task's proc, so only the node's own
    code moves: LangGraph's writers, retries, timeouts and callbacks stay here. While
    the call runs, its stream-writer chunks, callback events and @task calls come back
    (``relay.py``) and are handled here, on the calling thread or event loop, in order.
    """

    def __init__(self, stage: str, node: Runnable[Any, Any], deployment: Deployment) -> None:
        self.stage = stage
        self.node = node
        self.deployment = deployment
        self.spec = deployment.specs[stage]
        self.name = node.get_name()

    def __reduce__(self) -> Any:
        # shipped inside node code (an alto graph invoked in a node): the node itself
        return (_identity, (self.node,))

    def __repr__(self) -> str:
        return f"RemoteNode(stage={self.stage!r}, node={self.node!r})"

    def __getattr__(self, name: str) -> Any:
        # what LangGraph and tools read off a node's runnable (a ToolNode's
        # tools_by_name, say) is the node's own
        node = self.__dict__.get("node")
        if node is None:
            raise AttributeError(name)
        return getattr(node, name)

    def _send(
        self,
        input: Any,
        config: RunnableConfig,
        deliver: Deliver,
        streamed: bool,
        call: _Call,
        sync: bool,
    ) -> bytes:
        conf = config.get(CONF) or {}
        ancestry = conf.get(CONFIG_KEY_ANCESTRY, ())
        request_id = conf.get(CONFIG_KEY_REQUEST, "")
        # read before shipping: a drain requested after this is watched for (below)
        control = getattr(_runtime(config), "control", None)
        drained = control is not None and control.drain_requested
        payload = shipping.ship_call(self.stage, input, config, streamed, sync)  # type: ignore[arg-type]
        if isinstance(input, StateView):  # the instance tells what the node read
            call.reads = input._log
        key = routing_key(self.spec, request_id, ancestry)
        call.call_id = call_id = self.deployment.call(self.stage, payload, key, deliver)
        # streams in the input (a fold's): their chunks follow the task, as they come;
        # one that a call on an instance makes goes there straight, from now on
        for ref in streams.stream_refs(plain(input) if isinstance(input, StateView) else input):
            call.unlisten.append(ref.listen(self._feeder(call_id, ref.sid)))
            if ref.origin is not None and ref.origin[0] is self.deployment:
                self.deployment.subscribe(call_id, ref.origin[1], ref.sid)
        # a drain of the run requested while the node runs reaches its instance too
        if control is not None and not drained:
            call.unlisten.append(_DRAINS.watch(control, self._drainer(call_id)))
        return call_id

    def _feeder(self, call_id: bytes, sid: str) -> streams.Listener:
        what = f"a chunk of the stream into node {self.stage!r}"

        def feed(seq: int, event: str, value: Any, teed_to: Any) -> None:
            if teed_to == call_id:  # the router sent it to the call itself
                return
            payload = shipping.dumps_stream_event(sid, event, value, what)
            self.deployment.feed(call_id, self.stage, payload, wire.stream_key(sid, seq))

        return feed

    def _drainer(self, call_id: bytes) -> Callable[[str], None]:
        def drain(reason: str) -> None:
            payload = shipping.dumps_stream_event(wire.DRAIN_SID, streams.CHUNK, reason, "a drain")
            self.deployment.feed(call_id, self.stage, payload)

        return drain

    def _call(self, config: RunnableConfig, env: bytes, payload: Any) -> None:
        """A @task call made by the node: through this task's own call machinery."""
        _, call_id, instance, sub = wire.decode(env)
        func, input, kwargs = shipping.loads(payload)

        def done(fut: Any) -> None:
            exc = fut.exception()
            ok = exc is None
            self.deployment.reply_call(instance, call_id, sub, ok, fut.result() if ok else exc)

        try:
            impl = config[CONF][CONFIG_KEY_CALL]
            fut = impl(func, input, callbacks=config.get("callbacks"), **kwargs)
        except Exception as exc:
            self.deployment.reply_call(instance, call_id, sub, False, exc)
            return
        fut.add_done_callback(done)

    def _store(self, config: RunnableConfig, env: bytes, payload: Any) -> None:
        """Operations on ``runtime.store`` made by the node: run by the request's store,
        here (on the caller's thread, which waits for the node anyway; on its event
        loop, as a task, for an async caller)."""
        _, call_id, instance, sub = wire.decode(env)

        def reply(ok: bool, value: Any) -> None:
            self.deployment.reply_call(instance, call_id, sub, ok, value)

        try:
            store = _runtime(config).store
            if store is None:
                raise RuntimeError("alto: the node used runtime.store, and the run has none")
            ops = shipping.loads(payload)
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                reply(True, store.batch(ops))
                return
        except Exception as exc:
            reply(False, exc)
            return

        def done(fut: asyncio.Future[Any]) -> None:
            _STORE_OPS.discard(fut)
            if fut.cancelled():
                reply(False, RuntimeError("alto: the store operation was cancelled"))
            elif (exc := fut.exception()) is not None:
                reply(False, exc)
            else:
                reply(True, fut.result())

        op = asyncio.ensure_future(store.abatch(ops))
        _STORE_OPS.add(op)  # the loop keeps only weak references to tasks
        op.add_done_callback(done)

    def _ahead_of_result(
        self, config: RunnableConfig, call: _Call, kind: bytes, env: bytes, payload: Any
    ) -> Any:
        """Act on a message the node's call sent ahead of its result (``relay.py``);
        a callback event is returned, for the caller to replay (sync or async)."""
        if kind == wire.CALLBACK:
            return shipping.loads(payload)
        if kind == wire.YIELD:
            with streams.receiving(call.streams):
                item = shipping.loads(payload)
            for ref in call.streams.values():  # where their chunks come from
                ref.origin = ref.origin or (self.deployment, call.call_id)
            config[CONF][CONFIG_KEY_YIELD].apply(item)
        elif kind == wire.STREAM or kind == wire.TEED:
            self._stream_event(call, kind, env, payload)
        if kind == wire.EMIT:
            _runtime(config).stream_writer(shipping.loads(payload))
        elif kind == wire.HEARTBEAT:
            _runtime(config).heartbeat()
        elif kind == wire.WRITES:
            config[CONF][CONFIG_KEY_SEND](shipping.loads(payload))
        elif kind == wire.CALL:
            self._call(config, env, payload)
        elif kind == wire.STORE:
            self._store(config, env, payload)
        elif kind == wire.READS and call.reads is not None:
            call.reads.merge(shipping.loads(payload))
        return None

    def _stream_event(self, call: _Call, kind: bytes, env: bytes, payload: Any) -> None:
        """An event of a stream the node makes (a TEED one: the router sent it to the
        fold that consumes it, too). The chunks are acknowledged as they are handled
        here, so a producer cannot run more than a window ahead of this caller either."""
        sid, event, value = shipping.loads_stream_event(payload)
        ref = call.streams.get(sid) or call.streams.setdefault(sid, streams.StreamRef(sid))
        teed_to = wire.decode(env).stage if kind == wire.TEED else None
        ref.event(event, value, teed_to)
        if event == streams.CHUNK:
            acks = call.acks.get(sid) or call.acks.setdefault(sid, flow.Acks())
            if acks.due(len(payload)):
                self.deployment.credit(call.call_id, sid, len(ref))

    def _run(self, input: Any, config: RunnableConfig | None, streamed: bool) -> Iterator[Any]:
        """The node's output chunks (streamed) or its output (one item), handling the
        call's other messages on the way, on this thread."""
        config = config or {}
        inbox: queue.SimpleQueue[tuple[bytes, bytes, Any]] = queue.SimpleQueue()
        call = _Call()
        call_id = self._send(input, config, lambda *msg: inbox.put(msg), streamed, call, True)
        callbacks = relay.Replayer(config.get("callbacks"))
        try:
            while True:
                kind, env, payload = inbox.get()
                if kind == wire.CHUNK:
                    yield shipping.loads(payload)
                elif kind in TERMINAL:
                    output = _outcome(kind, payload)
                    if not streamed:
                        yield output
                    return
                elif (event := self._ahead_of_result(config, call, kind, env, payload)) is not None:
                    callbacks.replay(event)
        except BaseException as exc:
            self.deployment.cancel(call_id)
            call.end(exc)
            raise
        finally:
            call.end(None)

    async def _arun(
        self, input: Any, config: RunnableConfig | None, streamed: bool
    ) -> AsyncIterator[Any]:
        """``_run`` on the caller's event loop."""
        config = config or {}
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[tuple[bytes, bytes, Any]] = asyncio.Queue()
        call = _Call()
        call_id = self._send(
            input,
            config,
            lambda *msg: loop.call_soon_threadsafe(inbox.put_nowait, msg),
            streamed,
            call,
            False,
        )
        callbacks = relay.Replayer(config.get("callbacks"))
        try:
            while True:
                kind, env, payload = await inbox.get()
                if kind == wire.CHUNK:
                    yield shipping.loads(payload)
                elif kind in TERMINAL:
                    output = _outcome(kind, payload)
                    if not streamed:
                        yield output
                    return
                elif (event := self._ahead_of_result(config, call, kind, env, payload)) is not None:
                    await callbacks.areplay(event)
        except BaseException as exc:
            self.deployment.cancel(call_id)
            call.end(exc)
            raise
        finally:
            call.end(None)

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        if _in_process(config):
            return self.node.invoke(input, config, **kwargs)
        run = self._run(input, config, streamed=False)
        try:
            return next(run)
        finally:
            run.close()

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        if _in_process(config):
            return await self.node.ainvoke(input, config, **kwargs)
        run = self._arun(input, config, streamed=False)
        try:
            return await anext(run)
        finally:
            await run.aclose()

    # LangGraph streams a task's proc when an astream_events/astream_log handler listens
    def stream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        if _in_process(config):
            yield from self.node.stream(input, config, **kwargs)
        else:
            yield from self._run(input, config, streamed=True)

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        chunks = (
            self.node.astream(input, config, **kwargs)
            if _in_process(config)
            else self._arun(input, config, streamed=True)
        )
        async for chunk in chunks:
            yield chunk


#: store operations running for nodes on instances (async callers)
_STORE_OPS: set[asyncio.Future[Any]] = set()


class _DrainWatch:
    """Forwards drain requests of runs whose nodes run on instances.

    ``RunControl.request_drain`` is a plain attribute write that nothing can hook, so
    one daemon thread polls the controls of calls in flight (only while there are any)
    and feeds each newly drained one's reason to its call once."""

    INTERVAL = 0.05

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched: dict[int, tuple[Any, Callable[[str], None]]] = {}
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, control: Any, feed: Callable[[str], None]) -> Callable[[], None]:
        key = next(self._ids)
        with self._lock:
            self._watched[key] = (control, feed)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="alto-drain", daemon=True)
                self._thread.start()
        return lambda: self._forget(key)

    def _forget(self, key: int) -> None:
        with self._lock:
            self._watched.pop(key, None)

    def _run(self) -> None:
        tick = threading.Event()  # never set: a wait that apps patching time.sleep don't see
        while True:
            tick.wait(self.INTERVAL)
            with self._lock:
                if not self._watched:
                    self._thread = None
                    return
                drained = [(k, c, f) for k, (c, f) in self._watched.items() if c.drain_requested]
                for key, _, _ in drained:
                    del self._watched[key]
            for _, control, feed in drained:
                try:
                    feed(control.drain_reason)
                except Exception:  # the call ended meanwhile
                    pass


_DRAINS = _DrainWatch()


class _Call:
    """A call's stream plumbing on the caller's side: the streams its node produces
    (fed by its STREAM messages) and the feeds of the streams in its input."""

    def __init__(self) -> None:
        self.call_id = b""
        self.streams: dict[str, streams.StreamRef] = {}
        #: when to acknowledge the chunks of each
        self.acks: dict[str, flow.Acks] = {}
        self.unlisten: list[Callable[[], None]] = []
        #: the read log of the state view in the input (a task run ahead), if any
        self.reads: ReadLog | None = None

    def end(self, exc: BaseException | None) -> None:
        """The call is over: stop feeding its input streams; a stream it produced and
        did not end fails (with the call's exception), so its reader does not wait."""
        for stop in self.unlisten:
            stop()
        self.unlisten.clear()
        for ref in self.streams.values():
            ref.event(
                streams.FAIL, exc or RuntimeError("alto: the producer's call ended mid-stream")
            )


def _runtime(config: RunnableConfig) -> Any:
    return (config.get(CONF) or {}).get(CONFIG_KEY_RUNTIME) or DEFAULT_RUNTIME


def _in_process(config: RunnableConfig | None) -> bool:
    return bool(config and (config.get(CONF) or {}).get(CONFIG_KEY_IN_PROCESS))


def _outcome(kind: bytes, payload: Any) -> Any:
    if kind == wire.RESULT:
        return shipping.loads(payload)
    if kind == wire.ERROR:
        raise shipping.loads(payload)  # checked to unpickle in the instance
    raise StageInstanceLost(bytes(payload).decode(errors="replace"))


def _identity(x: Any) -> Any:
    return x
