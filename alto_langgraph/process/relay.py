"""Relaying what node code does in a stage instance back to the task that called it.

Three things a node may do reach beyond its own process; each travels back to the
calling task (in the app process) as a message of its call, ahead of the result:

* stream-writer chunks (``stream_mode="custom"``): ``EMIT``;
* LangChain callback events of runs inside the node (a chat model, a graph invoked in
  the node): ``CALLBACK``, replayed to the task's callback handlers, so
  ``stream_mode="messages"`` and ``astream_events`` see them as on stock LangGraph;
* functional-API ``@task`` calls: ``CALL``, made through the calling task's own call
  machinery (they are tasks of the request's loop), whose outcome goes back to the
  waiting instance;
* operations on ``runtime.store``: ``STORE``, run by the app's store (the one the
  request uses), whose outcome goes back the same way.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler, CallbackManager
from langchain_core.callbacks.manager import ahandle_event, handle_event
from langgraph.store.base import BaseStore

# LangChain's marker for handlers that want runs to stream (a chat model inside the
# node streams tokens only if one listens) and that tap streamed outputs
from .._langgraph import StreamingCallbackHandler, StreamMessagesHandler, StreamToolCallHandler

#: callback event -> the handler attribute that opts out of it (as LangChain's managers)
EVENTS: dict[str, str | None] = {
    "on_llm_start": "ignore_llm",
    "on_chat_model_start": "ignore_chat_model",
    "on_llm_new_token": "ignore_llm",
    "on_llm_end": "ignore_llm",
    "on_llm_error": "ignore_llm",
    "on_stream_event": "ignore_llm",
    "on_chain_start": "ignore_chain",
    "on_chain_end": "ignore_chain",
    "on_chain_error": "ignore_chain",
    "on_tool_start": "ignore_agent",
    "on_tool_end": "ignore_agent",
    "on_tool_error": "ignore_agent",
    "on_agent_action": "ignore_agent",
    "on_agent_finish": "ignore_agent",
    "on_retriever_start": "ignore_retriever",
    "on_retriever_end": "ignore_retriever",
    "on_retriever_error": "ignore_retriever",
    "on_retry": "ignore_retry",
    "on_text": None,
    "on_custom_event": "ignore_custom_event",
}


# -- the caller's side ------------------------------------------------------------------


def _handlers(callbacks: Any) -> list[BaseCallbackHandler]:
    if not callbacks:
        return []
    return callbacks if isinstance(callbacks, list) else callbacks.handlers


def callbacks_to_ship(callbacks: Any) -> dict[str, Any] | None:
    """What a stage instance needs to build an equivalent callback manager (its runs'
    tags and metadata, whether a handler wants streaming), or None when none listens."""
    handlers = _handlers(callbacks)
    if not handlers:
        return None
    manager = callbacks if not isinstance(callbacks, list) else None
    # tags/metadata apply to the runs the node starts; the inheritable ones to all below
    return {
        "tags": list(manager.tags) if manager else [],
        "inheritable_tags": list(manager.inheritable_tags) if manager else [],
        "metadata": dict(manager.metadata) if manager else {},
        "inheritable_metadata": dict(manager.inheritable_metadata) if manager else {},
        "streaming": any(isinstance(h, StreamingCallbackHandler) for h in handlers),
        # push_message() inside the node emits through these directly
        "messages": [
            (h.subgraphs, h.parent_ns) for h in handlers if isinstance(h, StreamMessagesHandler)
        ],
        # stream_mode="tools": ToolRuntime.emit_output_delta writes through these
        "tools": [
            (h.subgraphs, h.parent_ns) for h in handlers if isinstance(h, StreamToolCallHandler)
        ],
    }


class _Feed:
    """An iterator fed one item at a time: a streamed output of the instance, as the
    caller's tapping handlers read it."""

    _END = object()

    def __init__(self) -> None:
        self.item: Any = self._END

    def push(self, item: Any) -> None:
        self.item = item

    def _take(self) -> Any:
        item, self.item = self.item, self._END
        return item

    def __iter__(self) -> _Feed:
        return self

    def __next__(self) -> Any:
        if (item := self._take()) is self._END:
            raise StopIteration
        return item

    def __aiter__(self) -> _Feed:
        return self

    async def __anext__(self) -> Any:
        if (item := self._take()) is self._END:
            raise StopAsyncIteration
        return item


