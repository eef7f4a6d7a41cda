"""``RpcClient``: calls to stage instances through the router's front end.

One DEALER socket per client (``Endpoint``, with its own I/O thread). A call is a TASK
message to a stage; every message that comes back for it (chunks, callback events,
the result) is handed to that call's ``deliver`` on the I/O thread, a ``TERMINAL`` one
last. The app's deployment has one client; a stage instance whose node code calls an
LM stage has one per process (``client_for``), made on first use.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import itertools
import threading
from collections.abc import Callable, Mapping
from typing import Any

import zmq

from . import shipping, wire
from .security import PeerCredentials
from .transport import Endpoint

#: receives every message of one call: (kind, envelope, payload)
Deliver = Callable[[bytes, bytes, Any], None]

#: the messages that end a call (READY and FAILED end a control request)
TERMINAL = frozenset((wire.RESULT, wire.ERROR, wire.LOST))
_ENDS_CALL = TERMINAL | {wire.READY, wire.FAILED}


class RpcClient:
    """Calls to stages over one connection to a router. Thread-safe."""

    def __init__(
        self,
        address: str,
        credentials: PeerCredentials,
        *,
        name: str,
        on_notice: Callable[[bytes, bytes, bytes, str], None] | None = None,
    ) -> None:
        self._calls: dict[bytes, Deliver] = {}
        #: the router's notices to the app (command, instance, its pid, why), on the I/O
        #: thread
        self._on_notice = on_notice
        self._ids = itertools.count()
        self._endpoint = Endpoint(
            zmq.DEALER, address, self._on_message, credentials=credentials, name=name
        )

    def call(self, stage: str, payload: bytes, key: bytes, deliver: Deliver) -> bytes:
        """Send one task to an instance of ``stage`` (chosen by the router from ``key``);
        ``deliver(kind, envelope, payload)`` gets each message of the call. Returns the
        call id."""
        call_id = str(next(self._ids)).encode()
        self._calls[call_id] = deliver
        self._endpoint.send([wire.envelope(wire.TASK, call_id, stage.encode(), key), payload])
        return call_id

    def cancel(self, call_id: bytes) -> None:
        """The caller gave up on a call: stop it on its instance (its reply is dropped)."""
        if self._calls.pop(call_id, None) is not None:
            self._endpoint.send([wire.envelope(wire.CANCEL, call_id), b""])

    def feed(self, call_id: bytes, stage: str, payload: bytes, key: bytes = b"") -> None:
        """An event of a stream in a call's input, for the instance that has the call
        (``key``: the stream's and the event's, ``wire.stream_key``)."""
        if call_id in self._calls:
            self._endpoint.send([wire.envelope(wire.FEED, call_id, stage.encode(), key), payload])

    def subscribe(self, fold: bytes, producer: bytes, sid: str) -> None:
        """Have the router send the fold's call the further chunks of a stream that
        the producer's call makes (it sends this client a TEED copy of each)."""
        if fold in self._calls and producer in self._calls:
            self._endpoint.send([wire.envelope(wire.SUBSCRIBE, fold, b"", sid.encode()), producer])

    def credit(self, producer: bytes, sid: str, count: int) -> None:
        """Acknowledge the first ``count`` chunks of a stream the producer's call makes."""
        if producer in self._calls:
            env = wire.envelope(wire.CREDIT, producer, b"", wire.stream_key(sid, count))
            self._endpoint.send([env, b""])

    def reply_call(self, instance: bytes, call_id: bytes, sub: bytes, ok: bool, value: Any) -> None:
        """The outcome of a @task call made by a node on ``instance`` (``relay.py``)."""
        try:
            payload = shipping.dumps_value((ok, value), "the result of a @task call")
        except shipping.ShippingError as exc:
            payload = shipping.dumps_value((False, exc), "an error")
        self._endpoint.send([wire.envelope(wire.CALL_RESULT, call_id, instance, sub), payload])

    def control(self, command: bytes) -> concurrent.futures.Future[tuple[bytes, bytes]]:
        """Ask the router something (``wire.CTL_*``); the future gets (kind, payload)."""
        fut: concurrent.futures.Future[tuple[bytes, bytes]] = concurrent.futures.Future()
        call_id = b"c" + str(next(self._ids)).encode()
        self._calls[call_id] = lambda kind, env, payload: fut.set_result((kind, bytes(payload)))
        self._endpoint.send([wire.envelope(wire.CONTROL, call_id, command), b""])
        return fut

    def tell(
        self, command: bytes, instance: bytes, detail: str = "", pid: int | None = None
    ) -> None:
        """Tell the router something about an instance (dead, failed, restarted); ``pid``:
        the process it is about (the router ignores news of an earlier one)."""
        env = wire.envelope(
            wire.CONTROL, b"" if pid is None else str(pid).encode(), command, instance
        )
        self._endpoint.send([env, detail.encode()])

    def fail_all(self, reason: str) -> None:
        """End every call in flight with ``LOST`` (the deployment is gone)."""
        calls, self._calls = self._calls, {}
        for deliver in calls.values():
            _deliver(deliver, wire.LOST, b"", reason.encode())

    def close(self) -> None:
        self._endpoint.close()

    def _on_message(self, frames: list[Any]) -> None:
        if len(frames) != 2:  # the router sends none such: ignore it
            return
        env, payload = frames
        fields = env.split(wire.SEP, 3)
        if len(fields) != 4:
            return
        kind, call_id, command, instance = fields
        if kind == wire.CONTROL:  # a notice (only the app gets them); call id: the pid
            if self._on_notice is not None:
                why = bytes(payload).decode(errors="replace")
                self._on_notice(command, instance, call_id, why)
            return
        deliver = (self._calls.pop if kind in _ENDS_CALL else self._calls.get)(call_id, None)
        if deliver is not None and not _deliver(deliver, kind, env, payload):
            self.cancel(call_id)  # its caller is gone (e.g. its event loop was closed)


