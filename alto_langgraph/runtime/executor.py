"""Executors start stage instances and carry messages to them; they never change semantics.

``InlineExecutor`` runs a request's tasks in the calling process and event loop (async
nodes on the loop, sync nodes on its worker threads). Tasks are always bookkept there;
under the ``process`` executor a task's node code is a ``RemoteNode`` that runs on a
stage instance in a worker process (``cluster.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .messages import Message

#: What a task payload carries to a stage instance: the function that runs a task
#: (LangGraph's ``arun_with_retry``/``run_with_retry``, which apply the node's
#: RetryPolicy) and its arguments.
TaskPayload = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class Executor(Protocol):
    name: str

    def run(self, message: Message) -> Awaitable[Any]:
        """Run one task message: the awaitable resolves to what the task function
        returned, or raises the node's exception."""

    def run_sync(self, message: Message) -> Any:
        """The same, from a worker thread of a synchronous run."""


class InlineExecutor:
    """Stage instances in this process: a task message is executed where it is received."""

    name = "inline"

    def run(self, message: Message) -> Awaitable[Any]:
        # the task function's own coroutine: no wrapper frame on the hot path
        fn, args, kwargs = message.payload
        return fn(*args, **kwargs)

    def run_sync(self, message: Message) -> Any:
        fn, args, kwargs = message.payload
        return fn(*args, **kwargs)


def make_executor(name: str) -> Executor:
    if name == "inline":
        return InlineExecutor()
    raise ValueError(f"unknown task executor {name!r}")


async def gather_cancelled(tasks: set[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until each has finished (no fire-and-forget)."""
    for t in tasks:
        t.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