Event = tuple[str, tuple[Any, ...], dict[str, Any]]


class Replayer:
    """Replays one call's callback events to the caller's handlers, in order.

    Top-level runs of the instance become children of the caller's run. A streamed
    run's output is tapped by the caller's streaming handlers (``astream_events``
    emits ``on_*_stream`` from the tap): each gets one tapped iterator per run, which
    is advanced one chunk per relayed chunk.
    """

    def __init__(self, callbacks: Any) -> None:
        self.handlers = _handlers(callbacks)
        self.parent_run_id = getattr(callbacks, "parent_run_id", None)
        self._taps: dict[Any, tuple[_Feed, list[Any]]] = {}

    def _adopt(self, event: Event) -> Event:
        name, args, kwargs = event
        if "run_id" in kwargs and kwargs.get("parent_run_id") is None:
            kwargs["parent_run_id"] = self.parent_run_id
        return name, args, kwargs

    def _emit_message(self, index: int, meta: Any, message: Any) -> None:
        """push_message() in the node: emitted by the caller's ``index``-th messages
        handler, which also remembers the message (no duplicate from the node output)."""
        mine = [h for h in self.handlers if isinstance(h, StreamMessagesHandler)]
        mine[index]._emit(meta, message, dedupe=False)

    def _tool_delta(self, index: int, chunk: Any) -> None:
        """A tool's output delta (``stream_mode="tools"``), for the caller's ``index``-th
        tools handler, between the tool's relayed start and end events."""
        mine = [h for h in self.handlers if isinstance(h, StreamToolCallHandler)]
        mine[index].stream(chunk)

    def _emitted(self, name: str, args: tuple[Any, ...]) -> bool:
        """Emit an event that goes to a handler's stream directly (not a callback)."""
        if name == "emit_message":
            self._emit_message(*args)
        elif name == "tool_delta":
            self._tool_delta(*args)
        else:
            return False
        return True

    def replay(self, event: Event) -> None:
        name, args, kwargs = self._adopt(event)
        if self._emitted(name, args):
            return
        if name == "tap":
            run_id, chunk, end = args
            feed, taps = self._tapped(run_id, asynchronous=False)
            for tap in taps:
                if not end:
                    feed.push(chunk)
                next(tap, None)
            if end:
                del self._taps[run_id]
            return
        handle_event(self.handlers, name, EVENTS[name], *args, **kwargs)

    async def areplay(self, event: Event) -> None:
        name, args, kwargs = self._adopt(event)
        if self._emitted(name, args):
            return
        if name == "tap":
            run_id, chunk, end = args
            feed, taps = self._tapped(run_id, asynchronous=True)
            for tap in taps:
                if not end:
                    feed.push(chunk)
                await anext(tap, None)
            if end:
                del self._taps[run_id]
            return
        await ahandle_event(self.handlers, name, EVENTS[name], *args, **kwargs)

    def _tapped(self, run_id: Any, asynchronous: bool) -> tuple[_Feed, list[Any]]:
        if run_id in self._taps:
            return self._taps[run_id]
        feed = _Feed()
        streaming = [h for h in self.handlers if isinstance(h, StreamingCallbackHandler)]
        taps = [
            h.tap_output_aiter(run_id, feed) if asynchronous else h.tap_output_iter(run_id, feed)
            for h in streaming
        ]
        return self._taps.setdefault(run_id, (feed, taps))


# -- the stage instance's side ----------------------------------------------------------


class ForwardingHandler(BaseCallbackHandler):
    """Sends every callback event to the calling task, in order (``run_inline``)."""

    run_inline = True

    def __init__(self, send: Callable[[str, tuple[Any, ...], dict[str, Any]], None]) -> None:
        self._send = send


class StreamingForwardingHandler(ForwardingHandler, StreamingCallbackHandler):
    """The same, when a handler of the caller wants streaming: runs inside the node
    stream (a chat model yields tokens) and their output chunks are relayed as taps."""

    def tap_output_iter(self, run_id: Any, output: Any) -> Any:
        try:
            for chunk in output:
                self._send("tap", (run_id, chunk, False), {})
                yield chunk
        finally:
            self._send("tap", (run_id, None, True), {})

    async def tap_output_aiter(self, run_id: Any, output: Any) -> Any:
        try:
            async for chunk in output:
                self._send("tap", (run_id, chunk, False), {})
                yield chunk
        finally:
            self._send("tap", (run_id, None, True), {})


