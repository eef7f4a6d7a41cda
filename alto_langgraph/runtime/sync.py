"""Drive an async generator from synchronous code.

Sync ``stream``/``invoke`` run the async path on a private event loop in a helper
thread, so that one code path serves both, and a sync call works the same whether or
not the calling thread already runs an event loop. The caller's context variables
(LangChain's current config, for graphs invoked inside nodes) travel with the call.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_ITEM, _ERROR, _DONE = "item", "error", "done"


def iterate_sync(make_agen: Callable[[], AsyncIterator[T]], *, name: str = "alto") -> Iterator[T]:
    out: queue.Queue[tuple[str, Any]] = queue.Queue()
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def pump() -> None:
        state["task"] = asyncio.current_task()
        state["loop"] = asyncio.get_running_loop()
        ready.set()
        try:
            async for item in make_agen():
                out.put((_ITEM, item))
        except BaseException as exc:  # handed to the consumer thread
            out.put((_ERROR, exc))
        else:
            out.put((_DONE, None))

    ctx = contextvars.copy_context()
    thread = threading.Thread(target=ctx.run, args=(asyncio.run, pump()), name=name, daemon=True)
    thread.start()
    ready.wait()
    finished = False
    try:
        while True:
            kind, value = out.get()
            if kind == _ITEM:
                yield value
            elif kind == _ERROR:
                finished = True
                if isinstance(value, asyncio.CancelledError):
                    raise RuntimeError("alto: the run was cancelled") from value
                raise value.with_traceback(value.__traceback__)
            else:
                finished = True
                return
    finally:
        if not finished:  # the consumer stopped early (break, close, exception)
            loop, task = state["loop"], state["task"]
            loop.call_soon_threadsafe(task.cancel)
        thread.join()
