"""Credit-based flow control for streams between processes (``wire.py``'s STREAM,
FEED and CREDIT messages).

A producer may have at most a window of chunks (and of bytes) in flight that its
consumers have not acknowledged: the caller, which keeps the stream, and the fold's
process, if the stream goes there straight. They acknowledge chunks as they *receive*
them (a cumulative count, in batches), not as a node consumes them: a fold keeps every
chunk anyway (its ``finish`` gets the whole list), and an acknowledgement that waited
for a node could wait on a thread that the producer itself holds. What the window
bounds is everything in between: the router's and the sockets' queues, the caller's
inbox, and how far a fast producer runs ahead of a consumer process that is busy.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from typing import Any

#: the most chunks, and bytes, of one stream in flight and not acknowledged (a chunk
#: larger than the byte window still goes, alone)
WINDOW_CHUNKS = 1024
WINDOW_BYTES = 4 << 20
#: a consumer acknowledges once this much has arrived since it last did
ACK_CHUNKS = WINDOW_CHUNKS // 4
ACK_BYTES = WINDOW_BYTES // 4


class StreamClosed(Exception):
    """The producer's call ended (cancelled, failed) while it waited for room."""


class Window:
    """The producer's side of one stream: sequence numbers, and waiting for room.

    ``take`` may be called from any thread, ``ack`` and ``close`` on ``loop``'s."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.sent = 0  # chunks sent (the next chunk's sequence number)
        self.acked = 0
        self._sizes: collections.deque[int] = collections.deque()  # of those not acked
        self._bytes = 0
        self._cond = threading.Condition()
        self._waiters: list[asyncio.Future[None]] = []
        self._closed: BaseException | None = None

    def _full(self) -> bool:
        unacked = self.sent - self.acked
        return unacked >= WINDOW_CHUNKS or (unacked > 0 and self._bytes >= WINDOW_BYTES)

    def _take(self, size: int) -> int:
        if self._closed is not None:
            raise StreamClosed(str(self._closed)) from self._closed
        seq = self.sent
        self.sent += 1
        self._sizes.append(size)
        self._bytes += size
        return seq

    def take(self, size: int) -> int:
        """The sequence number of a chunk of ``size`` bytes, once it may go (blocks)."""
        with self._cond:
            while self._full() and self._closed is None:
                self._cond.wait()
            return self._take(size)

    async def atake(self, size: int) -> int:
        """``take``, on the loop."""
        while True:
            with self._cond:
                if not self._full() or self._closed is not None:
                    return self._take(size)
                fut = self.loop.create_future()
                self._waiters.append(fut)
            await fut

    def end(self) -> int:
        """The sequence number of the stream's end (it never waits)."""
        return self.sent

    def ack(self, count: int) -> None:
        """The consumer has received ``count`` chunks (a count that goes back, or past
        what was sent, means nothing)."""
        with self._cond:
            if count <= self.acked or count > self.sent:
                return
            for _ in range(count - self.acked):
                self._bytes -= self._sizes.popleft()
            self.acked = count
            self._wake()

    def close(self, why: BaseException) -> None:
        """The call is over: a producer waiting for room stops waiting, with ``why``."""
        with self._cond:
            if self._closed is None:
                self._closed = why
            self._wake()

    def _wake(self) -> None:
        self._cond.notify_all()
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)


class Acks:
    """The consumer's side of one stream: when to acknowledge what has arrived."""

    def __init__(self) -> None:
        self.count = 0
        self._told = 0
        self._bytes = 0

    def due(self, size: int) -> bool:
        """A chunk of ``size`` bytes arrived: whether to acknowledge (all so far) now."""
        self.count += 1
        self._bytes += size
        if self.count - self._told >= ACK_CHUNKS or self._bytes >= ACK_BYTES:
            self._told, self._bytes = self.count, 0
            return True
        return False


class InOrder:
    """A stream's events as they reach its consumer by two paths (from the caller, and
    straight from the router), put back in sequence order; a repeat is dropped.

    A chunk's sequence number is its index. An end's (END or FAIL) is the number of
    chunks its sender had seen, which the other path may have passed already (a FAIL
    the caller sends when the producer's call ends, say): it comes once every chunk
    before it has, and it never waits behind one it does not need. What waits here is
    bounded by the window: the producer's later chunks wait for acknowledgements of
    the earlier ones."""

    def __init__(self) -> None:
        self.next = 0
        self.ended = False
        self._early: dict[int, Any] = {}
        self._end: tuple[int, Any] | None = None

    def arrive(self, seq: int, item: Any, end: bool = False) -> list[Any]:
        """The items that are now in order (none, or ``item`` and those it released);
        nothing once an end has been released (the stream's events are over)."""
        if self.ended:
            return []
        if end:
            self._end = self._end or (seq, item)
        elif seq >= self.next:
            self._early.setdefault(seq, item)
        out = []
        while self.next in self._early:
            out.append(self._early.pop(self.next))
            self.next += 1
        if self._end is not None and self._end[0] <= self.next:
            out.append(self._end[1])
            self.ended = True
            self._early.clear()
        return out