def _forwarder(name: str) -> Callable[..., None]:
    def forward(self: ForwardingHandler, *args: Any, **kwargs: Any) -> None:
        self._send(name, args, kwargs)

    forward.__name__ = name
    return forward


for _name in EVENTS:
    setattr(ForwardingHandler, _name, _forwarder(_name))


class RelayedMessagesHandler(StreamMessagesHandler):
    """Stands in for one of the caller's ``stream_mode="messages"`` handlers, for
    ``push_message()``, which emits through the handler itself; every other event
    reaches the caller's handler through the ``ForwardingHandler``."""

    def __init__(self, index: int, subgraphs: bool, parent_ns: Any, send: Callable[..., None]):
        super().__init__(lambda chunk: None, subgraphs, parent_ns=parent_ns)
        self._index = index
        self._send = send

    def _emit(self, meta: Any, message: Any, *, dedupe: bool = False) -> None:
        self._send("emit_message", (self._index, meta, message), {})

    ignore_llm = ignore_chat_model = ignore_chain = ignore_agent = True  # type: ignore[assignment]
    ignore_retriever = ignore_retry = ignore_custom_event = True  # type: ignore[assignment]


class RelayedToolCallHandler(StreamToolCallHandler):
    """Stands in for one of the caller's ``stream_mode="tools"`` handlers: it sets the
    tool-call writer ``ToolRuntime.emit_output_delta`` writes to while a tool runs here,
    and relays those deltas; the tool's start and end events reach the caller's
    handler through the ``ForwardingHandler``, which emits them there."""

    def __init__(self, index: int, subgraphs: bool, parent_ns: Any, send: Callable[..., None]):
        super().__init__(self._relay, subgraphs, parent_ns=parent_ns)
        self._index = index
        self._send = send

    def _relay(self, chunk: Any) -> None:
        if chunk[2].get("event") == "tool-output-delta":
            self._send("tool_delta", (self._index, chunk), {})


def instance_callbacks(shipped: dict[str, Any], send: Callable[..., None]) -> CallbackManager:
    shipped = dict(shipped)
    cls = StreamingForwardingHandler if shipped.pop("streaming") else ForwardingHandler
    handlers: list[BaseCallbackHandler] = [cls(send)]
    handlers += [
        RelayedMessagesHandler(i, subgraphs, parent_ns, send)
        for i, (subgraphs, parent_ns) in enumerate(shipped.pop("messages"))
    ]
    handlers += [
        RelayedToolCallHandler(i, subgraphs, parent_ns, send)
        for i, (subgraphs, parent_ns) in enumerate(shipped.pop("tools"))
    ]
    return CallbackManager(
        handlers=handlers, inheritable_handlers=handlers, parent_run_id=None, **shipped
    )


class RelayedStore(BaseStore):
    """``runtime.store`` in a stage instance: every batch of operations is run by the
    app's store, through the call's caller (``ask``: the call's ``Link.store``)."""

    def __init__(self, ask: Callable[[list[Any]], Any], loop: asyncio.AbstractEventLoop) -> None:
        self._ask = ask
        self._loop = loop

    def batch(self, ops: Any) -> list[Any]:
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:  # blocking here would block the loop that takes the reply
            raise RuntimeError(
                "alto: an async node on a process stage uses runtime.store's async "
                "methods (aget, aput, asearch, ...), not its sync ones"
            )
        return self._ask(list(ops)).result()

    async def abatch(self, ops: Any) -> list[Any]:
        fut = self._ask(list(ops))
        if isinstance(fut, concurrent.futures.Future):  # asked from another thread
            return await asyncio.wrap_future(fut)
        return await fut


def new_future(loop: asyncio.AbstractEventLoop) -> Any:
    """A future of the kind the caller of a ``@task`` awaits: an asyncio one on the
    instance's event loop (an async node), a concurrent one on a thread (a sync node)."""
    try:
        if asyncio.get_running_loop() is loop:
            return loop.create_future()
    except RuntimeError:
        pass
    return concurrent.futures.Future()


def settle(fut: Any, ok: bool, value: Any) -> None:
    """Resolve a future made by ``new_future`` (called on the instance's loop thread)."""
    if fut.done():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)
