"""``Endpoint``: one zmq socket, owned by one I/O thread, that any thread may send on.

zmq sockets are not thread-safe, and alto's callers are event loops, pool threads and
the supervisor. So an endpoint's socket lives on its own thread: senders append frames
to a queue and wake the thread through a pipe; received messages are handed to a
callback on that thread (which must not block: it resolves futures or schedules work).
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

import zmq

from .security import PeerCredentials

logger = logging.getLogger("alto_langgraph")


class Endpoint:
    def __init__(
        self,
        socket_type: int,
        address: str,
        on_message: Callable[[list[bytes]], None],
        *,
        credentials: PeerCredentials,
        name: str = "alto-io",
        context: zmq.Context | None = None,
    ) -> None:
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(socket_type)
        self._sock.setsockopt(zmq.LINGER, 0)
        credentials.apply(self._sock)  # the router admits no one else (security.py)
        self._sock.connect(address)
        self._on_message = on_message
        self._out: collections.deque[list[bytes]] = collections.deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._closing = False
        self._fd_lock = threading.Lock()  # no write to a pipe fd after it was closed
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def send(self, frames: list[bytes]) -> None:
        """Queue ``frames`` as one multipart message (thread-safe, never blocks)."""
        self._out.append(frames)
        self._wake()

    def _wake(self) -> None:
        with self._fd_lock:
            if self._wake_w < 0:  # closed: the endpoint has shut down
                return
            try:
                os.write(self._wake_w, b"\0")
            except BlockingIOError:  # the pipe is full: the thread is awake anyway
                pass

    def close(self) -> None:
        """Send what is queued, then stop the thread and close the socket."""
        if self._closing:
            return
        self._closing = True
        self._wake()
        if threading.current_thread() is not self._thread:
            self._thread.join(5)

    def _run(self) -> None:
        sock, out, wake_r = self._sock, self._out, self._wake_r
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(wake_r, zmq.POLLIN)
        try:
            while True:
                events = dict(poller.poll())
                if wake_r in events:
                    try:
                        os.read(wake_r, 65536)
                    except BlockingIOError:
                        pass
                while out:
                    sock.send_multipart(out.popleft(), copy=False)
                if self._closing:
                    return
                if sock in events:
                    self._drain(sock)
        finally:
            sock.close(linger=200)  # let the last sends (results, cancels) go out
            with self._fd_lock:
                os.close(wake_r)
                os.close(self._wake_w)
                self._wake_w = -1

    def _drain(self, sock: Any) -> None:
        # several messages per wake-up: fewer poll calls under load
        for _ in range(256):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                self._on_message(frames)
            except Exception:  # one bad message must not end the endpoint
                logger.exception("alto: dropped a message that could not be handled")


def free_ports(host: str, n: int) -> list[int]:
    """``n`` tcp ports free on ``host`` now (for sockets that bind them next)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            try:
                s.bind((host, 0))
            except OSError as exc:
                msg = f"alto option transport='tcp': cannot bind host={host!r}: {exc}"
                raise ValueError(msg) from exc
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
