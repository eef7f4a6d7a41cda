"""A stage instance: a process that runs one stage's node code on the items routed to it.

It connects to the router's back end with its instance id as zmq identity, says
``READY`` once the node's code is loaded (or ``FAILED`` with the reason), then runs each
task message as an asyncio task on its event loop (sync node code on the loop's
threads, as LangGraph runs it). A call's stream-writer chunks go back as ``EMIT``
messages ahead of its ``RESULT``/``ERROR``.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import contextvars
import itertools
import json
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import cloudpickle
import zmq
import zmq.asyncio
from langchain_core.runnables.config import var_child_runnable_config

from .. import streams
from .._langgraph import CONFIG_KEY_RUNTIME
from ..views import StateView
from . import flow, relay, rpc, security, shipping, wire
from .forkserver import STOP_SIGNAL, exit_now

logger = logging.getLogger("alto_langgraph")

#: the least time between two heartbeat messages of one call
HEARTBEAT_EVERY = 0.05

#: exit code of an instance whose node code did not load (restarting it would not help)
EXIT_LOAD_FAILED = 3
LOAD_FAILED_ACK_TIMEOUT = 5.0  # s

#: True inside a stage instance: alto graphs unpickled here (a graph invoked inside a
#: node) run inline, in this process, instead of starting a deployment of their own.
IN_STAGE_INSTANCE = False


def serve(
    back_address: str,
    identity: bytes,
    stage: str,
    code: bytes,
    sys_path: list[str],
    credentials: security.PeerCredentials,
    front_address: str = "",
    lm_routes: dict[str, str] | None = None,
    threads: int = 64,
    max_calls: int | None = None,
    max_memory_mb: float | None = None,
) -> None:
    global IN_STAGE_INSTANCE
    IN_STAGE_INSTANCE = True
    if lm_routes:  # ChatAlto calls made by node code here go to the app's LM stages
        rpc.bind_process(front_address, lm_routes, credentials)
    for p in reversed(sys_path):  # node code is pickled by reference to its modules
        if p not in sys.path:
            sys.path.insert(0, p)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    # sync node code runs on the loop's default executor (as LangGraph runs it there)
    instance = StageInstance(stage, identity, loop, credentials, threads, max_calls, max_memory_mb)
    loop.set_default_executor(_CallThreads(instance))
    # through the loop, which wakes the main thread whichever thread the signal hits
    loop.add_signal_handler(STOP_SIGNAL, exit_now)
    loop.run_until_complete(instance.serve(back_address, code))


class StageInstance:
    """The socket lives on the event loop (no I/O thread: one thread hand-off less per
    message each way); node code on other threads sends through the loop."""

    def __init__(
        self,
        stage: str,
        identity: bytes,
        loop: asyncio.AbstractEventLoop,
        credentials: security.PeerCredentials,
        threads: int = 64,
        max_calls: int | None = None,
        max_memory_mb: float | None = None,
    ) -> None:
        self.stage = stage
        self.identity = identity
        self.loop = loop
        self.node: Any = None
        self.running: dict[tuple[bytes, bytes], asyncio.Task[Any]] = {}
        #: per call: the streams in its input, fed by FEED messages (from the caller, or
        #: straight from the producer through the router), which arrive by those two
        #: paths and are put in order; their acknowledgements
        self.inputs: dict[tuple[bytes, bytes], dict[str, streams.StreamRef]] = {}
        self.orders: dict[tuple[bytes, bytes], dict[str, tuple[flow.InOrder, flow.Acks]]] = {}
        #: per call: its way back to the caller (with the windows of the streams it makes)
        self.links: dict[tuple[bytes, bytes], _Link] = {}
        #: per call: its run's ``RunControl`` (or the reason of a drain that came first)
        self.controls: dict[tuple[bytes, bytes], Any] = {}
        #: @task calls waiting for the caller: (client, call id, sub-id) -> future
        self.waiting: dict[tuple[bytes, bytes, bytes], Any] = {}
        #: messages that could not be handled (malformed)
        self.dropped = 0
        #: calls whose ``run`` has begun (it replies, whatever happens)
        self.started: set[tuple[bytes, bytes]] = set()
        # health (``pulse``): the pool's threads each call holds, and the calls whose
        # caller gave up while their code still ran on threads (it cannot be stopped);
        # calls run, against the recycling limits
        self.threads = threads
        self._threads_lock = threading.Lock()
        self.busy: collections.Counter[tuple[bytes, bytes]] = collections.Counter()
        self.abandoned: set[tuple[bytes, bytes]] = set()
        self.calls = 0
        self.max_calls = max_calls
        self.max_memory_mb = max_memory_mb
        self.context = zmq.asyncio.Context()
        self.sock = self.context.socket(zmq.DEALER)
        credentials.apply(self.sock)  # the router knows this instance by them
        self.sock.setsockopt(zmq.LINGER, 1000)
        for opt in (zmq.SNDHWM, zmq.RCVHWM):
            self.sock.setsockopt(opt, 0)
        self._loop_thread = threading.get_ident()

    def send(self, frames: list[Any]) -> None:
        """Send one message (from any thread; in order per thread)."""
        if threading.get_ident() == self._loop_thread:
            self.sock.send_multipart(frames, copy=False)
        else:
            self.loop.call_soon_threadsafe(self.sock.send_multipart, frames)

    async def serve(self, back_address: str, code: bytes) -> None:
        self.sock.connect(back_address)
        try:
            self.node = cloudpickle.loads(code)
        except BaseException as exc:
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            reason = (
                f"stage {self.stage!r}: its code could not be loaded in a worker process: {detail}"
            )
            await self.sock.send_multipart([b"", wire.envelope(wire.FAILED), reason.encode()])
            with contextlib.suppress(TimeoutError):  # the router has it on record
                await asyncio.wait_for(self.sock.recv_multipart(), LOAD_FAILED_ACK_TIMEOUT)
            self.sock.close()
            self.context.term()
            raise SystemExit(EXIT_LOAD_FAILED) from None
        ready = wire.envelope(wire.READY, b"", self.stage.encode())
        await self.sock.send_multipart([b"", ready, str(os.getpid()).encode()])
        self._pulse = self.loop.create_task(self.pulse())
        while True:
            frames = await self.sock.recv_multipart()
            try:
                self.on_message(frames)
            except Exception:  # only the router talks to us, but a bug must not end us
                self.dropped += 1
                logger.exception("alto: stage instance %s dropped a message", self.identity)

    def on_message(self, frames: list[Any]) -> None:
        if len(frames) != 3:
            self.dropped += 1
            return
        client, env, payload = frames
        kind, call_id, _stage, sub = env.split(wire.SEP, 3)
        if kind == wire.TASK:
            # now, not in run(): the call's FEEDs may come before run() starts
            self.inputs[(client, call_id)] = {}
            task = self.loop.create_task(self.run(client, call_id, payload))
            self.running[(client, call_id)] = task
            task.add_done_callback(lambda _, k=(client, call_id): self._task_done(k))
            self.calls += 1
            if self.calls == self.max_calls:  # no more calls for us: say so now
                self.send_pulse()
        elif kind == wire.FEED:
            self._arrived((client, call_id), sub, payload)
        elif kind == wire.CREDIT:  # a consumer of a stream this call makes got its chunks
            link = self.links.get((client, call_id))
            where = wire.parse_stream_key(sub)
            if link is not None and where is not None:
                link.acknowledged(*where)
        elif kind == wire.CANCEL:
            task = self.running.get((client, call_id))
            if task is not None:
                task.cancel()
        elif kind == wire.CALL_RESULT:
            fut = self.waiting.pop((client, call_id, sub), None)
            if fut is not None:
                try:
                    ok, value = shipping.loads(payload)
                except Exception as exc:  # fails that @task call, not the instance
                    ok, value = False, exc
                relay.settle(fut, ok, value)

    # -- health -------------------------------------------------------------------------
    async def pulse(self) -> None:
        """Tell the router this event loop is alive, and how the instance is."""
        while True:
            self.send_pulse()
            await asyncio.sleep(wire.PULSE_EVERY)

    def send_pulse(self) -> None:
        self.send([b"", wire.envelope(wire.PULSE), json.dumps(self.health()).encode()])

    def health(self) -> dict[str, Any]:
        """How the instance is (``stats()["instances"]``), and its verdict: "" (well),
        "stuck" (replace me) or "recycle" (once my calls have finished), and why."""
        with self._threads_lock:
            busy = sum(self.busy.values())
            abandoned = sum(self.busy[call] for call in self.abandoned)
        rss = resident_mb()
        verdict, why = self._verdict(abandoned, rss)
        return {
            "verdict": verdict,
            "why": why,
            "calls": self.calls,
            "running": len(self.running),
            "threads": self.threads,
            "busy_threads": busy,
            "abandoned_threads": abandoned,
            "rss_mb": round(rss, 1),
            "dropped": self.dropped,
        }

    def _verdict(self, abandoned: int, rss: float) -> tuple[str, str]:
        if abandoned >= self.threads:
            return "stuck", (
                f"all {self.threads} of its threads are held by calls their callers gave up "
                "on, which still run"
            )
        if self.max_calls is not None and self.calls >= self.max_calls:
            return "recycle", (
                f"it has run {self.calls} calls (max_calls_per_instance={self.max_calls})"
            )
        if self.max_memory_mb is not None and rss > self.max_memory_mb:
            return "recycle", (
                f"its memory ({rss:.0f} MiB) passed max_memory_mb={self.max_memory_mb}"
            )
        return "", ""

    def thread_started(self, call: tuple[bytes, bytes] | None) -> None:
        if call is not None:
            with self._threads_lock:
                self.busy[call] += 1

    def thread_ended(self, call: tuple[bytes, bytes] | None) -> None:
        if call is not None:
            with self._threads_lock:
                self.busy[call] -= 1
                if self.busy[call] <= 0:
                    del self.busy[call]
                    self.abandoned.discard(call)

    def _task_done(self, call: tuple[bytes, bytes]) -> None:
        """A call's task is over. One cancelled before ``run`` began never replied: the
        router still counts the call as this instance's until a reply comes."""
        if call not in self.started:
            client, call_id = call
            error = shipping.dumps_error(asyncio.CancelledError())
            self.send([client, wire.envelope(wire.ERROR, call_id), error])
        self.started.discard(call)
        self._ended(call)

    def _ended(self, call: tuple[bytes, bytes]) -> None:
        """A call is over (or was cancelled before it began): a fold still reading its
        input (a sync one, on its thread) must not wait for it forever, nor a @task
        call it made for an answer that will not come."""
        self.running.pop(call, None)
        self.controls.pop(call, None)
        ended = RuntimeError("alto: the call ended")
        for ref in self.inputs.pop(call, {}).values():
            ref.event(streams.FAIL, ended)
        self.orders.pop(call, None)
        link = self.links.pop(call, None)
        if link is not None:  # its node, if it still runs, waits for room no more
            link.close(ended)
        for key in [k for k in self.waiting if k[:2] == call]:
            self.waiting.pop(key).cancel()

    def _arrived(self, call: tuple[bytes, bytes], key: bytes, payload: Any) -> None:
        """A FEED: an event of a stream in a call's input (in sequence, by ``key``), or
        a drain of its run. Chunks are acknowledged as they are put in order."""
        table = self.inputs.get(call)
        if table is None:
            return
        try:
            sid, event, value = shipping.loads_stream_event(payload)
        except Exception as exc:  # fails that call's streams, not the instance
            for ref in table.values():
                ref.event(streams.FAIL, exc)
            return
        if sid == wire.DRAIN_SID:  # before run() opened the call: it applies it then
            control = self.controls.get(call)
            if control is not None:
                control.request_drain(value)
            else:
                self.controls[call] = value
            return
        where = wire.parse_stream_key(key)
        if where is None or where[0] != sid:  # only the router talks to us: a bug
            self.dropped += 1
            return
        ref = table.get(sid) or table.setdefault(sid, streams.StreamRef(sid))
        streams_of = self.orders.setdefault(call, {})
        order, acks = streams_of.get(sid) or streams_of.setdefault(
            sid, (flow.InOrder(), flow.Acks())
        )
        ready = order.arrive(where[1], (event, value, len(payload)), end=event != streams.CHUNK)
        for kind, what, size in ready:
            ref.event(kind, what)
            if kind == streams.CHUNK and acks.due(size):
                credit = wire.envelope(wire.CREDIT, call[1], b"", wire.stream_key(sid, acks.count))
                self.send([call[0], credit, b""])

    def _bind_control(self, call: tuple[bytes, bytes], config: dict[str, Any]) -> None:
        """Where a drain of the call's run goes; one that came first is applied now."""
        runtime = config["configurable"].get(CONFIG_KEY_RUNTIME)
        control = getattr(runtime, "control", None)
        if control is None:
            return
        early = self.controls.get(call)
        if isinstance(early, str):
            control.request_drain(early)
        self.controls[call] = control

    def _run_sync(
        self, value: Any, config: dict[str, Any], chunk_out: Callable[[Any], None] | None
    ) -> Any:
        """``invoke`` (or, with ``chunk_out``, ``stream``) the node on a thread of the
        loop's pool, in a copy of this context: a node with a sync and an async
        implementation runs the one the caller asked for, as on stock LangGraph."""

        def call() -> Any:
            if chunk_out is None:
                return self.node.invoke(value, config)
            for chunk in self.node.stream(value, config):
                chunk_out(chunk)
            return None

        return self.loop.run_in_executor(None, contextvars.copy_context().run, call)

    async def run(self, client: bytes, call_id: bytes, payload: Any) -> None:
        self.started.add((client, call_id))
        CURRENT_CALL.set((client, call_id))  # for the threads its sync code takes
        send = self.send
        link = self.links[(client, call_id)] = _Link(self, client, call_id)
        inputs = self.inputs.get((client, call_id), {})
        value = None
        try:
            with streams.receiving(inputs):
                value, config, streamed, sync = shipping.open_call(bytes(payload), link)
            self._bind_control((client, call_id), config)
            var_child_runnable_config.set(config)  # get_config() in node code

            def chunk_out(chunk: Any) -> None:
                what = f"an output chunk of node {self.stage!r}"
                envelope = wire.envelope(wire.CHUNK, call_id)
                send([client, envelope, shipping.dumps_value(chunk, what)])

            output = None
            if sync:  # the caller ran the node synchronously: its sync code runs, on a thread
                output = await self._run_sync(value, config, chunk_out if streamed else None)
            elif streamed:  # the caller streams the node's output: chunk by chunk
                async for chunk in self.node.astream(value, config):
                    chunk_out(chunk)
            else:
                output = await self.node.ainvoke(value, config)
            what = f"the output of node {self.stage!r}"
            reply = [
                client,
                wire.envelope(wire.RESULT, call_id),
                shipping.dumps_value(output, what),
            ]
        except BaseException as exc:  # the caller re-raises it; this instance goes on
            # (node code's SystemExit or KeyboardInterrupt too: they end its call, not us)
            reply = [client, wire.envelope(wire.ERROR, call_id), shipping.dumps_error(exc)]
            if isinstance(exc, asyncio.CancelledError):  # the caller gave up
                with self._threads_lock:  # code still running on threads runs on
                    if self.busy.get((client, call_id)):
                        self.abandoned.add((client, call_id))
                send(reply)
                raise
        finally:
            self._ended((client, call_id))
        if isinstance(value, StateView):  # what the node read, ahead of its result
            reads = shipping.dumps_value(value._log.state(), "reads")
            send([client, wire.envelope(wire.READS, call_id), reads])
        send(reply)


