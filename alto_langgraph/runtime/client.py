"""``RouterClient``: calls to stages from a process that does not own the deployment.

A node in a stage instance that calls a language model (``ChatAlto``) sends the call
to the LM stage through the router's front end, as the app's coordinator sends node
calls: one DEALER socket per process and router (``Endpoint``), every message of a call
handed to that call's ``deliver`` on the socket's I/O thread.
"""

from __future__ import annotations

import atexit
import itertools
import os
import threading
from typing import Any

import zmq

from . import wire
from .transport import Endpoint

#: the messages that end a call
TERMINAL = frozenset((wire.RESULT, wire.ERROR, wire.LOST))


class RouterClient:
    def __init__(self, address: str) -> None:
        self._calls: dict[bytes, Any] = {}
        self._ids = itertools.count()
        self._endpoint = Endpoint(
            zmq.DEALER,
            address,
            self._on_message,
            identity=b"c" + os.urandom(6).hex().encode(),
            name="alto-lm-client",
        )

    def call(self, stage: str, header: bytes, payload: bytes, key: bytes, deliver: Any) -> bytes:
        call_id = str(next(self._ids)).encode()
        self._calls[call_id] = deliver
        self._endpoint.send(
            [wire.envelope(wire.TASK, call_id, stage.encode(), key), header, payload]
        )
        return call_id

    def cancel(self, call_id: bytes) -> None:
        if self._calls.pop(call_id, None) is not None:
            self._endpoint.send([wire.envelope(wire.CANCEL, call_id), b"", b""])

    def _on_message(self, frames: list[Any]) -> None:
        env, payload = frames[0], frames[1]
        kind, call_id = env[:1], env.split(wire.SEP, 2)[1]
        deliver = (self._calls.pop if kind in TERMINAL else self._calls.get)(call_id, None)
        if deliver is not None:
            deliver(kind, env, payload)

    def close(self) -> None:
        self._endpoint.close()


_clients: dict[str, RouterClient] = {}
_lock = threading.Lock()


def client_for(address: str) -> RouterClient:
    """This process's client of the router at ``address`` (made on first use)."""
    with _lock:
        client = _clients.get(address)
        if client is None:
            client = _clients[address] = RouterClient(address)
        return client


@atexit.register
def _close_all() -> None:
    with _lock:
        for client in _clients.values():
            client.close()
        _clients.clear()
