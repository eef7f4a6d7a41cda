"""Executors start stage instances and carry messages to them; they never change semantics.

``InlineExecutor`` runs every stage instance in the calling process and event loop
(async nodes on the loop, sync nodes on its worker threads): fast tests, debugging,
and the default until the multi-process executor lands.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .messages import Message

#: What a task payload carries to a stage instance: the function that runs a task
#: (LangGraph's ``arun_with_retry``, which applies the node's RetryPolicy) and its args.
TaskPayload = tuple[Callable[..., Awaitable[Any]], tuple[Any, ...], dict[str, Any]]


class Executor(Protocol):
    name: str

    async def run(self, message: Message) -> None:
        """Run one task message to completion; raise the node's exception if it fails."""


class InlineExecutor:
    """Stage instances in this process: a task message is executed where it is received."""

    name = "inline"

    def __init__(self) -> None:
        self.messages_run = 0

    async def run(self, message: Message) -> None:
        fn, args, kwargs = message.payload
        self.messages_run += 1
        await fn(*args, **kwargs)


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