def _deliver(deliver: Deliver, kind: bytes, env: bytes, payload: Any) -> bool:
    """Hand a message to its caller; False if the caller cannot take it any more. Runs
    on the I/O thread, which must survive any one caller."""
    try:
        deliver(kind, env, payload)
        return True
    except Exception:
        return False


# -- the process's own client, in a stage instance ------------------------------------
_clients: dict[str, RpcClient] = {}
_lock = threading.Lock()
#: in a stage instance: the router's front end, model name -> LM stage, and the
#: instance's credentials (the router knows its connections by them)
_process_front: str = ""
_process_lm_stages: dict[str, str] = {}
_process_credentials: PeerCredentials | None = None


def client_for(address: str) -> RpcClient:
    """This process's client of its deployment's router at ``address`` (made on
    first use)."""
    with _lock:
        client = _clients.get(address)
        if client is None:
            if _process_credentials is None or address != _process_front:
                raise RuntimeError(f"alto: this process has no credentials for {address}")
            client = RpcClient(address, _process_credentials, name="alto-rpc-client")
            _clients[address] = client
        return client


def bind_process(
    front_address: str, lm_stages: Mapping[str, str], credentials: PeerCredentials
) -> None:
    """In a stage instance: where calls made by node code here go (the LM stages of
    its deployment, through the router at ``front_address``), and as whom."""
    global _process_front, _process_lm_stages, _process_credentials
    _process_front, _process_lm_stages = front_address, dict(lm_stages)
    _process_credentials = credentials


def process_lm_stages() -> tuple[str, dict[str, str]]:
    """(router front end, model -> LM stage) this process was bound to, if any."""
    return _process_front, _process_lm_stages


@atexit.register
def _close_all() -> None:
    with _lock:
        for client in _clients.values():
            client.close()
        _clients.clear()