#: the call (client, call id) whose task is running, in its context
CURRENT_CALL: contextvars.ContextVar[tuple[bytes, bytes] | None] = contextvars.ContextVar(
    "alto_call", default=None
)


class _CallThreads(concurrent.futures.ThreadPoolExecutor):
    """The instance's pool for sync code (ours, and LangChain's ``run_in_executor``):
    it counts the threads each call holds, so that an instance whose threads are all
    held by calls their callers gave up on can be told apart from a busy one."""

    def __init__(self, instance: StageInstance) -> None:
        super().__init__(max_workers=instance.threads, thread_name_prefix="alto-node")
        self.instance = instance

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        call, instance = CURRENT_CALL.get(), self.instance

        def tracked() -> Any:
            instance.thread_started(call)
            try:
                return fn(*args, **kwargs)
            finally:
                instance.thread_ended(call)

        return super().submit(tracked)


def resident_mb(pid: int | str = "self") -> float:
    """A process's resident memory (this one's by default), in MiB (Linux)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


class _Link:
    """One call's way back to its caller (any thread of the instance may use it)."""

    def __init__(self, instance: StageInstance, client: bytes, call_id: bytes) -> None:
        self.instance = instance
        self.client = client
        self.call_id = call_id
        self.send = instance.send
        self.loop = instance.loop
        self.calls = itertools.count()
        self._last_beat = -HEARTBEAT_EVERY
        #: the streams the call's node makes: how far each may run ahead of its consumer
        self.windows: dict[str, flow.Window] = {}
        self.closed: BaseException | None = None

    def window(self, sid: str) -> flow.Window:
        window = self.windows.get(sid)
        if window is None:
            window = self.windows[sid] = flow.Window(self.loop)
            if self.closed is not None:
                window.close(self.closed)
        return window

    def acknowledged(self, sid: str, count: int) -> None:
        window = self.windows.get(sid)
        if window is not None:
            window.ack(count)

    def close(self, why: BaseException) -> None:
        """The call is over: its node (if it runs on, on a thread) waits for room no
        more."""
        self.closed = why
        for window in list(self.windows.values()):
            window.close(why)

    def emit(self, chunk: Any) -> None:
        payload = shipping.dumps_value(chunk, "a stream-writer chunk")
        self.send([self.client, wire.envelope(wire.EMIT, self.call_id), payload])

    def callback(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            payload = shipping.dumps_value((name, args, kwargs), f"callback {name}", quiet=True)
        except shipping.ShippingError:  # an event a handler cannot get: not the node's fault
            return
        self.send([self.client, wire.envelope(wire.CALLBACK, self.call_id), payload])

    def task_writes(self, writes: Any) -> None:
        """``CONFIG_KEY_SEND``: writes to the caller's task (``push_message`` makes one)."""
        payload = shipping.dumps_value(writes, "task writes")
        self.send([self.client, wire.envelope(wire.WRITES, self.call_id), payload])

    def heartbeat(self) -> None:
        """``runtime.heartbeat()``: the caller's idle timeout is refreshed (at most one
        message per ``HEARTBEAT_EVERY`` seconds)."""
        now = time.monotonic()
        if now - self._last_beat >= HEARTBEAT_EVERY:
            self._last_beat = now
            self.send([self.client, wire.envelope(wire.HEARTBEAT, self.call_id), b""])

    def yields(self, folds: dict[str, str], task_id: str) -> _RelayedYields:
        """``CONFIG_KEY_YIELD``: a streaming node's items and streams go to the caller."""
        return _RelayedYields(self, folds, task_id)

    def call(self, func: Any, input: Any, **kwargs: Any) -> Any:
        """``CONFIG_KEY_CALL``: a @task call, made by the caller's loop."""
        kwargs.pop("callbacks", None)  # the caller's task has its own
        return self._ask(wire.CALL, (func, input, kwargs), "a @task call")

    def store(self, ops: list[Any]) -> Any:
        """``runtime.store``'s operations, made by the caller's store."""
        return self._ask(wire.STORE, ops, "an operation on runtime.store")

    def _ask(self, kind: bytes, request: Any, what: str) -> Any:
        """Send the caller a request; its outcome (a CALL_RESULT) settles the future."""
        sub = str(next(self.calls)).encode()
        fut = relay.new_future(self.instance.loop)
        self.instance.waiting[(self.client, self.call_id, sub)] = fut
        payload = shipping.dumps_value(request, what)
        env = wire.envelope(kind, self.call_id, self.instance.identity, sub)
        self.send([self.client, env, payload])
        return fut


class _RelayedYields:
    """A streaming node's sink in a stage instance (``streams.Sink``): every item and
    every stream event is a message to the caller, whose task applies it."""

    def __init__(self, link: _Link, folds: dict[str, str], task_id: str) -> None:
        self.link = link
        self.folds = folds
        self.task_id = task_id

    def apply(self, item: Any) -> None:
        link = self.link
        payload = shipping.dumps_value(item, "an item a @streaming node yielded")
        link.send([link.client, wire.envelope(wire.YIELD, link.call_id), payload])

    def open_stream(self) -> streams.StreamRef:
        return streams.StreamRef(readable=False)

    def _send(self, ref: streams.StreamRef, seq: int, payload: bytes) -> None:
        link = self.link
        env = wire.envelope(wire.STREAM, link.call_id, b"", wire.stream_key(ref.sid, seq))
        link.send([link.client, env, payload])

    def stream_event(self, ref: streams.StreamRef, event: str, value: Any) -> None:
        """From the node's thread: a chunk waits for room in the stream's window."""
        payload = shipping.dumps_stream_event(ref.sid, event, value, "a chunk of a stream")
        window = self.link.window(ref.sid)
        self._send(
            ref, window.take(len(payload)) if event == streams.CHUNK else window.end(), payload
        )

    async def astream_event(self, ref: streams.StreamRef, event: str, value: Any) -> None:
        """From the node's event loop (this process's)."""
        payload = shipping.dumps_stream_event(ref.sid, event, value, "a chunk of a stream")
        window = self.link.window(ref.sid)
        seq = await window.atake(len(payload)) if event == streams.CHUNK else window.end()
        self._send(ref, seq, payload)
