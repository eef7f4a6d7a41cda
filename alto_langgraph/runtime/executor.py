"""Executors start stage instances and carry messages to them; they never change semantics.

``InlineExecutor`` runs every stage instance in the calling process and event loop
(async nodes on the loop, sync nodes on its worker threads): fast tests, debugging,
and the default until the multi-process executor lands.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from .messages import Message

#: What a task payload carries to a stage instance: the function that runs a task
#: (LangGraph's ``arun_with_retry``/``run_with_retry``, which apply the node's
#: RetryPolicy) and its arguments.
TaskPayload = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class Executor(Protocol):
    name: str

    async def run(self, message: Message) -> Any:
        """Run one task message to completion and return what the task function returned;
        raise the node's exception if it fails."""

    def run_sync(self, message: Message) -> Any:
        """The same, from a worker thread of a synchronous run."""


class InlineExecutor:
    """Stage instances in this process: a task message is executed where it is received."""

    name = "inline"

    def __init__(self) -> None:
        self.messages_run = 0

    async def run(self, message: Message) -> Any:
        fn, args, kwargs = message.payload
        self.messages_run += 1
        return await fn(*args, **kwargs)

    def run_sync(self, message: Message) -> Any:
        fn, args, kwargs = message.payload
        self.messages_run += 1
        return fn(*args, **kwargs)


def make_executor(name: str) -> Executor:
    if name == "inline":
        return InlineExecutor()
    raise ValueError(
        f"unknown alto executor {name!r}: this version supports 'inline' "
        "(the multi-process executor is not built yet)"
    )


async def gather_cancelled(tasks: set[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until each has finished (no fire-and-forget)."""
    for t in tasks:
        t.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
